"""Checks every command makes on the files it is about to write, before it does any work.

No command writes over one of its own inputs, replaces an existing output without ``--force``, or finds out
only at the end that the output's directory is missing or not writable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from nlmd.errors import InputError


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (links and relative paths resolved)."""
    a, b = Path(a), Path(b)
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(
    path: str | os.PathLike,
    *,
    option: str = "-o",
    inputs: Iterable[str | os.PathLike] = (),
    force: bool | None = None,
    make_parent: bool = False,
) -> Path:
    """Refuse (InputError, one sentence) to write ``path`` when it is one of ``inputs``, a directory, in a
    directory that is missing (unless ``make_parent``) or not writable, or exists and ``force`` is False
    (``force=None``: existing files may be replaced, as a LAMMPS log). Returns ``path`` as a Path."""
    path = Path(path)
    for inp in inputs:
        if same_file(path, inp) or Path(os.path.abspath(path)) == Path(os.path.abspath(inp)):
            raise InputError(f"{option} {path} is also an input of this command; nlmd never writes over its "
                             "inputs: choose another name")
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        if not make_parent:
            raise InputError(f"{option} {path}: the directory {parent} does not exist")
        existing = next((p for p in parent.parents if p.exists()), Path("."))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise InputError(f"{option} {path}: cannot create the directory {parent} ({existing} is not writable)")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: the directory {parent} is not writable")
    if force is False and path.exists():
        raise InputError(f"{path} exists; pass --force to overwrite it")
    return path


def check_lammps_word(value: str | os.PathLike, what: str) -> None:
    """Refuse a path that LAMMPS would split into several words.

    LAMMPS substitutes ``${name}`` outside quotes only, so a path with a space cannot reach a command as
    one word through a variable (``pair_coeff * * ${potential}/model.pt``, ``dump ... ${prefix}.dump``).
    """
    text = str(value)
    if any(c.isspace() for c in text):
        raise InputError(
            f"{what} '{text}' contains a space: LAMMPS splits it into several words where an input uses it "
            "through a variable; use a path without spaces (a symbolic link will do)"
        )
