"""``nlmd run`` as a function: an input in, a trajectory file and its summary out.

:func:`stream_trajectory` is everything ``nlmd run`` does around the loop: it checks the request before
anything starts (variables, outputs, the potential directory), builds a :class:`~nlmd.md.loop.StreamedRun`,
attaches the :class:`~nlmd.md.stream.TrajectoryStream` and the :class:`~nlmd.md.progress.ProgressBar`,
turns SIGINT/SIGTERM into a clean stop, closes or discards the file whatever happens, and writes the
summary (``<output>.summary.json``) -- atomically, after the file is closed. The command-line layer
(:mod:`nlmd.commands.run`) only parses options and prints.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nlmd import __version__
from nlmd.errors import DiskFullError, InputError, NlmdError
from nlmd.h5md import TrajectoryWriter
from nlmd.md.loop import RunResult, StreamedRun
from nlmd.md.progress import ProgressBar
from nlmd.md.script import InputScript, check_variables
from nlmd.md.stopping import SIGNAL_EXIT, stop_on_signals
from nlmd.md.stream import TrajectoryStream, close_after_failure
from nlmd.outputs import check_lammps_word, check_output, write_summary

__all__ = ["log_path", "stream_trajectory"]


def log_path(output: str | os.PathLike) -> Path:
    """The LAMMPS log beside the trajectory: ``traj.h5`` -> ``traj.log``."""
    output = Path(output)
    return output.with_suffix(".log") if output.suffix else output.with_name(output.name + ".log")


def stream_trajectory(
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
    and its dumps land beside the output. SIGINT/SIGTERM stop the run cleanly, in the
    final run and before it (see :func:`~nlmd.md.stopping.stop_on_signals`).
    ``energies=False`` writes frames without per-atom energies, potential energy and temperature (``nlmd run
    --no-energies``: LAMMPS then need not tally energies on every frame step). ``writer_thread`` writes the
    file from a thread of its own (:class:`~nlmd.md.stream.TrajectoryStream` with ``background=True``).
    With ``check_names``, a variable name the input neither defines nor uses is refused (:func:`check_variables`).

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
    check_output(output, inputs=[input_path], force=force)
    check_output(log, option="--log", inputs=[input_path, output])  # a log is replaced, as by lmp

    with StreamedRun(script, every=every, variables=variables, comm=comm, log=log, energies=energies) as run, \
            run.ending_together():
        echo = (lambda s: print(s, file=sys.stderr, flush=True)) if run.rank == 0 and not quiet else None
        with stop_on_signals(run, echo):
            run.setup()
            if run.info is None:  # a signal during set-up, agreed by every rank: nothing to run
                return _stopped_before_start(run, output, command)
            writer = stream = None
            if run.rank == 0:
                writer = TrajectoryWriter(
                    output,
                    parameters={**run.parameters(), "command": command},
                    fixed_core=run.fixed_core,
                    model=run.info.model,
                    boundary=run.info.boundary,
                    flush_every=flush_every,
                    flush_seconds=flush_seconds,
                )
                stream = TrajectoryStream(writer, background=writer_thread)
                run.attach(stream)
                progress_out = progress_stream if progress_stream is not None else sys.stderr
                if not quiet and (progress_stream is not None or progress_out.isatty()):
                    run.attach(ProgressBar(progress_out))
            try:
                result = run.stream()
            except BaseException as exc:
                written = close_after_failure(writer, stream)
                if written and isinstance(exc, NlmdError) and run.rank == 0:
                    summary = _summary(run, None, output, log, command, t_start, status="failed", error=str(exc),
                                       frames_written=written)
                    try:
                        write_summary(output, summary)
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
            write_summary(output, summary)
        return summary


def _stopped_before_start(run: StreamedRun, output: Path, command: str) -> dict[str, Any]:
    reason = run.stop_reason or "interrupted"
    return {
        "status": "interrupted",
        "stop_reason": reason,
        "exit_status": SIGNAL_EXIT.get(reason, 130),
        "frames": 0,
        "output": str(output),
        "command": command,
        "message": f"interrupted before the run started; no file written ({output} not created)",
    }


def _summary(
    run: StreamedRun,
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
        signal_stop = result.stop_reason in SIGNAL_EXIT
        status = "interrupted" if signal_stop else result.status
        steps, frames, md_s = result.steps, result.frames, result.md_seconds
        rate = result.steps_per_second
    else:
        steps = run.step - run.first_step
        frames = run.frames
        md_s = (run.end_time or time.monotonic()) - (run.first_step_time or t_start)
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
        "potential": run.info.potential if run.info else None,
        "fixed_core": run.fixed_core.summary() if run.fixed_core is not None else None,
        "first_step": run.first_step,
        "last_step": run.step,
        "planned_last_step": run.last_step,
        "steps": steps,
        "frames": frames,
        "timestep_ps": run.info.timestep if run.info else 0.0,
        "wall_time_s": round(time.monotonic() - t_start, 3),
        "md_time_s": round(md_s, 3),
        "steps_per_s": round(rate, 4) if math.isfinite(rate) else None,
        "file_size_bytes": size,
    }
    if result is not None and result.stop_reason:
        summary["stop_reason"] = result.stop_reason
        if result.stop_reason in SIGNAL_EXIT:
            summary["exit_status"] = SIGNAL_EXIT[result.stop_reason]
    if error:
        summary["error"] = error
    return summary
