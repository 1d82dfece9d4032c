"""DFT outputs -> nlmd trajectory file: the engine of ``nlmd import``.

Every format is read through :func:`ase.io.read` (nlmd has no parsers of its own); the frames become
:class:`nlmd.h5md.Frame` objects written by :class:`nlmd.h5md.TrajectoryWriter`. A vasprun.xml is also
scanned once for what ASE passes over in silence (a truncated file, a machine-learning run, selective
dynamics given only in the final structure block): see :func:`_vasprun_facts`.

Conventions (also in docs/trajectory-file.md):

- atoms keep the order of the file and get ids 1..N; species are atomic numbers. With ``ids_from``
  (``--ids-from``) they get the ids of another description of the same cell instead and the rows are
  ordered by id: the k-th atom of an element in the DFT file is the k-th atom (in id order) of that
  element there (see :func:`load_id_map`);
- steps are frame indices in the file (``--index ::10`` keeps every tenth frame and its original
  index); with several files the steps continue: the first frame of file k+1 gets the step after the
  last frame of file k (the count of *all* frames in file k, selected or not);
- time = step x dt. dt comes from the file when it carries one (``atoms.info["timestep"]`` or
  ``["dt"]`` in fs; VASP ``POTIM`` when ``IBRION = 0``), else from ``dt_fs`` (``--dt``); if the two
  disagree it is an error. Without either, time is NaN (unknown) and the steps still count frames;
- forces are the raw forces of the file (constraints not applied: fixed atoms keep their forces);
- the observable ``potential_energy`` is the energy consistent with the forces: the free energy
  (VASP ``e_fr_energy``) when every frame has one, else the total energy; /parameters ``energy``
  says which ("free_energy" | "energy"; "none" when the frames carry no energy at all);
- fully fixed atoms (ASE ``FixAtoms``, VASP selective dynamics ``F F F``) become the file's
  :class:`~nlmd.h5md.FixedCore`: ``core_ids`` are their ids; ``center_id`` is the fixed atom nearest
  to the centroid of the fixed atoms, the centroid taken over the minimum images seen from that atom
  (so a core wrapped around the periodic boundary works); ``rfix`` is the largest distance from the centre
  to a fixed atom, a *lower bound* of the R_fix the core was cut with. ``info["center_id"]`` (1-based,
  the file's own numbering) and ``info["rfix"]`` in the file override the two. With ``ids_from`` the
  core is given in those ids; when the reference describes a core too, the fixed atoms must be exactly
  its atoms, and its centre id and R_fix (the builder's, not a lower bound) are kept;
- the output is written to a temporary file in the same directory and renamed at the end, so an error
  leaves nothing half-written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nlmd.errors import DiskFullError, InputError
from nlmd.h5md import FixedCore, Frame, TrajectoryWriter, disk_full_instead
from nlmd.outputs import atomic_path, check_output

__all__ = ["SOURCES", "ImportResult", "IdMap", "detect_format", "read_frames", "fixed_core_of", "load_id_map",
           "import_files"]

#: ASE format names nlmd imports -> the /parameters ``source`` they are recorded as.
SOURCES: dict[str, str] = {
    "vasp-xml": "vasp",
    "vasp-out": "vasp",
    "extxyz": "extxyz",
    "traj": "ase-traj",
}
#: Keys of ``atoms.info`` that give the MD time step in fs.
TIMESTEP_KEYS = ("timestep", "dt")
#: Keys of ``atoms.info`` that give an explicit R_fix (Angstrom) and centre atom id (1-based).
RFIX_KEYS = ("rfix", "R_fix", "r_fix")
CENTER_KEYS = ("center_id", "centre_id")
#: Relative tolerance when two time steps must agree.
_DT_RTOL = 1e-6


@dataclass
class ImportResult:
    """What :func:`import_files` wrote."""

    output: Path
    files: list[Path]
    n_frames: int
    n_atoms: int
    source: str
    energy: str
    timestep_fs: float | None
    fixed_core: FixedCore | None
    frames_per_file: list[int] = field(default_factory=list)
    ids_from: Path | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (the content of ``<output>.summary.json``)."""
        core = self.fixed_core.summary() if self.fixed_core is not None else None
        return {
            "output": str(self.output),
            "files": [str(p) for p in self.files],
            "frames_per_file": self.frames_per_file,
            "frames": self.n_frames,
            "atoms": self.n_atoms,
            "source": self.source,
            "energy": self.energy,
            "timestep_fs": self.timestep_fs,
            "fixed_core": core,
            "ids_from": None if self.ids_from is None else str(self.ids_from),
        }


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


