"""The LAMMPS input as text: its commands, its final ``run``, the variables it names.

Plain text processing, no LAMMPS: an input is read the way LAMMPS reads a file (continuation lines,
quotes, comments) and cut around its final top-level ``run`` -- the one run ``nlmd run`` streams. What the
input *does* when executed is :mod:`nlmd.md.inspect`'s business.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nlmd.errors import InputError

__all__ = ["Command", "InputScript", "check_variables", "split_commands", "strip_comment"]

#: commands the driver cannot follow through (they would move execution around the final run)
_FLOW_COMMANDS = ("jump", "label", "next")
#: run keywords that split one run into several (nlmd run streams one run)
_SPLITTING_RUN_KEYWORDS = ("every",)


def strip_comment(text: str) -> str:
    """``text`` without its ``#`` comment; a ``#`` inside single, double or triple quotes is kept (as LAMMPS)."""
    i, n = 0, len(text)
    quote: str | None = None
    while i < n:
        if quote is None:
            if text.startswith('"""', i):
                quote, i = '"""', i + 3
                continue
            c = text[i]
            if c == "#":
                return text[:i]
            if c in "'\"":
                quote = c
        elif text.startswith(quote, i):
            i += len(quote)
            quote = None
            continue
        i += 1
    return text


@dataclass(frozen=True)
class Command:
    """One LAMMPS command of an input file: its lines (1-based, inclusive) and its text, continuations joined."""

    first_line: int
    last_line: int
    text: str

    @property
    def words(self) -> list[str]:
        return strip_comment(self.text).split()

    @property
    def name(self) -> str:
        words = self.words
        return words[0] if words else ""


def split_commands(text: str) -> list[Command]:
    """The commands of an input, read as LAMMPS reads a file.

    A line whose last printable character is ``&`` continues on the next line (the ``&`` and the line
    break are removed), and so does a line with an open triple quote. Blank and comment-only commands
    are dropped.
    """
    lines = text.splitlines()
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        first = i
        buf = lines[i]
        i += 1
        while i < len(lines):
            stripped = buf.rstrip()
            if stripped.endswith("&"):
                buf = stripped[:-1] + " " + lines[i]
            elif buf.count('"""') % 2 == 1:
                buf = buf + "\n" + lines[i]
            else:
                break
            i += 1
        cmd = Command(first + 1, i, buf)
        if cmd.name:
            commands.append(cmd)
    return commands


@dataclass(frozen=True)
class InputScript:
    """A LAMMPS input split around its final top-level ``run`` command.

    ``head`` is the text before the run (executed as it is, see :meth:`head_chunks`), ``final_run`` the
    run command, ``tail`` the text after it (executed after a run that completed).
    """

    path: Path
    text: str
    head: str
    final_run: Command
    tail: str

    @classmethod
    def read(cls, path: str | os.PathLike) -> InputScript:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise InputError(f"{path}: no such input file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read the input file ({exc})") from exc
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: str | os.PathLike = "<input>") -> InputScript:
        path = Path(path)
        commands = split_commands(text)
        flow = [c for c in commands if c.name in _FLOW_COMMANDS]
        if flow:
            c = flow[0]
            raise InputError(
                f"{path}:{c.first_line}: `{c.name}` moves execution around the input; nlmd run streams the "
                "input's final `run` and needs a straight input (write the loop as separate runs of nlmd run)"
            )
        runs = [c for c in commands if c.name == "run"]
        if not runs:
            raise InputError(
                f"{path}: has no top-level `run` command; nlmd run streams the input's final run "
                "(a run inside an `if` or an included file is not seen)"
            )
        final = runs[-1]
        words = final.words
        for key in _SPLITTING_RUN_KEYWORDS:
            if key in words[2:]:
                raise InputError(
                    f"{path}:{final.first_line}: the final run uses `{key}`, which splits it into several runs; "
                    "nlmd run streams one run (drop the keyword)"
                )
        lines = text.splitlines()
        head = "\n".join(lines[: final.first_line - 1])
        tail = "\n".join(lines[final.last_line :])
        return cls(path=path, text=text, head=head, final_run=final, tail=tail)

    def head_chunks(self) -> list[str]:
        """The head cut before each of its commands: every line once, in order, comments and blank lines
        with the command after them (LAMMPS echoes them to its log), continuation lines with theirs.

        Executing the chunks one by one is executing the head (there is no jump or label in it), with a
        chance between two commands to stop (see :meth:`nlmd.md.loop.StreamedRun.setup`).
        """
        lines = self.head.splitlines()
        chunks, start = [], 0
        for cmd in split_commands(self.head):
            chunks.append("\n".join(lines[start: cmd.last_line]))
            start = cmd.last_line
        if start < len(lines):
            chunks.append("\n".join(lines[start:]))
        return chunks

    def variable_names(self) -> set[str]:
        """Names of the variables the input defines or uses (``variable NAME``, ``${NAME}``, ``$x``, ``v_NAME``,
        ``is_defined(variable,NAME)``), in its own text and in files it includes by a literal path."""
        return _variable_names(self.text, self.path.parent, set())


_VARIABLE_PATTERNS = (
    re.compile(r"\bvariable\s+([A-Za-z0-9_]+)"),
    re.compile(r"\$\{([A-Za-z0-9_]+)\}"),
    re.compile(r"\$([A-Za-z0-9_])"),
    re.compile(r"\bv_([A-Za-z0-9_]+)"),
    re.compile(r"is_defined\(\s*variable\s*,\s*([A-Za-z0-9_]+)"),
)


def _variable_names(text: str, here: Path, seen: set[Path]) -> set[str]:
    names: set[str] = set()
    for cmd in split_commands(text):
        body = strip_comment(cmd.text)
        for pattern in _VARIABLE_PATTERNS:
            names.update(pattern.findall(body))
        words = cmd.words
        if cmd.name == "include" and len(words) > 1 and "$" not in words[1]:
            for path in (Path(words[1]), here / words[1]):
                if path.is_file() and path.resolve() not in seen:
                    seen.add(path.resolve())
                    try:
                        names |= _variable_names(path.read_text(errors="replace"), path.parent, seen)
                    except OSError:
                        pass
                    break
    return names


def check_variables(script: InputScript, names: Iterable[str]) -> None:
    """Refuse ``-v NAME`` for a name the input neither defines nor uses (a typo would be silently ignored)."""
    import difflib

    known = script.variable_names() | {"every", "prefix"}  # the two nlmd run always passes
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.5)
            hint = f"; did you mean -v {close[0]}?" if close else ""
            raise InputError(f"-v {name}: {script.path} neither defines nor uses a variable '{name}'{hint}")
