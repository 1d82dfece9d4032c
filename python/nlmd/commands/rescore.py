"""``nlmd rescore``: a potential on exactly the frames of a trajectory file (also under mpirun)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import click


class ProgressBar:
    """Frames done, on stderr: click's progress bar on a terminal; elsewhere (a pipe, a batch log,
    mpirun) one line per tenth of the frames. Opened on the first report, when the total is known."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar = None
        self._done = 0
        self._t0 = time.perf_counter()
        self._tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self._tty:
            if self._bar is None:
                self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True,
                                              show_eta=True)
                self._bar.__enter__()
            self._bar.update(done - self._done)
        elif done == total or done * 10 // total > self._done * 10 // total:
            elapsed = time.perf_counter() - self._t0
            click.echo(f"{self.label}: {done}/{total} frames, {elapsed:.1f} s", err=True)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@click.command(name="rescore")
@click.argument("frames", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--potential", "potential", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Potential directory: a deployed model (nlmd deploy) or a classical one (potentials/sro-rigid-ion).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Trajectory file to write (.h5); a summary goes to <output>.summary.json.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no closing line.")
def command(frames: Path, potential: Path, output: Path, force: bool, quiet: bool) -> None:
    """Evaluate a potential on exactly the frames of FRAMES (an nlmd trajectory file).

    The output keeps the steps, times, cells, positions, ids, species and fixed core of FRAMES, with the
    potential's forces, per-atom energies and potential energy. Under `mpirun -np N nlmd rescore ...`
    every rank runs LAMMPS and rank 0 reads and writes.
    """
    from nlmd.errors import NlmdError
    from nlmd.rescore import world_comm, rescore_file

    comm = world_comm(None)
    root = comm.rank == 0
    argv = ["nlmd", "rescore", str(frames), "--potential", str(potential), "-o", str(output)]
    if force:
        argv.append("--force")
    if comm.size > 1:
        argv = ["mpirun", "-np", str(comm.size), *argv]
    bar = ProgressBar(f"rescore {frames.name}") if root and not quiet else None
    try:
        result = rescore_file(frames, potential, output, force=force, comm=comm, progress=bar,
                              command=shlex.join(argv))
    except NlmdError:
        if not root:  # rank 0 reports it (every rank raised the same error)
            sys.exit(1)
        raise
    finally:
        if bar is not None:
            bar.close()
    if not root:
        return

    summary_path = output.with_name(output.name + ".summary.json")
    tmp = summary_path.with_name(f".{summary_path.name}.part")
    tmp.write_text(json.dumps(result.summary(), indent=2) + "\n")
    os.replace(tmp, summary_path)

    if not quiet:
        per = result.seconds_per_frame
        rate = f", {per * 1e3:.1f} ms/frame after the first" if per is not None else ""
        ranks = f" on {result.ranks} ranks" if result.ranks > 1 else ""
        click.echo(
            f"{output}: {result.n_frames} frames x {result.n_atoms} atoms rescored with {result.model_name}"
            f"{ranks} in {result.seconds:.1f} s{rate}"
        )