def detect_format(path: Path, format: str | None = None) -> str:
    """The ASE format name of ``path`` (``format`` when given), checked against :data:`SOURCES`."""
    from ase.io.formats import UnknownFileTypeError, filetype

    if format is None:
        try:
            format = filetype(str(path))
        except (UnknownFileTypeError, OSError, ValueError) as exc:
            raise InputError(
                f"{path}: frame 0: cannot tell the file format ({exc}); pass --format "
                f"({', '.join(SOURCES)})"
            ) from exc
    if format == "xyz":  # ASE reads xyz with the extxyz reader
        format = "extxyz"
    if format not in SOURCES:
        raise InputError(
            f"{path}: frame 0: format {format!r} is not a DFT output nlmd imports "
            f"(supported: {', '.join(SOURCES)}; pass --format to override the detection)"
        )
    return format


def _vasprun_facts(path: Path) -> dict[str, Any]:
    """What ASE's vasprun.xml reader passes over in silence, read in one pass of the XML (no physics):

    ``truncated`` (the parser's message, or None): ASE then returns the complete frames and says nothing;
    ``ml``: a VASP machine-learning run (``ML_LMLFF``), whose file holds the ab-initio steps only, with no
    MD step numbers, so frame index x POTIM is not their time; ``fixed``: the 0-based atoms with
    selective dynamics ``F F F`` in the last structure block that has flags (ASE reads the initial one).
    """
    import xml.etree.ElementTree as ET

    facts: dict[str, Any] = {"truncated": None, "ml": False, "fixed": None}
    try:
        for _, elem in ET.iterparse(path, events=("end",)):
            if elem.tag in ("i", "v") and elem.attrib.get("name", "").upper() in ("ML_LMLFF", "ML_MODE"):
                value = (elem.text or "").strip().upper()
                if value not in ("", "F", ".FALSE.", "FALSE", "NONE"):
                    facts["ml"] = True
            elif elem.tag == "structure":
                flags = elem.findall("varray[@name='selective']/v")
                if flags:
                    facts["fixed"] = [i for i, v in enumerate(flags) if (v.text or "").split() == ["F", "F", "F"]]
            elif elem.tag == "calculation":
                elem.clear()  # frames can be many: keep memory flat
    except ET.ParseError as exc:
        facts["truncated"] = str(exc)
    return facts


def _check_vasprun(path: Path, images: list) -> None:
    """Refuse a truncated or machine-learning vasprun.xml; apply selective dynamics ASE missed."""
    from ase.constraints import FixAtoms

    facts = _vasprun_facts(path)
    if facts["truncated"] is not None:
        raise InputError(
            f"{path}: the XML ends early ({facts['truncated']}): VASP was stopped or is still writing it, and "
            f"ASE would silently return only its {len(images)} complete frames; import a finished file, or "
            "close the last <calculation> yourself"
        )
    if facts["ml"]:
        raise InputError(
            f"{path}: a VASP machine-learning run (ML_LMLFF): vasprun.xml holds only its ab-initio steps, "
            "without their MD step numbers, so nlmd import cannot give them steps or times (frame index x "
            "POTIM would be wrong); import a run without ML_LMLFF, or the frames as a file that carries steps"
        )
    fixed = facts["fixed"]
    if fixed:
        for atoms in images:
            if _fixed_indices(atoms).size == 0:
                atoms.set_constraint([*atoms.constraints, FixAtoms(indices=fixed)])


