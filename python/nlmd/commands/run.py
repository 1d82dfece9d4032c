"""``nlmd run``: run a LAMMPS input in-process and stream its final run to an H5MD trajectory file."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command(name="run", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Trajectory file to write (.h5). Beside it: <output>.summary.json and the LAMMPS log.")
@click.option("--every", type=click.IntRange(min=1), default=None,
              help="Frame interval in steps [default: 10, or -v every N]; also passed to the input as "
                   "-var every N, so its own thermo and dump intervals match.")
@click.option("-v", "--var", "variables", type=(str, str), multiple=True, metavar="NAME VALUE",
              help="Set an input variable, as lmp's -var NAME VALUE (repeatable).")
@click.option("--no-energies", is_flag=True,
              help="Frames without per-atom energies, potential energy and temperature, so that LAMMPS need not "
                   "tally energies on every frame step (much cheaper with classical potentials; see docs/run.md).")
@click.option("--quiet", is_flag=True, help="No progress line (it is also off when stderr is not a terminal).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="LAMMPS log file [default: the output with suffix .log, e.g. traj.log].")
def command(input_path: Path, output: Path, every: int | None, variables: tuple[tuple[str, str], ...],
            no_energies: bool, quiet: bool, force: bool, log: Path | None) -> None:
    """Run the LAMMPS input INPUT in-process and stream its final run to an H5MD file.

    The input runs as with `lmp -in INPUT` (same physics, one run); every N steps the frame (box,
    positions, velocities, forces, per-atom energies, species, ids; potential energy and temperature)
    goes to OUTPUT (--no-energies: without the energies and the temperature). Unless -v prefix is given, -var prefix <OUTPUT without suffix> puts the input's own
    dumps beside OUTPUT. Under `mpirun -np N nlmd run ...` rank 0 writes.

    Ctrl-C (or SIGTERM) stops after the current step and closes the file: every frame taken is in it
    (exit status 130, 143 for SIGTERM). See docs/run.md.
    """
    from nlmd.errors import NlmdError
    from nlmd.md.driver import stream_trajectory
    from nlmd.outputs import command_line, summary_path, world_comm

    names = [name for name, _ in variables]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise click.UsageError(f"-v {dup[0]} is given more than once")
    var = dict(variables)
    if every is None:
        try:
            every = int(var.get("every", 10))
        except ValueError:
            raise click.BadParameter(f"-v every {var['every']} is not a whole number of steps", param_hint="-v") from None
    comm = world_comm()
    rank = comm.Get_rank()
    try:
        summary = stream_trajectory(input_path, output, every=every, variables=var, quiet=quiet, force=force, log=log,
                                    command=command_line(ranks=comm.Get_size()), energies=not no_energies, comm=comm)
    except NlmdError as exc:
        if comm.Get_size() == 1:
            raise
        # every rank failed (an error of one rank alone ends the job in nlmd.md.failures): rank 0 reports it,
        # and no rank exits before it has: mpirun ends every rank when one exits non-zero, which could end
        # rank 0 before its report
        from nlmd.md.failures import wait_request

        if rank == 0:
            click.echo(f"nlmd: error: {exc}", err=True)
        wait_request(comm.Ibarrier(), 30.0)
        sys.exit(1)
    if rank != 0:
        sys.exit(summary.get("exit_status", 0))
    status = summary["status"]
    if status == "interrupted" and summary.get("frames", 0) == 0 and "message" in summary:
        click.echo(f"nlmd run: {summary['message']}", err=True)
        sys.exit(summary["exit_status"])
    size = summary.get("file_size_bytes") or 0
    what = (
        f"{output}: {summary['frames']} frames x {summary['atoms']} atoms, steps {summary['first_step']}-"
        f"{summary['last_step']} in {summary['md_time_s']:.1f} s ({summary['steps_per_s']:.3g} steps/s on "
        f"{summary['ranks']} rank{'s' if summary['ranks'] > 1 else ''}), {size / 1e6:.1f} MB; "
        f"summary {summary_path(output)}"
    )
    if status == "interrupted":
        click.echo(
            f"nlmd run: interrupted ({summary.get('stop_reason')}) at step {summary['last_step']}; "
            f"{summary['frames']} frames written to {output}", err=True,
        )
        sys.exit(summary["exit_status"])
    if status == "stopped":
        click.echo(f"nlmd run: the run stopped early at step {summary['last_step']}: {summary.get('stop_reason')}", err=True)
    click.echo(what)
