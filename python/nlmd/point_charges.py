"""The paper's toy model (Kang 2024, section 2.1 and Methods 5.1): point charges with pure Coulomb forces.

A configuration is a 10 x 10 x (24 + d) A region holding a +1e particle at (5, 5, 12) and a -1e particle at
(5, 5, 12 + d) (region coordinates), and 120 + 5d particles each of +0.5e and -0.5e placed at random in
the region with no two particles closer than :data:`MIN_DISTANCE`. The region sits in a cell with
:data:`VACUUM` of empty space on every side, and the structure is not periodic (``pbc`` False): every
pair interacts once, through the bare Coulomb sum of ``potentials/point-charges-coulomb``.

Three types are made from the *same* random particles (:func:`build_point_charges`):

- ``I``: both +1e and -1e;
- ``II``: no -1e (so I - II isolates the -1e particle's contribution, the paper's probe);
- ``III``: no +1e (training only).

The four charges are carried by four element labels, :data:`SPECIES`: Rf (+1e), Db (-1e), Sg (+0.5e) and
Bh (-0.5e), the transactinides 104-107. They are synthetic elements with half-lives of seconds or less:
no materials database (the Materials Project data behind SevenNet-0 stops at Pu, Z = 94) and no
structure a user might load contains them, so a toy-model label can never be taken for a real atom, and
a real structure can never be labelled with toy charges by mistake. They are consecutive, so their order
by atomic number is the order of the table above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nlmd.errors import InputError

__all__ = ["SPECIES", "CHARGES", "COULOMB_K", "PointChargeCell", "build_point_charges", "n_random",
           "charges_of"]

#: element label -> charge (e), in order of atomic number
SPECIES: dict[str, float] = {"Rf": 1.0, "Db": -1.0, "Sg": 0.5, "Bh": -0.5}
PLUS, MINUS, HALF_PLUS, HALF_MINUS = SPECIES
CHARGES = SPECIES
#: Coulomb constant in LAMMPS metal units (eV Angstrom / e^2), LAMMPS's qqr2e
COULOMB_K = 14.399645

REGION_XY = 10.0  # A, the region's x and y sides
REGION_Z0 = 24.0  # A, the region's z side is REGION_Z0 + d
PLUS_AT = (5.0, 5.0, 12.0)  # the +1e particle in region coordinates; -1e at PLUS_AT + (0, 0, d)
MIN_DISTANCE = 1.5  # A, between any two particles
VACUUM = 6.0  # A on every side (more than the 5 A cutoff of the paper's models)
TYPES = ("I", "II", "III")
#: random trials per particle before the request is called impossible
MAX_TRIALS = 20000


def n_random(d: float) -> int:
    """Particles of each half charge (+0.5e and -0.5e) in a configuration with separation ``d``."""
    return int(round(120 + 5 * d))


@dataclass
class PointChargeCell:
    """One random configuration and its three types (ASE ``Atoms``, not periodic)."""

    d: float
    seed: int
    types: dict  # "I" / "II" / "III" -> ase.Atoms

    @property
    def plus_index(self) -> int:
        """Row of the +1e particle in types I and II (0)."""
        return 0


def charges_of(atoms) -> np.ndarray:
    """Per-atom charges (e) of a point-charge structure, from its element labels."""
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(SPECIES))
    if unknown:
        raise InputError(f"the structure holds {', '.join(unknown)}, not a point-charge species "
                         f"({', '.join(f'{s} {q:+g}e' for s, q in SPECIES.items())})")
    return np.array([SPECIES[s] for s in symbols])


def build_point_charges(d: float, seed: int, *, min_distance: float = MIN_DISTANCE,
                        n_half: int | None = None) -> PointChargeCell:
    """The three types of one random configuration with the ±1e pair ``d`` apart (Angstrom).

    Rows: the +1e particle (types I, II), the -1e particle (types I, III), then the +0.5e particles, then
    the -0.5e particles (in the order they were placed). ``n_half`` overrides 120 + 5d (tests only).
    """
    from ase import Atoms

    d = float(d)
    if not np.isfinite(d) or d < min_distance:
        raise InputError(f"d = {d:g} A: the +1e and -1e particles must be at least {min_distance:g} A apart "
                         "(the minimum distance between particles)")
    if d > PLUS_AT[2] + REGION_Z0:
        raise InputError(f"d = {d:g} A is beyond any sensible test (the cell grows with d); expected d <= 36 A")
    n = n_random(d) if n_half is None else int(n_half)
    if n < 0:
        raise InputError(f"n_half = {n}: expected a non-negative number of particles")
    region = np.array([REGION_XY, REGION_XY, REGION_Z0 + d])
    fixed = np.array([PLUS_AT, (PLUS_AT[0], PLUS_AT[1], PLUS_AT[2] + d)])
    rng = np.random.default_rng(seed)
    placed = np.empty((2 + 2 * n, 3))
    placed[:2] = fixed
    k = 2
    min2 = min_distance ** 2
    while k < 2 + 2 * n:
        for _ in range(MAX_TRIALS):
            trial = rng.random(3) * region
            if ((placed[:k] - trial) ** 2).sum(axis=1).min() >= min2:
                placed[k] = trial
                k += 1
                break
        else:
            raise InputError(
                f"d = {d:g} A, seed {seed}: could not place particle {k - 1} of {2 * n} at random in the "
                f"{region[0]:g} x {region[1]:g} x {region[2]:g} A region with {min_distance:g} A between particles "
                f"after {MAX_TRIALS} trials (too many particles for the region)")
    positions = placed + VACUUM
    cell = np.diag(region + 2 * VACUUM)
    symbols = [PLUS, MINUS] + [HALF_PLUS] * n + [HALF_MINUS] * n
    keep = {"I": slice(None), "II": np.r_[0, 2:2 + 2 * n], "III": np.r_[1:2 + 2 * n]}
    types = {}
    for name, rows in keep.items():
        idx = np.arange(len(symbols))[rows]
        atoms = Atoms(symbols=[symbols[i] for i in idx], positions=positions[idx], cell=cell, pbc=False)
        atoms.info.update({"point_charges_type": name, "d": d, "seed": int(seed)})
        types[name] = atoms
    return PointChargeCell(d=d, seed=int(seed), types=types)
