"""Energy, forces, stress and per-atom energies of structures through LAMMPS with a potential directory.

One LAMMPS instance is set up once and re-used for every structure with the same number of atoms:
only positions, types and the box change between evaluations (``scatter_atoms`` + ``change_box`` +
``run 0``), so evaluating many frames costs little beyond the force field itself. Atoms may move any
distance from one structure to the next, also on several MPI ranks (``change_box`` migrates them).

Cells of any shape are supported: LAMMPS needs a lower-triangular cell, so positions are rotated into
LAMMPS's frame (ASE's ``Prism``) and forces and stress are rotated back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nlmd.errors import InputError

#: 1 bar in eV/Angstrom^3
BAR_TO_EV_A3 = 1e5 / 1.602176634e-19 * 1e-30


@dataclass
class Evaluation:
    """Results for one structure, rows in the order of the input atoms."""

    energy: float  # eV
    forces: np.ndarray  # (N,3) eV/Angstrom
    energies: np.ndarray  # (N,) eV, per-atom potential energy
    stress: np.ndarray  # (3,3) eV/Angstrom^3, ASE sign convention (positive = tensile)


class LammpsEvaluator:
    """Evaluate a potential directory on structures; use as a context manager.

    ``elements`` fixes the LAMMPS atom types (type i+1 is ``elements[i]``); by default the elements of
    the first structure in order of atomic number.
    """

    def __init__(self, potential: str | Path, elements: Sequence[str] | None = None, *, comm=None,
                 log: str | Path | None = None):
        from nlmd.potentials import PotentialDirectory

        self.potential = PotentialDirectory.load(potential)
        self.elements = list(elements) if elements is not None else None
        self.comm = comm
        self._log = log
        self._ctx = None
        self._lmp = None
        self._natoms = None
        self._types = None

    def __enter__(self) -> "LammpsEvaluator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = self._lmp = None

    def _setup(self, symbols: Sequence[str], n_atoms: int, prism) -> None:
        from nlmd.runtime import commands, open_lammps

        if self.elements is None:
            from ase.data import atomic_numbers

            self.elements = sorted(set(symbols), key=lambda s: atomic_numbers[s])
        missing = sorted(set(symbols) - set(self.elements))
        if missing:
            raise InputError(f"the structure contains {', '.join(missing)}, not in the element list {self.elements}")
        self._ctx = open_lammps(self.comm, log=self._log)
        self._lmp = self._ctx.__enter__()
        xhi, yhi, zhi, xy, xz, yz = (float(v) for v in prism.get_lammps_prism())
        masses = "\n".join(f"mass {i + 1} {_mass(s)}" for i, s in enumerate(self.elements))
        labels = " ".join(f"{i + 1} {s}" for i, s in enumerate(self.elements))
        commands(
            self._lmp,
            f"""
            units metal
            atom_style {self.potential.atom_style}
            atom_modify map yes sort 0 0.0
            boundary p p p
            region cell prism 0 {xhi!r} 0 {yhi!r} 0 {zhi!r} {xy!r} {xz!r} {yz!r} units box
            create_box {len(self.elements)} cell
            labelmap atom {labels}
            {masses}
            variable potential string {self.potential.path}
            variable elements string "{' '.join(self.elements)}"
            """,
            where="nlmd evaluate setup",
        )
        self._natoms = n_atoms

    def evaluate(self, atoms) -> Evaluation:
        """Evaluate an ``ase.Atoms`` (periodic in all three directions)."""
        from ase.calculators.lammps.coordinatetransform import Prism

        from nlmd.runtime import commands

        symbols = atoms.get_chemical_symbols()
        n = len(atoms)
        prism = Prism(np.asarray(atoms.cell))
        if self._lmp is None:
            self._setup(symbols, n, prism)
            first = True
        else:
            if n != self._natoms:
                raise InputError(f"this evaluator was set up for {self._natoms} atoms, got a structure with {n}")
            first = False
        lmp = self._lmp
        types = np.array([self.elements.index(s) + 1 for s in symbols], dtype=np.int32)
        frac = atoms.cell.scaled_positions(atoms.positions) % 1.0
        x = prism.vector_to_lammps(frac @ np.asarray(atoms.cell), wrap=False)
        xhi, yhi, zhi, xy, xz, yz = (float(v) for v in prism.get_lammps_prism())
        if first:
            ids = np.arange(1, n + 1, dtype=np.int64)
            lmp.create_atoms(n, ids.tolist(), types.tolist(), x.ravel().tolist())
            if lmp.get_natoms() != n:
                raise InputError(f"LAMMPS created {lmp.get_natoms()} of {n} atoms (atoms outside the cell?)")
            commands(
                lmp,
                f"""
                include {self.potential.pair_file}
                compute nlmd_pe_atom all pe/atom
                compute nlmd_virial all pressure NULL virial
                thermo_style custom step pe c_nlmd_virial[*]
                thermo_modify norm no
                run 0 post no
                """,
                where=f"potential {self.potential.path}",
            )
        else:
            # The new box first (change_box wraps the atoms, still at their old places, into the box it
            # starts from), then types and positions, then change_box again with the same box: it wraps
            # every atom into it and hands it to the rank that owns its new place (irregular
            # communication), so atoms may move any distance between structures, on any number of ranks.
            box = (f"change_box all x final 0 {xhi!r} y final 0 {yhi!r} z final 0 {zhi!r} "
                   f"xy final {xy!r} xz final {xz!r} yz final {yz!r} units box")
            commands(lmp, box, where="nlmd evaluate")
            retype = not np.array_equal(types, self._types)
            if retype:
                lmp.scatter_atoms("type", 0, 1, np.ctypeslib.as_ctypes(types))
            lmp.scatter_atoms("x", 1, 3, np.ctypeslib.as_ctypes(np.ascontiguousarray(x, dtype=np.float64).ravel()))
            commands(lmp, f"change_box all x final 0 {xhi!r} units box", where="nlmd evaluate")
            if retype and self.potential.atom_style != "atomic":
                # per-type properties (charges) are set by pair.lmp with `set type`: set them again
                commands(lmp, f"include {self.potential.pair_file}", where=f"potential {self.potential.path}")
            commands(lmp, "run 0 post no", where=f"potential {self.potential.path}")
        self._types = types
        energy = float(lmp.get_thermo("pe"))
        f = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3).copy()
        e_atom = np.asarray(lmp.gather("c_nlmd_pe_atom", 1, 1), dtype=float).reshape(n).copy()
        # pressure tensor (virial only) in bar, LAMMPS frame: xx yy zz xy xz yz
        p = [float(lmp.extract_compute("nlmd_virial", 0, 1)[i]) for i in range(6)]
        p_lmp = np.array([[p[0], p[3], p[4]], [p[3], p[1], p[5]], [p[4], p[5], p[2]]])
        stress = -prism.tensor2_to_ase(p_lmp) * BAR_TO_EV_A3
        return Evaluation(energy=energy, forces=prism.vector_to_ase(f), energies=e_atom, stress=stress)


def _mass(symbol: str) -> float:
    from ase.data import atomic_masses, atomic_numbers

    return float(atomic_masses[atomic_numbers[symbol]])
