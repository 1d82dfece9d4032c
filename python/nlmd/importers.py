"""DFT outputs -> nlmd trajectory file: the engine of ``nlmd import``.

Every format is read through :func:`ase.io.read` (nlmd has no parsers of its own); the frames become
:class:`nlmd.h5md.Frame` objects written by :class:`nlmd.h5md.TrajectoryWriter`.

Conventions (also in docs/trajectory-file.md):

- atoms keep the order of the file and get ids 1..N; species are atomic numbers;
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
  to a fixed atom, a *lower bound* of the R_fix the core was cut with. ``info["center_id"]`` (1-based)
  and ``info["rfix"]`` in the file override the two;
- the output is written to a temporary file in the same directory and renamed at the end, so an error
  leaves nothing half-written.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nlmd.errors import InputError
from nlmd.h5md import FixedCore, Frame, TrajectoryWriter

__all__ = ["SOURCES", "ImportResult", "detect_format", "read_frames", "fixed_core_of", "import_files"]

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

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (the content of ``<output>.summary.json``)."""
        core = None
        if self.fixed_core is not None:
            core = {
                "center_id": self.fixed_core.center_id,
                "rfix": self.fixed_core.rfix,
                "n_core": int(self.fixed_core.core_ids.size),
            }
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
) -> ImportResult:
    """Import DFT frames from ``files`` (in order) into the trajectory file ``output``.

    ``format`` overrides ASE's detection for every file; ``index`` (ASE syntax, e.g. ``":"``,
    ``"-1"``, ``"10:200:5"``) selects frames in each file; ``dt_fs`` is the MD time step in fs when
    the files carry none. Raises :class:`~nlmd.errors.InputError` naming the file and frame for any
    bad input; ``output`` is then left untouched.
    """
    from ase.units import fs as ase_fs

    paths = [Path(p) for p in files]
    if not paths:
        raise InputError("nlmd import needs at least one input file")
    output = Path(output)
    if dt_fs is not None and not (math.isfinite(dt_fs) and dt_fs > 0):
        raise InputError(f"--dt must be a positive number of fs, got {dt_fs}")

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
    if command:
        parameters["command"] = command
    boundary = tuple("periodic" if p else "none" for p in ref.pbc)

    ids = np.arange(1, n_atoms + 1, dtype=np.int64)
    output.parent.mkdir(parents=True, exist_ok=True)
    # a unique hidden name beside the output (same file system, so the final rename is atomic); created
    # by HDF5 itself so the file gets the user's usual permissions
    tmp = output.with_name(f".{output.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        with TrajectoryWriter(
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
                    velocities = atoms.get_velocities() * (ase_fs * 1000.0)  # ASE units -> Angstrom/ps
                writer.write(
                    Frame(
                        step=step,
                        time=step * dt * 1e-3 if dt is not None else float("nan"),
                        box=np.asarray(atoms.cell.array, dtype=np.float64),
                        ids=ids,
                        species=numbers,
                        positions=np.asarray(atoms.positions, dtype=np.float64),
                        forces=forces,
                        velocities=velocities,
                        energies=_per_atom_energies(atoms) if with_energies else None,
                        observables=obs,
                    )
                )
            n_frames = writer.n_written
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
    )
