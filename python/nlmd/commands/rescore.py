"""``nlmd rescore``: a potential on exactly the frames of a trajectory file (also under mpirun)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


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
    from nlmd.outputs import Progress, command_line, world_comm, write_summary
    from nlmd.rescore import rescore_file

    comm = world_comm(None)
    root = comm.rank == 0
    bar = Progress(f"rescore {frames.name}:", unit="frames") if root and not quiet else None
    try:
        result = rescore_file(frames, potential, output, force=force, comm=comm,
                              progress=(lambda done, total: bar.update(done, 0, total)) if bar else None,
                              command=command_line(ranks=comm.size))
    except NlmdError:
        if not root:  # rank 0 reports it (every rank raised the same error)
            sys.exit(1)
        raise
    finally:
        if bar is not None:
            bar.close()
    if not root:
        return
    write_summary(output, result.summary())

    if not quiet:
        per = result.seconds_per_frame
        rate = f", {per * 1e3:.1f} ms/frame after the first" if per is not None else ""
        ranks = f" on {result.ranks} ranks" if result.ranks > 1 else ""
        click.echo(
            f"{output}: {result.n_frames} frames x {result.n_atoms} atoms rescored with {result.model_name}"
            f"{ranks} in {result.seconds:.1f} s{rate}"
        )
