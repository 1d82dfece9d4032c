"""Output plumbing shared by every command: checks before writing, atomic writes, summaries, the
reproducing command line, the MPI communicator and the progress line.

- :func:`check_output`, :func:`check_lammps_word`: no command writes over one of its own inputs, replaces an
  existing output without ``--force``, or finds out only at the end that the output's directory is missing
  or not writable.
- :func:`atomic_path`, :func:`atomic_write`, :func:`write_json`: a file (or directory) appears complete or not
  at all: it is written under a unique hidden name beside the target (:func:`temporary_path`, so two runs
  writing at once never share one), then renamed.
- :func:`summary_path`, :func:`write_summary`: the JSON summary beside an output (``<output>.summary.json``).
- :func:`command_line`: the command line that reproduces the running click command (recorded in outputs).
- :func:`world_comm`: the MPI communicator (``MPI.COMM_WORLD`` unless one is given); rank 0 writes.
- :class:`Progress`: one progress mechanism (a line redrawn in place on a terminal, else a line per tenth).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------------


def temporary_path(path: str | os.PathLike) -> Path:
    """A unique hidden name beside ``path`` (same file system, so renaming it onto ``path`` is atomic):
    ``.<name>.<pid>.<random>.part``. Nothing is created."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def move_into_place(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Rename ``tmp`` onto ``path``; a directory replaces an existing ``path`` (moved aside, then removed)."""
    tmp, path = Path(tmp), Path(path)
    if tmp.is_dir() and path.exists():
        old = temporary_path(path)
        os.rename(path, old)
        os.rename(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary name beside ``path`` (:func:`temporary_path`) to write to; on success it is renamed
    to ``path`` (:func:`move_into_place`), on any exception (Ctrl-C included) removed.

    With ``directory`` the temporary directory is created first (honouring the umask, as every output);
    a file is created by the caller, so it gets the mode ``open()`` gives."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: the directory {path.parent} does not exist")
    tmp = temporary_path(path)
    try:
        if directory:
            tmp.mkdir()
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    try:
        move_into_place(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, data: Any, *, indent: int = 2, allow_nan: bool = True) -> Path:
    """Write ``data`` as JSON (``indent``, a final newline) to ``path`` atomically (``allow_nan=False``: a
    NaN or infinity raises ValueError before anything is written)."""
    return write_text(path, json.dumps(data, indent=indent, allow_nan=allow_nan) + "\n")


# --------------------------------------------------------------------------------------------------
# summaries and the command line
# --------------------------------------------------------------------------------------------------


def summary_path(output: str | os.PathLike) -> Path:
    """The summary beside an output file: ``traj.h5`` -> ``traj.h5.summary.json``."""
    output = Path(output)
    return output.with_name(output.name + ".summary.json")


def write_summary(output: str | os.PathLike, summary: dict) -> Path:
    """Write ``summary`` to :func:`summary_path` of ``output`` (atomically); return that path."""
    return write_json(summary_path(output), summary)


def _words(value: Any) -> list[str]:
    if isinstance(value, (tuple, list)):
        return [w for v in value for w in _words(v)]
    return [os.fspath(value) if isinstance(value, os.PathLike) else str(value)]


def command_line(ctx=None, *, ranks: int = 1, defaults: bool = False, program: str = "nlmd") -> str:
    """The command line that reproduces the click command being run (``ctx``: the current context).

    Arguments and options come in their declaration order, each option under its first name (``-o``,
    ``--potential``); an option left at its default is omitted unless ``defaults`` (then every option
    with a value is written, so the line does not depend on a later version's defaults); a flag appears
    when set (``--x/--no-x`` flags by the name of their value). With ``ranks`` > 1 the line starts with
    ``mpirun -np RANKS``. janus-core records its commands from the CLI's own parameters in the same way.
    """
    import click
    from click.core import ParameterSource

    ctx = ctx if ctx is not None else click.get_current_context()
    names, c = [], ctx
    while c.parent is not None:
        names.append(c.info_name)
        c = c.parent
    words = [program, *reversed(names)]
    for param in ctx.command.params:
        if not param.expose_value or param.name not in ctx.params:
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            words += _words(value)
            continue
        explicit = ctx.get_parameter_source(param.name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
        if value is None or not (explicit or defaults):
            continue
        opt = param.opts[0]
        if getattr(param, "is_flag", False) and isinstance(value, bool):
            if value:
                words.append(opt)
            elif param.secondary_opts:
                words.append(param.secondary_opts[0])
        elif getattr(param, "multiple", False):
            for item in value:
                words += [opt, *_words(item)]
        else:
            words += [opt, *_words(value)]
    if ranks > 1:
        words = ["mpirun", "-np", str(ranks), *words]
    return shlex.join(words)


# --------------------------------------------------------------------------------------------------
# MPI
# --------------------------------------------------------------------------------------------------


def world_comm(comm=None):
    """``comm``, or ``MPI.COMM_WORLD`` when it is None (size 1 without mpirun); libmpi is loaded first so
    that LAMMPS finds it (:func:`nlmd.runtime.ensure_mpi`)."""
    if comm is None:
        from nlmd.runtime import ensure_mpi

        ensure_mpi()
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    return comm


# --------------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------------


def clock(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """How far a long task is, on ``stream`` (stderr), for every command (``nlmd run``, ``nlmd rescore``).

    ``update(value, first, last, note)`` reports position ``value`` in ``[first, last]`` (a step, a frame
    count). ``live`` (default: ``stream`` is a terminal): one line redrawn in place at most every ``refresh``
    seconds, ``LABEL VALUE/LAST PCT% | RATE UNIT/s | left ETA | NOTE``; the rate counts from the first
    report, so a set-up or a model's warm-up does not dilute it. Otherwise one plain line per tenth of the
    way, ``LABEL VALUE/LAST UNIT, ELAPSED s``. :meth:`close` draws the last position and ends the line.
    """

    def __init__(self, label: str, *, unit: str = "", stream=None, live: bool | None = None,
                 refresh: float = 0.5) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)()) if live is None else live
        self.refresh = refresh
        self._created = time.monotonic()
        self._t0: float | None = None
        self._value0 = 0
        self._last_draw = 0.0
        self._width = 0
        self._state: tuple[int, int, int, str] | None = None
        self._tenth = 0

    def update(self, value: int, first: int, last: int, note: str = "") -> None:
        now = time.monotonic()
        if self._t0 is None:
            self._t0, self._value0 = now, value
        self._state = (value, first, last, note)
        if self.live:
            if now - self._last_draw >= self.refresh:
                self._last_draw = now
                self._draw(now)
        else:
            tenth = (value - first) * 10 // max(1, last - first)
            if value >= last or tenth > self._tenth:
                self._tenth = tenth
                self.stream.write(f"{self.label} {value}/{last} {self.unit}, {now - self._created:.1f} s\n")
                self.stream.flush()

    def _draw(self, now: float) -> None:
        if self._state is None:
            return
        value, first, last, note = self._state
        total = max(1, last - first)
        t0 = self._t0 if self._t0 is not None else now
        rate = (value - self._value0) / (now - t0) if now > t0 else 0.0
        eta = clock((last - value) / rate) if rate > 0 else "--:--"
        text = (f"{self.label} {value}/{last} {100.0 * (value - first) / total:5.1f}% | {rate:.3g} {self.unit}/s | "
                f"left {eta}" + (f" | {note}" if note else ""))
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def close(self) -> None:
        """Draw the last position reported and end the line (live); nothing more otherwise."""
        if self.live:
            self._draw(time.monotonic())
            if self._width:
                self.stream.write("\n")
                self.stream.flush()
                self._width = 0
