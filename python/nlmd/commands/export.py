"""``nlmd export``: H5MD trajectory -> training set (extxyz or any ASE format) with energy, forces, stress."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="export", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File to write; the format follows its extension through ase.io (.extxyz/.xyz: extxyz).")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Take every N-th frame of those selected.")
@click.option("--start-step", type=int, default=None, help="First MD step to take (e.g. to skip equilibration).")
@click.option("--stop-step", type=int, default=None, help="Last MD step to take.")
@click.option("--stress/--no-stress", default=None,
              help="Require the stress / leave it out [default: write it where the file has it].")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def command(source: Path, output: Path, every: int, start_step: int | None, stop_step: int | None,
            stress: bool | None, force: bool) -> None:
    """Write the frames of FILE (nlmd run / rescore / import) as a training set: energy, forces, stress.

    Each frame becomes an ASE structure with a single-point calculator (energy in eV, forces in eV/A,
    stress in eV/A^3 with ASE's sign), so SevenNet's trainer reads the file as it is
    (`load_trainset_path: [train.extxyz]`).
    """
    from nlmd.export import export_frames

    result = export_frames(source, output, every=every, start_step=start_step, stop_step=stop_step,
                           stress=stress, force=force)
    click.echo(f"{output}: {result.n_frames} frames x {result.n_atoms} atoms from {source} "
               f"(steps {result.steps[0]}-{result.steps[-1]}; {', '.join(result.labels)})")
