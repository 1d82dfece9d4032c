"""``nlmd build``: structures for nlmd's experiments, written as LAMMPS data, extxyz and POSCAR.

``nlmd build sro-rfix --rfix 5.82 -o cell`` builds the fixed-core cell of :mod:`nlmd.structures` and
writes ``cell.data`` (LAMMPS), ``cell.extxyz`` and ``cell.POSCAR`` (VASP, selective dynamics) plus the
summary ``cell.json``. ``nlmd build fixed-core --crystal fcc --elements Sr --a 5.99 --box 17.29
--natoms 96 --rfix 6.0 -o cell`` does the same for any crystal (the paper's Sr metal here). With a
recognised extension, ``-o`` writes that one format; ``--all`` writes the three formats beside it
whatever the extension.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click

from nlmd import __version__
from nlmd.errors import InputError
from nlmd.outputs import command_line, write_text

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


@click.group(name="build", context_settings={"help_option_names": ["-h", "--help"]})
def command() -> None:
    """Build a structure (a fixed-core cell) as LAMMPS data, extxyz and POSCAR."""


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

    files, summary_path = _check_outputs(output, write_all)
    cell = structures.build_fixed_core_cell(
        rfix, box=box, a=a, cation=cation, anion=anion, n_cation=n_cation, n_anion=n_anion,
        center=center, min_dist=min_dist, seed=seed, max_tries=max_tries,
    )
    _write_cell(cell, files, summary_path, command_line(defaults=True))


def _check_outputs(output: Path, write_all: bool) -> tuple[dict[str, Path], Path]:
    files, summary_path = plan_outputs(output, write_all)
    for path in [*files.values(), summary_path]:
        if not path.parent.is_dir():
            raise InputError(f"-o {output}: the directory {path.parent} does not exist")
    return files, summary_path


def _write_cell(cell, files: dict[str, Path], summary_path: Path, command: str) -> None:
    from nlmd import structures

    writers = {
        "lammps-data": structures.write_lammps_data,
        "extxyz": structures.write_extxyz,
        "poscar": structures.write_poscar,
    }
    for kind, path in files.items():
        writers[kind](cell, path)

    summary = {
        "nlmd_version": __version__,
        "command": command,
        "files": {kind: str(path) for kind, path in files.items()},
        **cell.summary(),
    }
    write_text(summary_path, summary_text(summary))

    comp = cell.core_composition()
    comp_text = " + ".join(f"{n} {el}" for el, n in comp.items())
    click.echo(
        f"core: {cell.n_core} atoms ({comp_text}) closer than R_fix = {cell.rfix:g} Å to the centre "
        f"{cell.center} (id {cell.center_id}); mobile: {cell.n_atoms - cell.n_core} atoms; "
        f"closest pair {cell.closest_pair:.3f} Å"
    )
    click.echo("wrote " + ", ".join(str(p) for p in [*files.values(), summary_path]))


def _split_list(option: str, text: str) -> list[str]:
    items = text.replace(",", " ").split()
    if not items:
        raise InputError(f"{option} {text!r}: expected a comma-separated list")
    return items


@command.command(name="fixed-core")
@click.option("--crystal", default="fcc", show_default=True,
              help="ASE bulk crystal structure of the core: sc, fcc, bcc, hcp, diamond, rocksalt, "
                   "cesiumchloride, zincblende, wurtzite, fluorite.")
@click.option("--elements", default="Sr", show_default=True,
              help="Elements in ASE's formula order, comma-separated (e.g. Sr; Sr,O; Ga,As); "
                   "also the LAMMPS type order.")
@click.option("--a", "a", type=float, default=5.99, show_default=True,
              help="Lattice constant a (Å) as ase.build.bulk takes it (the conventional cube for cubic crystals).")
@click.option("--c", "c", type=float, default=None,
              help="Lattice constant c (Å) for hcp/wurtzite (default: ideal c/a).")
@click.option("--box", type=float, default=17.29, show_default=True, help="Cubic cell edge (Å).")
@click.option("--natoms", default="96", show_default=True,
              help="Total number of atoms of each element, comma-separated in --elements order.")
@click.option("--rfix", type=float, default=6.0, show_default=True,
              help="Core radius R_fix (Å): crystal sites strictly closer to the centre are kept crystalline.")
@click.option("--center", default=None, help="Element of the centre atom (default: the first of --elements).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random placement (same seed, same cell).")
@click.option("--min-dist", type=float, default=1.5, show_default=True,
              help="Smallest distance (Å) of a random atom to any other atom, periodic images included.")
@click.option("--max-tries", type=click.IntRange(min=1), default=20000, show_default=True,
              help="Random trial positions per atom before giving up.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output, as for `nlmd build sro-rfix`: a bare stem writes STEM.data, STEM.extxyz, STEM.POSCAR.")
@click.option("--all", "write_all", is_flag=True,
              help="Write all three formats beside OUTPUT whatever its extension.")
def fixed_core(crystal, elements, a, c, box, natoms, rfix, center, seed, min_dist, max_tries, output, write_all):
    """A fixed-core cell of any crystal (defaults: the paper's Sr metal, fcc, 96 Sr in a 17.29 Å cube).

    The defaults' a = 5.99 Å is the lattice constant at the paper's density (17.29^3/96 = 53.8 Å^3 per
    atom, 4 atoms per fcc cube). Ids, outputs and summary as for `nlmd build sro-rfix`.
    """
    from nlmd import structures

    element_list = _split_list("--elements", elements)
    counts = []
    for word in _split_list("--natoms", natoms):
        try:
            counts.append(int(word))
        except ValueError:
            raise InputError(f"--natoms {natoms!r}: {word!r} is not an integer") from None
    files, summary_path = _check_outputs(output, write_all)
    cell = structures.build_crystal_core_cell(
        rfix, crystal=crystal, elements=element_list, a=a, c=c, box=box, natoms=counts, center=center,
        min_dist=min_dist, seed=seed, max_tries=max_tries,
    )
    _write_cell(cell, files, summary_path, command_line(defaults=True))


@command.command(name="point-charges")
@click.option("--d", "d", type=float, required=True,
              help="Distance (Å) between the +1e particle at (5, 5, 12) and the -1e particle at (5, 5, 12 + d).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random ±0.5e particles (same seed, same configuration).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Stem: writes STEM-I.extxyz, STEM-II.extxyz, STEM-III.extxyz and the summary STEM.json.")
@click.option("--force", is_flag=True, help="Replace existing outputs.")
def point_charges(d: float, seed: int, output: Path, force: bool) -> None:
    """The paper's toy model (Kang 2024, Methods 5.1): one random configuration of point charges as its
    types I (+1e and -1e), II (no -1e) and III (no +1e), non-periodic, for the exact reference
    potentials/point-charges-coulomb or any model trained on it. Species: Rf +1e, Db -1e, Sg +0.5e,
    Bh -0.5e (nlmd.point_charges says why these labels).
    """
    import ase.io

    from nlmd import point_charges as pc
    from nlmd.outputs import atomic_write, check_output, command_line, write_text

    stem = output.with_suffix("") if output.suffix in (".xyz", ".extxyz", ".json") else output
    files = {t: stem.with_name(f"{stem.name}-{t}.extxyz") for t in pc.TYPES}
    summary_path = stem.with_name(stem.name + ".json")
    for path in [*files.values(), summary_path]:
        check_output(path, force=force)
    cell = pc.build_point_charges(d, seed)
    for t, path in files.items():
        atomic_write(path, lambda tmp, a=cell.types[t]: ase.io.write(tmp, a, format="extxyz"))
    summary = {
        "nlmd_version": __version__,
        "command": command_line(defaults=True),
        "d": d, "seed": seed, "species": pc.SPECIES, "n_half_charges": pc.n_random(d),
        "region_A": [pc.REGION_XY, pc.REGION_XY, pc.REGION_Z0 + d], "vacuum_A": pc.VACUUM,
        "min_distance_A": pc.MIN_DISTANCE, "periodic": False,
        "files": {t: str(p) for t, p in files.items()},
        "atoms": {t: len(a) for t, a in cell.types.items()},
    }
    write_text(summary_path, summary_text(summary))
    click.echo(f"types I, II, III: {', '.join(str(len(a)) for a in cell.types.values())} particles, "
               f"±1e {d:g} Å apart; wrote " + ", ".join(str(p) for p in [*files.values(), summary_path]))
