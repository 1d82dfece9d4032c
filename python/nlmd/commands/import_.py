"""``nlmd import``: DFT outputs (vasprun.xml, OUTCAR, extxyz, ASE .traj) -> H5MD trajectory file."""

from __future__ import annotations

from pathlib import Path

import click

FORMATS = ("vasp-xml", "vasp-out", "extxyz", "traj")


@click.command(name="import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Trajectory file to write (.h5); a summary goes to <output>.summary.json.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="ASE format of every input file (default: detected by ASE).")
@click.option("--index", default=":", show_default=True,
              help="Frames to take from each file, ASE index syntax (':', '-1', '10:200:5').")
@click.option("--dt", "dt_fs", type=float, default=None,
              help="MD time step in fs, for files that do not carry one (VASP POTIM, info['timestep']).")
@click.option("--ids-from", "ids_from", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              metavar="FILE",
              help="Give the atoms the ids of FILE (the model's trajectory, or cell.json/.extxyz/.data of "
                   "`nlmd build`): the k-th atom of an element here is its k-th of that element. Rows are "
                   "then in id order. Needed for POSCARs, which list atoms by element.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
def command(files: tuple[Path, ...], output: Path, fmt: str | None, index: str, dt_fs: float | None,
            ids_from: Path | None, force: bool) -> None:
    """Import DFT frames (positions, forces, energies) from FILES, in order, into one trajectory file.

    Steps are frame indices and continue from one file to the next; time = step x dt. Fully fixed
    atoms (selective dynamics, FixAtoms) become the file's fixed core. Atoms get ids 1..N in file order,
    or with --ids-from those of the cell they were exported from.
    """
    from nlmd.importers import import_files
    from nlmd.outputs import command_line, write_summary

    result = import_files(files, output, format=fmt, index=index, dt_fs=dt_fs, command=command_line(),
                          ids_from=ids_from, force=force)
    write_summary(output, result.summary())

    core = result.fixed_core
    core_text = f", fixed core of {core.core_ids.size} atoms around id {core.center_id}" if core else ""
    dt_text = f"dt {result.timestep_fs:g} fs" if result.timestep_fs is not None else "time unknown (pass --dt)"
    ids_text = f", ids from {result.ids_from}" if result.ids_from is not None else ""
    click.echo(
        f"{output}: {result.n_frames} frames x {result.n_atoms} atoms from {len(result.files)} file(s) "
        f"({result.source}, {result.energy}, {dt_text}{core_text}{ids_text})"
    )
