"""``nlmd build``: structures for nlmd's experiments, written as LAMMPS data, extxyz and POSCAR.

``nlmd build sro-rfix --rfix 5.82 -o cell`` builds the fixed-core cell of :mod:`nlmd.structures` and
writes ``cell.data`` (LAMMPS), ``cell.extxyz`` and ``cell.POSCAR`` (VASP, selective dynamics) plus the
summary ``cell.json``. With a recognised extension, ``-o`` writes that one format; ``--all`` writes the
three formats beside it whatever the extension.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click

from nlmd import __version__
from nlmd.errors import InputError

#: output kind -> suffix used when the three formats are written from a stem
STEM_SUFFIX = {"lammps-data": ".data", "extxyz": ".extxyz", "poscar": ".POSCAR"}


def output_kind(path: Path) -> str | None:
    """The format that ``path`` names by its extension (or name, for POSCAR), or None for a bare stem."""
    name, suffix = path.name, path.suffix.lower()
    if suffix in (".data", ".lmp"):
        return "lammps-data"
    if suffix in (".xyz", ".extxyz"):
        return "extxyz"
    if suffix in (".vasp", ".poscar") or name.upper() in ("POSCAR", "CONTCAR") or name.upper().startswith("POSCAR"):
        return "poscar"
    return None


def plan_outputs(output: Path, write_all: bool) -> tuple[dict[str, Path], Path]:
    """Files to write (kind -> path) and the JSON summary path for ``-o output`` (and ``--all``)."""
    kind = output_kind(output)
    if kind is not None and not write_all:
        files = {kind: output}
        stem = output.with_suffix("") if output.suffix else output
    else:
        stem = output.with_suffix("") if kind is not None and output.suffix else output
        files = {k: stem.with_name(stem.name + s) for k, s in STEM_SUFFIX.items()}
        if kind is not None:
            files[kind] = output
    summary = stem.with_name(stem.name + ".json")
    if summary in files.values():  # pragma: no cover - only with a name like 'x.json.data'
        summary = output.with_name(output.name + ".summary.json")
    return files, summary


def summary_text(summary: dict) -> str:
    """JSON with one key per line but lists of numbers (core ids, the POSCAR map) on one line each."""
    text = json.dumps(summary, indent=1)
    return re.sub(r"\[\s+([-0-9.eE,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def reproduce_command(parameters: dict, output: Path, write_all: bool) -> str:
    """The ``nlmd build sro-rfix`` command line that rebuilds a cell with these parameters."""
    args = ["nlmd", "build", "sro-rfix"]
    for key, value in parameters.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    args += ["-o", str(output)] + (["--all"] if write_all else [])
    return shlex.join(args)


@click.group(name="build", context_settings={"help_option_names": ["-h", "--help"]})
def command() -> None:
    """Build a structure (the fixed-core SrO cell) as LAMMPS data, extxyz and POSCAR."""


@command.command(name="sro-rfix")
@click.option("--rfix", type=float, default=5.82, show_default=True,
              help="Core radius R_fix (Å): rocksalt sites strictly closer to the centre are kept crystalline.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random placement (same seed, same cell).")
@click.option("--center", default="cation", show_default=True,
              help="Element of the centre atom: cation, anion, or the symbol (e.g. Sr or O).")
@click.option("--box", type=float, default=13.63, show_default=True, help="Cubic cell edge (Å).")
@click.option("--a", "a", type=float, default=5.20, show_default=True, help="Rocksalt lattice constant of the core (Å).")
@click.option("--cation", default="Sr", show_default=True, help="Cation element (LAMMPS type 1).")
@click.option("--anion", default="O", show_default=True, help="Anion element (LAMMPS type 2).")
@click.option("--n-cation", type=click.IntRange(min=0), default=72, show_default=True, help="Total number of cations.")
@click.option("--n-anion", type=click.IntRange(min=0), default=72, show_default=True, help="Total number of anions.")
@click.option("--min-dist", type=float, default=1.5, show_default=True,
              help="Smallest distance (Å) of a random atom to any other atom, periodic images included.")
@click.option("--max-tries", type=click.IntRange(min=1), default=20000, show_default=True,
              help="Random trial positions per atom before giving up.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output: FILE.data/.lmp (LAMMPS), FILE.xyz/.extxyz, POSCAR or FILE.vasp; "
                   "a bare stem (e.g. 'cell') writes all three: cell.data, cell.extxyz, cell.POSCAR.")
@click.option("--all", "write_all", is_flag=True,
              help="Write all three formats beside OUTPUT whatever its extension.")
def sro_rfix(rfix, seed, center, box, a, cation, anion, n_cation, n_anion, min_dist, max_tries, output, write_all):
    """The fixed-core rocksalt cell of Kang (2024) (defaults: 13.63 Å SrO, 72 + 72 atoms).

    Atom ids: the centre is id 1, the other core atoms follow (ids 1..n_core), then the mobile atoms.
    A JSON summary (parameters, core ids, POSCAR row -> id map) is written beside the output.
    """
    from nlmd import structures

    files, summary_path = plan_outputs(output, write_all)
    for path in [*files.values(), summary_path]:
        if not path.parent.is_dir():
            raise InputError(f"-o {output}: the directory {path.parent} does not exist")

    cell = structures.build_fixed_core_cell(
        rfix, box=box, a=a, cation=cation, anion=anion, n_cation=n_cation, n_anion=n_anion,
        center=center, min_dist=min_dist, seed=seed, max_tries=max_tries,
    )
    writers = {
        "lammps-data": structures.write_lammps_data,
        "extxyz": structures.write_extxyz,
        "poscar": structures.write_poscar,
    }
    for kind, path in files.items():
        writers[kind](cell, path)

    summary = {
        "nlmd_version": __version__,
        "command": reproduce_command(cell.parameters(), output, write_all),
        "files": {kind: str(path) for kind, path in files.items()},
        **cell.summary(),
    }
    structures.atomic_write(summary_path, lambda tmp: tmp.write_text(summary_text(summary)))

    comp = cell.core_composition()
    comp_text = " + ".join(f"{n} {el}" for el, n in comp.items())
    click.echo(
        f"core: {cell.n_core} atoms ({comp_text}) closer than R_fix = {cell.rfix:g} Å to the centre "
        f"{cell.center} (id {cell.center_id}); mobile: {cell.n_atoms - cell.n_core} atoms; "
        f"closest pair {cell.closest_pair:.3f} Å"
    )
    click.echo("wrote " + ", ".join(str(p) for p in [*files.values(), summary_path]))