def read_frames(path: Path, format: str, index: str | int | slice = ":") -> tuple[list, list[int], int]:
    """Read ``path`` with :func:`ase.io.read` and select frames with an ASE index.

    Returns ``(atoms_list, original_indices, n_total)``: the selected frames, their indices in the file
    and the number of frames the file holds.
    """
    import ase.io
    from ase.io.formats import string2index

    try:
        images = ase.io.read(path, index=":", format=format)
    except Exception as exc:  # noqa: BLE001 - any parser failure becomes one line for the user
        raise InputError(f"{path}: frame 0: ASE cannot read it as {format} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(images, list):
        images = [images]
    if format == "vasp-xml":
        _check_vasprun(path, images)
    n_total = len(images)
    sel = string2index(index) if isinstance(index, str) else index
    positions = list(range(n_total))
    try:
        chosen = [positions[sel]] if isinstance(sel, int) else positions[sel]
    except IndexError as exc:
        raise InputError(f"{path}: index {index!r} is out of range ({n_total} frames)") from exc
    if not chosen:
        raise InputError(f"{path}: index {index!r} selects no frames ({n_total} frames in the file)")
    return [images[i] for i in chosen], chosen, n_total


def _fixed_indices(atoms) -> np.ndarray:
    """Indices (0-based) of the atoms an ASE FixAtoms constraint holds fully fixed."""
    from ase.constraints import FixAtoms

    fixed: set[int] = set()
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            fixed.update(int(i) for i in c.get_indices())
    return np.array(sorted(fixed), dtype=np.int64)


def _info_value(atoms, keys: Sequence[str]) -> Any:
    for key in keys:
        if key in atoms.info:
            return atoms.info[key]
    return None


def fixed_core_of(atoms, path: Path | str = "<atoms>") -> FixedCore | None:
    """The fixed core of one frame (see the module docstring), or None when no atom is fully fixed."""
    from ase.geometry import find_mic

    idx = _fixed_indices(atoms)
    if idx.size == 0:
        return None
    ids = idx + 1
    pos = atoms.positions[idx]
    cell, pbc = atoms.cell, atoms.pbc
    # The core may wrap around the periodic boundary and span more than half the box (R_fix = 5.8 in a
    # 13.6 Angstrom cell), so no single unwrapping is right for every atom. Seen from the true centre,
    # though, every fixed atom is its own minimum image (R_fix < L/2). So: for each fixed atom c, the
    # centroid of the fixed atoms as seen from c (minimum image vectors from c); the centre is the atom
    # nearest to the centroid it sees, ties to the lowest id.
    m = len(idx)
    vec, _ = find_mic((pos[None, :, :] - pos[:, None, :]).reshape(-1, 3), cell, pbc)
    offset = np.linalg.norm(vec.reshape(m, m, 3).mean(axis=1), axis=1)
    explicit_center = _info_value(atoms, CENTER_KEYS)
    if explicit_center is not None:
        center_id = int(explicit_center)
        if center_id not in set(ids.tolist()):
            raise InputError(
                f"{path}: frame 0: info center_id={center_id} is not one of the fixed atoms "
                f"(ids {ids.min()}..{ids.max()})"
            )
    else:
        center_id = int(ids[int(np.argmin(np.round(offset, 9)))])
    center = atoms.positions[center_id - 1]
    _, d_center = find_mic(pos - center, cell, pbc)
    explicit_rfix = _info_value(atoms, RFIX_KEYS)
    rfix = float(explicit_rfix) if explicit_rfix is not None else float(d_center.max())
    return FixedCore(center_id=center_id, rfix=rfix, core_ids=ids)


# --------------------------------------------------------------------------------------------------
# ids from another description of the same cell
# --------------------------------------------------------------------------------------------------

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass
class IdMap:
    """The atoms of a reference description of a cell: ids (ascending), their species, its fixed core.

    :meth:`row_ids` gives the atoms of a DFT file these ids: the k-th atom of an element in the DFT file
    is the k-th atom (in id order) of that element here. That is exact for files that list atoms in id
    order and for POSCARs written by :func:`nlmd.structures.write_poscar` (grouped by element, each group
    in id order): the only order a POSCAR of the cell can have without a table beside it.
    """

    path: Path
    ids: np.ndarray  # (N,) int64, ascending
    species: np.ndarray  # (N,) int32 atomic numbers of atoms ids[k]
    fixed_core: FixedCore | None
    kind: str

    def row_ids(self, numbers: np.ndarray, where: str) -> np.ndarray:
        """Atom id of every row of a file whose rows hold the species ``numbers``."""
        from ase.data import chemical_symbols

        numbers = np.asarray(numbers)
        if numbers.size != self.ids.size:
            raise InputError(
                f"{where} has {numbers.size} atoms but {self.path} ({self.kind}) describes {self.ids.size}; "
                "--ids-from must describe the same cell"
            )
        out = np.empty(numbers.size, dtype=np.int64)
        for z in np.union1d(numbers, self.species):
            rows = np.flatnonzero(numbers == z)
            ids = self.ids[self.species == z]
            if rows.size != ids.size:
                raise InputError(
                    f"{where} has {rows.size} {chemical_symbols[int(z)]} atoms but {self.path} ({self.kind}) has "
                    f"{ids.size}; --ids-from must describe the same cell"
                )
            out[rows] = ids
        return out


def load_id_map(path: str | os.PathLike) -> IdMap:
    """Read the ids and species of a cell from ``path`` (``nlmd import --ids-from``).

    Accepted: the JSON summary ``nlmd build`` writes beside the cell (``cell.json``: ``poscar_ids`` and the
    element counts give the species of every id); an nlmd trajectory file (frame 0: ids, species, fixed
    core), e.g. the model's MD; any structure ASE reads with atoms in id order — extxyz, ``.traj``, LAMMPS
    data (``.data``/``.lmp``, with its ids). A POSCAR is refused: it lists atoms by element, not by id.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--ids-from {path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == _HDF5_SIGNATURE:
        from nlmd.h5md import TrajectoryReader

        with TrajectoryReader(path) as r:
            if r.n_frames == 0:
                raise InputError(f"--ids-from {path}: the trajectory holds no frame, so no ids")
            return IdMap(path, r.ids.copy(), r.species.copy(), r.fixed_core, "trajectory")
    if path.suffix.lower() == ".json":
        return _ids_from_build_summary(path)
    return _ids_from_structure(path)


def _ids_from_build_summary(path: Path) -> IdMap:
    from ase.data import atomic_numbers

    try:
        summary = json.loads(path.read_text())
        rows = np.asarray(summary["poscar_ids"], dtype=np.int64)
        params = summary["parameters"]
        counts = {params["cation"]: int(params["n_cation"]), params["anion"]: int(params["n_anion"])}
        elements = list(summary["elements"])
        numbers = [atomic_numbers[e] for e in elements]
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(
            f"--ids-from {path}: not the JSON summary of `nlmd build` (cell.json with poscar_ids, elements and "
            f"parameters; {type(exc).__name__}: {exc})"
        ) from exc
    n = rows.size
    if sorted(rows.tolist()) != list(range(1, n + 1)) or sum(counts.values()) != n:
        raise InputError(f"--ids-from {path}: poscar_ids is not a permutation of the ids 1..{n} of the cell")
    species = np.empty(n, dtype=np.int32)
    # write_poscar's rows: the elements in this order, each in id order; poscar_ids[k] is the id of row k+1
    species[rows - 1] = np.repeat(numbers, [counts[e] for e in elements])
    core = None
    if "core_ids" in summary and "center_id" in summary:
        core = FixedCore(center_id=int(summary["center_id"]), rfix=float(params["rfix"]),
                         core_ids=np.asarray(summary["core_ids"], dtype=np.int64))
    return IdMap(path, np.arange(1, n + 1, dtype=np.int64), species, core, "nlmd build summary")


def _ids_from_structure(path: Path) -> IdMap:
    import ase.io
    from ase.io.formats import UnknownFileTypeError, filetype

    fmt = "lammps-data" if path.suffix.lower() in (".data", ".lmp") else None
    if fmt is None:
        try:
            fmt = filetype(str(path))
        except (UnknownFileTypeError, OSError, ValueError) as exc:
            raise InputError(f"--ids-from {path}: cannot tell the file format ({exc})") from exc
    if fmt == "vasp":
        raise InputError(
            f"--ids-from {path}: a POSCAR lists atoms element by element, not in id order; give the JSON "
            "summary `nlmd build` wrote beside it (cell.json), its .extxyz or .data file, or the model's "
            "trajectory file"
        )
    try:
        atoms = ase.io.read(path, index=0, format=fmt)
    except Exception as exc:  # noqa: BLE001 - any parser failure becomes one line for the user
        raise InputError(f"--ids-from {path}: ASE cannot read it as {fmt} ({type(exc).__name__}: {exc})") from exc
    n = len(atoms)
    ids = np.asarray(atoms.arrays["id"], dtype=np.int64) if "id" in atoms.arrays else np.arange(1, n + 1)
    if np.unique(ids).size != n:
        raise InputError(f"--ids-from {path}: the atom ids are not unique")
    core = fixed_core_of(atoms, path)
    if core is not None:  # fixed_core_of numbers atoms by row
        core = FixedCore(center_id=int(ids[core.center_id - 1]), rfix=core.rfix, core_ids=ids[core.core_ids - 1])
    order = np.argsort(ids, kind="stable")
    return IdMap(path, ids[order], atoms.numbers[order].astype(np.int32), core, fmt)


def _file_timestep(path: Path, images: list, fmt: str) -> float | None:
    """The MD time step (fs) the file carries, or None."""
    values = set()
    for atoms in images:
        value = _info_value(atoms, TIMESTEP_KEYS)
        if value is not None:
            values.add(float(value))
    if fmt.startswith("vasp") and not values:
        params = getattr(images[0].calc, "parameters", None) or {}
        ibrion, potim = params.get("ibrion"), params.get("potim")
        if ibrion is not None and int(ibrion) == 0 and potim:
            values.add(float(potim))
    if len(values) > 1:
        raise InputError(f"{path}: frames carry different time steps {sorted(values)} fs")
    return values.pop() if values else None


def _energy(atoms, free: bool) -> float | None:
    from ase.calculators.calculator import PropertyNotImplementedError

    if atoms.calc is None:
        return None
    try:
        return float(atoms.get_potential_energy(force_consistent=free))
    except (PropertyNotImplementedError, NotImplementedError, KeyError, RuntimeError):
        return None


def _forces(atoms) -> np.ndarray | None:
    from ase.calculators.calculator import PropertyNotImplementedError

    if atoms.calc is None:
        return None
    try:
        forces = atoms.get_forces(apply_constraint=False)  # raw DFT forces, fixed atoms included
    except (PropertyNotImplementedError, NotImplementedError, KeyError, RuntimeError):
        return None
    return None if forces is None else np.asarray(forces, dtype=np.float64)


def _per_atom_energies(atoms) -> np.ndarray | None:
    results = getattr(atoms.calc, "results", None) or {}
    value = results.get("energies")
    return None if value is None else np.asarray(value, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# importing
# --------------------------------------------------------------------------------------------------


@dataclass
class _FileFrames:
    path: Path
    fmt: str
    images: list
    indices: list[int]
    n_total: int


def import_files(
    files: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    format: str | None = None,
    index: str = ":",
    dt_fs: float | None = None,
    command: str | None = None,
    ids_from: str | os.PathLike | None = None,
    force: bool = True,
) -> ImportResult:
    """Import DFT frames from ``files`` (in order) into the trajectory file ``output``.

    ``format`` overrides ASE's detection for every file; ``index`` (ASE syntax, e.g. ``":"``,
    ``"-1"``, ``"10:200:5"``) selects frames in each file; ``dt_fs`` is the MD time step in fs when
    the files carry none; ``ids_from`` (a file :func:`load_id_map` reads, e.g. the model's trajectory or
    ``nlmd build``'s cell.json) gives the atoms its ids, rows then in id order. Raises
    :class:`~nlmd.errors.InputError` naming the file and frame for any bad input; ``output`` is then
    left untouched. An existing ``output`` is replaced only with ``force`` (the CLI's default is not to);
    it may never be one of the inputs.
    """
    from ase.units import fs as ase_fs

    paths = [Path(p) for p in files]
    if not paths:
        raise InputError("nlmd import needs at least one input file")
    output = Path(output)

    check_output(output, inputs=[*paths, *([ids_from] if ids_from is not None else [])], force=force,
                 make_parent=True)
    if dt_fs is not None and not (math.isfinite(dt_fs) and dt_fs > 0):
        raise InputError(f"--dt must be a positive number of fs, got {dt_fs}")

    idmap = load_id_map(ids_from) if ids_from is not None else None

    # read and check everything first (DFT outputs are small), then write
    read: list[_FileFrames] = []
    for path in paths:
        fmt = detect_format(path, format)
        images, indices, n_total = read_frames(path, fmt, index)
        read.append(_FileFrames(path, fmt, images, indices, n_total))

    first = read[0]
    ref = first.images[0]
    n_atoms = len(ref)
    numbers = ref.numbers.astype(np.int32)
    if n_atoms == 0:
        raise InputError(f"{first.path}: frame {first.indices[0]} holds no atoms")

    # time step: the file's, else --dt; all must agree
    dt_file: float | None = None
    for ff in read:
        dt = _file_timestep(ff.path, ff.images, ff.fmt)
        if dt is None:
            continue
        if dt_file is not None and not math.isclose(dt, dt_file, rel_tol=_DT_RTOL):
            raise InputError(f"{ff.path}: time step {dt} fs differs from {dt_file} fs of {read[0].path}")
        dt_file = dt
    if dt_file is not None and dt_fs is not None and not math.isclose(dt_file, dt_fs, rel_tol=_DT_RTOL):
        raise InputError(
            f"{first.path}: the file's time step is {dt_file} fs but --dt is {dt_fs} fs; drop --dt or fix the file"
        )
    dt = dt_file if dt_file is not None else dt_fs

    # forces, energies, species and atom counts of every frame
    checked: list[tuple[_FileFrames, int, Any, np.ndarray]] = []
    have_free, have_energy = True, True
    for ff in read:
        for atoms, i in zip(ff.images, ff.indices):
            where = f"{ff.path}: frame {i}"
            if len(atoms) != n_atoms:
                raise InputError(
                    f"{where} has {len(atoms)} atoms but {first.path} frame {first.indices[0]} has {n_atoms}; "
                    "every frame must hold the same atoms"
                )
            if not np.array_equal(atoms.numbers, numbers):
                k = int(np.flatnonzero(atoms.numbers != numbers)[0])
                raise InputError(
                    f"{where}: atom {k + 1} is {atoms.get_chemical_symbols()[k]} but was "
                    f"{ref.get_chemical_symbols()[k]} in {first.path} frame {first.indices[0]}; "
                    "species must not change"
                )
            forces = _forces(atoms)
            if forces is None:
                raise InputError(
                    f"{where} has no forces; nlmd import needs forces (the file must come from a "
                    "calculation that wrote them, e.g. VASP with forces in vasprun.xml/OUTCAR)"
                )
            if forces.shape != (n_atoms, 3):
                raise InputError(f"{where}: forces have shape {forces.shape}, expected ({n_atoms}, 3)")
            have_free = have_free and _energy(atoms, True) is not None
            have_energy = have_energy and _energy(atoms, False) is not None
            checked.append((ff, i, atoms, forces))

    # the fixed core, from the first file with fully fixed atoms; others must agree
    core: FixedCore | None = None
    core_file: Path | None = None
    for ff in read:
        c = fixed_core_of(ff.images[0], ff.path)
        if c is None:
            continue
        if core is None:
            core, core_file = c, ff.path
        elif not np.array_equal(c.core_ids, core.core_ids):
            raise InputError(
                f"{ff.path}: frame {ff.indices[0]}: fixed atoms differ from those of {core_file} "
                f"({c.core_ids.size} vs {core.core_ids.size} atoms)"
            )

    # atom ids: 1..N in file order, or those of --ids-from (rows then reordered by id)
    if idmap is None:
        row_ids = np.arange(1, n_atoms + 1, dtype=np.int64)
    else:
        row_ids = idmap.row_ids(numbers, f"{first.path}: frame {first.indices[0]}")
        if core is not None:
            core = _mapped_core(core, row_ids, idmap, core_file)
    order = np.argsort(row_ids, kind="stable")
    ids = row_ids[order]

    energy_kind = "free_energy" if have_free else ("energy" if have_energy else "none")
    if not have_energy and any(_energy(a, False) is not None for _, _, a, _ in checked):
        ff, i, _, _ = next(c for c in checked if _energy(c[2], False) is None)
        raise InputError(f"{ff.path}: frame {i} has no energy while other frames have one")
    with_velocities = all(a.has("momenta") for _, _, a, _ in checked)
    with_energies = all(_per_atom_energies(a) is not None for _, _, a, _ in checked)

    sources = sorted({SOURCES[ff.fmt] for ff in read})
    parameters: dict[str, Any] = {
        "source": "+".join(sources),
        "files": json.dumps([str(p) for p in paths]),
        "energy": energy_kind,
        "formats": json.dumps([ff.fmt for ff in read]),
        "index": str(index),
        "timestep_fs": float(dt) if dt is not None else float("nan"),
        "timestep_source": "file" if dt_file is not None else ("option" if dt_fs is not None else "none"),
    }
    if idmap is not None:
        parameters["ids_from"] = str(idmap.path)
    if command:
        parameters["command"] = command
    boundary = tuple("periodic" if p else "none" for p in ref.pbc)

    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        # created by HDF5 itself under a unique name beside the output, so it gets the user's usual permissions
        with atomic_path(output) as tmp, TrajectoryWriter(
            tmp, parameters=parameters, fixed_core=core, boundary=boundary, flush_every=64
        ) as writer:
            offset = 0
            current: _FileFrames | None = None
            for ff, i, atoms, forces in checked:
                if current is not ff:
                    if current is not None:
                        offset += current.n_total
                    current = ff
                step = offset + i
                obs: dict[str, float] = {}
                if energy_kind != "none":
                    obs["potential_energy"] = _energy(atoms, energy_kind == "free_energy")  # type: ignore[assignment]
                velocities = None
                if with_velocities:
                    velocities = atoms.get_velocities()[order] * (ase_fs * 1000.0)  # ASE units -> Angstrom/ps
                writer.write(
                    Frame(
                        step=step,
                        time=step * dt * 1e-3 if dt is not None else float("nan"),
                        box=np.asarray(atoms.cell.array, dtype=np.float64),
                        ids=ids,
                        species=numbers[order],
                        positions=np.asarray(atoms.positions, dtype=np.float64)[order],
                        forces=forces[order],
                        velocities=velocities,
                        energies=_per_atom_energies(atoms)[order] if with_energies else None,
                        observables=obs,
                    )
                )
            n_frames = writer.n_written
    except DiskFullError as exc:
        raise disk_full_instead(exc, output) from exc
    return ImportResult(
        output=output,
        files=paths,
        n_frames=n_frames,
        n_atoms=n_atoms,
        source=parameters["source"],
        energy=energy_kind,
        timestep_fs=dt,
        fixed_core=core,
        frames_per_file=[len(ff.indices) for ff in read],
        ids_from=None if idmap is None else idmap.path,
    )


def _mapped_core(core: FixedCore, row_ids: np.ndarray, idmap: IdMap, core_file: Path | None) -> FixedCore:
    """The fixed core found in a DFT file (rows numbered 1..N) in the ids of ``idmap``.

    When the reference describes a core, the fixed atoms must be exactly its atoms; its centre and R_fix
    (the builder's, not a lower bound) are then kept.
    """
    mapped = FixedCore(center_id=int(row_ids[core.center_id - 1]), rfix=core.rfix,
                       core_ids=row_ids[core.core_ids - 1])
    ref = idmap.fixed_core
    if ref is None:
        return mapped
    if not np.array_equal(mapped.core_ids, ref.core_ids):
        extra = np.setdiff1d(mapped.core_ids, ref.core_ids)
        missing = np.setdiff1d(ref.core_ids, mapped.core_ids)
        example = f"id {extra[0]} is fixed but not in its core" if extra.size else f"id {missing[0]} of its core is not fixed"
        raise InputError(
            f"{core_file}: with the ids of {idmap.path} the fixed atoms ({mapped.core_ids.size}) are not its fixed "
            f"core ({ref.core_ids.size} atoms; {example}); the DFT file must list the atoms of each element in "
            "id order, as the POSCAR of `nlmd build` does"
        )
    return FixedCore(center_id=ref.center_id, rfix=ref.rfix, core_ids=ref.core_ids)
