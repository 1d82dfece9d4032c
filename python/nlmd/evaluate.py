"""Energy, forces, stress and per-atom energies of structures through LAMMPS with a potential directory.

One LAMMPS instance is set up once and re-used for every structure with the same number of atoms:
only positions, types and the box change between evaluations (``scatter_atoms`` + ``change_box`` +
``run 0``), so evaluating many frames costs little beyond the force field itself. Atoms may move any
distance from one structure to the next, also on several MPI ranks (``change_box`` migrates them).

Cells of any shape are supported: LAMMPS needs a lower-triangular cell, so positions are rotated into
LAMMPS's frame (ASE's ``Prism``) and forces and stress are rotated back.

Structures periodic in no direction (``atoms.pbc`` all False: clusters, the point-charge toy model) are
evaluated in a ``boundary f f f`` box around the atoms (their bounding box, padded by :data:`PAD`), with no
periodic images; their stress is undefined and reported as NaN. One evaluator takes one kind: all periodic
or all non-periodic. A potential directory whose manifest says ``"periodic": false`` (an exact sum over
all pairs, such as ``potentials/point-charges-coulomb``) refuses periodic structures, and one with
``"max_extent_A"`` refuses structures with two atoms farther apart than that (its cutoff).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from ase.units import bar as BAR_TO_EV_A3  # 1 bar in eV/Angstrom^3 (LAMMPS metal pressure -> ASE stress)

from nlmd.errors import InputError
from nlmd.potential_dir import PotentialDirectory

#: Angstrom of empty space between a non-periodic structure's atoms and its LAMMPS box
PAD = 2.0


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
        self.potential = PotentialDirectory.load(potential)
        self.elements = list(elements) if elements is not None else None
        self.comm = comm
        self._log = log
        self._ctx = None
        self._lmp = None
        self._natoms = None
        self._types = None
        self._periodic: bool | None = None
        self._bounds: np.ndarray | None = None  # (3, 2) box of a non-periodic evaluator

    def __enter__(self) -> "LammpsEvaluator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = self._lmp = None

    def _setup(self, symbols: Sequence[str], n_atoms: int, prism, bounds: np.ndarray | None) -> None:
        from nlmd.runtime import commands, open_lammps

        if self.elements is None:
            from ase.data import atomic_numbers

            self.elements = sorted(set(symbols), key=lambda s: atomic_numbers[s])
        missing = sorted(set(symbols) - set(self.elements))
        if missing:
            raise InputError(f"the structure contains {', '.join(missing)}, not in the element list {self.elements}")
        self._ctx = open_lammps(self.comm, log=self._log)
        self._lmp = self._ctx.__enter__()
        if bounds is None:
            xhi, yhi, zhi, xy, xz, yz = (float(v) for v in prism.get_lammps_prism())
            box = f"boundary p p p\nregion cell prism 0 {xhi!r} 0 {yhi!r} 0 {zhi!r} {xy!r} {xz!r} {yz!r} units box"
        else:
            box = f"boundary f f f\nregion cell block {' '.join(repr(float(v)) for v in bounds.ravel())} units box"
        masses = "\n".join(f"mass {i + 1} {_mass(s)}" for i, s in enumerate(self.elements))
        labels = " ".join(f"{i + 1} {s}" for i, s in enumerate(self.elements))
        commands(
            self._lmp,
            f"""
            units metal
            atom_style {self.potential.atom_style}
            atom_modify map yes sort 0 0.0
            {box}
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
        """Evaluate an ``ase.Atoms``, periodic in all three directions or in none."""
        from ase.calculators.lammps.coordinatetransform import Prism

        symbols = atoms.get_chemical_symbols()
        n = len(atoms)
        periodic = self._check_structure(atoms)
        prism = Prism(np.asarray(atoms.cell)) if periodic else None
        bounds = None if periodic else _bounds(atoms.positions)
        if self._lmp is None:
            self._setup(symbols, n, prism, bounds)
            self._periodic = periodic
        elif n != self._natoms:
            raise InputError(f"this evaluator was set up for {self._natoms} atoms, got a structure with {n}")
        types = np.array([self.elements.index(s) + 1 for s in symbols], dtype=np.int32)
        if periodic:
            frac = atoms.cell.scaled_positions(atoms.positions) % 1.0
            x = prism.vector_to_lammps(frac @ np.asarray(atoms.cell), wrap=False)
        else:
            x = np.asarray(atoms.positions, dtype=np.float64)
        self._place(types, x, prism, bounds)
        lmp = self._lmp
        energy = float(lmp.get_thermo("pe"))
        f = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3).copy()
        e_atom = np.asarray(lmp.gather("c_nlmd_pe_atom", 1, 1), dtype=float).reshape(n).copy()
        if not periodic:  # no cell, no stress
            return Evaluation(energy=energy, forces=f, energies=e_atom, stress=np.full((3, 3), np.nan))
        # pressure tensor (virial only) in bar, LAMMPS frame: xx yy zz xy xz yz
        p = [float(lmp.extract_compute("nlmd_virial", 0, 1)[i]) for i in range(6)]
        p_lmp = np.array([[p[0], p[3], p[4]], [p[3], p[1], p[5]], [p[4], p[5], p[2]]])
        stress = -prism.tensor2_to_ase(p_lmp) * BAR_TO_EV_A3
        return Evaluation(energy=energy, forces=prism.vector_to_ase(f), energies=e_atom, stress=stress)

    def _check_structure(self, atoms) -> bool:
        """Whether ``atoms`` is periodic; refuses what this evaluator or the potential cannot evaluate."""
        pbc = np.asarray(atoms.pbc, dtype=bool)
        if pbc.any() and not pbc.all():
            raise InputError(f"the structure is periodic along {''.join('xyz'[i] for i in np.flatnonzero(pbc))} only; "
                             "nlmd evaluates structures periodic in all three directions or in none")
        periodic = bool(pbc.all())
        manifest = self.potential.manifest
        if periodic and manifest.get("periodic", True) is False:
            raise InputError(f"{self.potential.path}: this potential sums over all pairs without periodic images "
                             "(manifest: \"periodic\": false); give it non-periodic structures (pbc False)")
        if self._periodic is not None and periodic != self._periodic:
            kind = "periodic" if self._periodic else "non-periodic"
            raise InputError(f"this evaluator was set up for {kind} structures; use one evaluator per kind")
        limit = manifest.get("max_extent_A")
        if limit is not None and not periodic and len(atoms) > 1:
            extent = float(np.linalg.norm(np.ptp(atoms.positions, axis=0)))
            if extent > float(limit):
                raise InputError(f"{self.potential.path}: the structure spans {extent:.1f} A, beyond this potential's "
                                 f"cutoff of {float(limit):g} A (manifest: max_extent_A); pairs farther apart "
                                 "would be left out")
        return periodic

    def _place(self, types: np.ndarray, x: np.ndarray, prism, bounds: np.ndarray | None) -> None:
        """Put the structure into LAMMPS (first call: create the atoms and the pair style) and ``run 0``."""
        from nlmd.runtime import commands

        lmp = self._lmp
        n = len(types)
        if self._types is None:
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
            self._types = types
            self._bounds = bounds
            return
        if prism is not None:
            # The new box first (change_box wraps the atoms, still at their old places, into the box it
            # starts from), then types and positions, then change_box again with the same box: it wraps
            # every atom into it and hands it to the rank that owns its new place (irregular
            # communication), so atoms may move any distance between structures, on any number of ranks.
            xhi, yhi, zhi, xy, xz, yz = (float(v) for v in prism.get_lammps_prism())
            box = (f"change_box all x final 0 {xhi!r} y final 0 {yhi!r} z final 0 {zhi!r} "
                   f"xy final {xy!r} xz final {xz!r} yz final {yz!r} units box")
            final = f"change_box all x final 0 {xhi!r} units box"
        else:
            # Without periodic images an atom outside the box is lost: first a box holding both the old and
            # the new places, then the new places, then the new box (which also migrates the atoms).
            both = np.column_stack([np.minimum(self._bounds[:, 0], bounds[:, 0]),
                                    np.maximum(self._bounds[:, 1], bounds[:, 1])])
            box = _block_box(both)
            final = _block_box(bounds)
            self._bounds = bounds
        commands(lmp, box, where="nlmd evaluate")
        retype = not np.array_equal(types, self._types)
        if retype:
            lmp.scatter_atoms("type", 0, 1, np.ctypeslib.as_ctypes(types))
        lmp.scatter_atoms("x", 1, 3, np.ctypeslib.as_ctypes(np.ascontiguousarray(x, dtype=np.float64).ravel()))
        commands(lmp, final, where="nlmd evaluate")
        if retype and self.potential.atom_style != "atomic":
            # per-type properties (charges) are set by pair.lmp with `set type`: set them again
            commands(lmp, f"include {self.potential.pair_file}", where=f"potential {self.potential.path}")
        commands(lmp, "run 0 post no", where=f"potential {self.potential.path}")
        self._types = types


def _bounds(positions: np.ndarray) -> np.ndarray:
    """(3, 2) lower and upper box bounds around non-periodic atoms, :data:`PAD` from the outermost."""
    pos = np.asarray(positions, dtype=np.float64)
    return np.column_stack([pos.min(axis=0) - PAD, pos.max(axis=0) + PAD])


def _block_box(bounds: np.ndarray) -> str:
    return "change_box all " + " ".join(f"{a} final {lo!r} {hi!r}" for a, (lo, hi) in
                                        zip("xyz", bounds.tolist())) + " units box"


def _mass(symbol: str) -> float:
    from ase.data import atomic_masses, atomic_numbers

    return float(atomic_masses[atomic_numbers[symbol]])
