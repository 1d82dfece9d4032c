"""The fixed-core cells of Kang (2024) and their writers (LAMMPS data, extxyz, POSCAR).

This module is the one implementation of the cell used by every nlmd command and test: a centre atom
at the box centre; every site of a crystal anchored on it closer than R_fix occupied as in the crystal
(the *core*); the remaining atoms of each element placed at random in the rest of the cell.
:func:`build_crystal_core_cell` takes the crystal as a parameter (any ASE ``bulk`` structure: ``fcc``,
``bcc``, ``hcp``, ``rocksalt``, ``zincblende``, ...; the paper's Sr metal is fcc, 96 Sr in a 17.29 Å
cube); :func:`build_fixed_core_cell` is the rocksalt case with the paper's SrO test cell as defaults
(a 13.63 Å cube with 72 Sr + 72 O, a = 5.20 Å). Both run the same placement and the same checks.

Rules, all checked here and documented in docs/experiment.md:

* **Core.** The sites are those of the crystal translated so that one of its atoms (the first of the
  centre's element in ASE's basis) sits at the centre. For rocksalt they are ``centre + (a/2)·(i, j, k)``
  for integers i, j, k (computed so, exactly); a site belongs to the centre's sublattice when
  ``i + j + k`` is even. For other crystals they are basis + lattice translations of ASE's primitive cell.
  A site is in the core when its distance to the
  centre is below ``rfix - SITE_TOL`` (strictly closer than R_fix; a site within ``SITE_TOL`` = 1e-6 Å
  of the sphere counts as *on* it, i.e. outside, so that round-off never decides which shell is in).
* **Random atoms** lie at a minimum-image distance of at least ``rfix`` from the centre (outside the
  R_fix sphere, so the interstitial holes of the core stay empty) and at least ``min_dist`` from every
  other atom, periodic images included. They are placed by random sequential addition, all cations
  first, then all anions, each atom from at most ``max_tries`` uniform trial positions drawn from
  ``numpy.random.default_rng(seed)``: the cell is a pure function of its parameters. (For a crystal
  of more than two elements: element by element in LAMMPS type order.)
* **The core fits** when ``2·rfix + min_dist <= box``: every core atom is then at least ``min_dist``
  from every periodic image of every other core atom (two core atoms are closer than ``rfix`` to the
  centre, so their images are at least ``box - 2·rfix`` apart), and no periodic image of a core atom
  comes within ``rfix`` of the centre, so what the centre atom sees inside R_fix is exactly the crystal.
  ``min_dist`` may not exceed the nearest-neighbour distance of the core itself (``a/2`` for rocksalt,
  ``a/√2`` for fcc).
* **Composition.** Each element's total count must be at least its number of core atoms.

Atom order (= LAMMPS atom ids 1..N = ASE index + 1):

1. the centre atom (id 1);
2. the other core atoms, shell by shell (increasing distance from the centre; within a shell sorted by
   the site vector's x, then y, then z: for rocksalt the integer vector (i, j, k)), so the core is
   ids 1..n_core;
3. the mobile atoms element by element in LAMMPS type order (rocksalt: cations, then anions), in the
   order they were placed.

VASP needs the atoms grouped by element, so :func:`write_poscar` writes them element by element in
type order (each group in id order); :func:`poscar_ids` gives the atom id of every POSCAR row.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nlmd.errors import InputError
from nlmd.outputs import atomic_write, write_text

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

#: LAMMPS atom-type order of the SrO inputs: type 1 = Sr, type 2 = O.
DEFAULT_ELEMENTS: tuple[str, str] = ("Sr", "O")

#: The paper's parameters (Kang 2024, SrO test cell).
PAPER_RFIX = 5.82  # Å; the paper also uses 3.68 and 2.61
PAPER_RFIX_VALUES: tuple[float, ...] = (2.61, 3.68, 5.82)
PAPER_BOX = 13.63  # Å, cubic
PAPER_LATTICE = 5.20  # Å, rocksalt conventional cell
PAPER_N_EACH = 72  # Sr and O
PAPER_MIN_DIST = 1.5  # Å

#: Sites within SITE_TOL (Å) of the R_fix sphere count as on it (outside the core).
SITE_TOL = 1.0e-6

#: Random sequential addition of equal hard spheres jams at a volume fraction of about 0.384
#: (Feder 1980; Torquato, Uche & Stillinger 2006). Requests above it cannot succeed, so they are
#: refused at once instead of spending ``max_tries`` per atom.
RSA_JAMMING_FRACTION = 0.38

#: Default number of random trial positions per atom before the build gives up.
DEFAULT_MAX_TRIES = 20000

_BATCH = 64  # trial positions drawn (and tested with numpy) at once

#: ASE ``bulk`` crystal structures a fixed-core cell can be made of -> number of elements they take
CRYSTALS: dict[str, int] = {
    "sc": 1, "fcc": 1, "bcc": 1, "hcp": 1, "diamond": 1,
    "rocksalt": 2, "cesiumchloride": 2, "zincblende": 2, "wurtzite": 2, "fluorite": 2,
}


def element_order(cation: str = DEFAULT_ELEMENTS[0], anion: str = DEFAULT_ELEMENTS[1]) -> list[str]:
    """Element symbols in LAMMPS atom-type order for a rocksalt cell: ``[cation, anion]`` (type 1, 2).

    nlmd's inputs define ``variable elements string "Sr O"`` and ``labelmap atom 1 Sr 2 O`` in this
    order; the data files written here use it too.
    """
    return [cation, anion]


@dataclass(frozen=True)
class FixedCoreCell:
    """A fixed-core cell: the atoms, which of them form the crystalline core, and how it was built.

    ``atoms`` carries a ``FixAtoms`` constraint on the core, a boolean per-atom array ``"core"`` and the
    build parameters in ``atoms.info``. Atom ids are ``index + 1`` (see the module docstring for the
    order); ``center_id`` is always 1 and ``core_ids`` is ``1..n_core``.
    """

    atoms: "Atoms"
    center_id: int
    core_ids: np.ndarray
    rfix: float
    box: float
    a: float
    #: element symbols in LAMMPS type order (rocksalt: cation, anion)
    species: tuple[str, ...]
    #: total number of atoms of each element of ``species`` (core + random)
    counts: tuple[int, ...]
    center: str
    min_dist: float
    seed: int
    max_tries: int
    #: smallest minimum-image distance between any two atoms of the cell (Å)
    closest_pair: float = field(default=math.nan)
    #: ASE ``bulk`` crystal structure name of the core
    crystal: str = "rocksalt"
    #: c (Å) of a non-cubic crystal (hcp, wurtzite), else None
    c: float | None = None

    @property
    def elements(self) -> list[str]:
        """Element symbols in LAMMPS type order (rocksalt: ``[cation, anion]``)."""
        return list(self.species)

    @property
    def cation(self) -> str:
        return self.species[0]

    @property
    def anion(self) -> str:
        return self.species[1]

    @property
    def n_cation(self) -> int:
        return self.counts[0]

    @property
    def n_anion(self) -> int:
        return self.counts[1]

    @property
    def n_atoms(self) -> int:
        return len(self.atoms)

    @property
    def n_core(self) -> int:
        return int(self.core_ids.size)

    @property
    def core_mask(self) -> np.ndarray:
        """Boolean per atom (ASE index order): True for the core atoms, the centre included."""
        mask = np.zeros(self.n_atoms, dtype=bool)
        mask[self.core_ids - 1] = True
        return mask

    @property
    def mobile_ids(self) -> np.ndarray:
        """Atom ids (np.int64) of the atoms outside the core."""
        return np.arange(self.n_core + 1, self.n_atoms + 1, dtype=np.int64)

    @property
    def center_position(self) -> np.ndarray:
        return self.atoms.positions[self.center_id - 1].copy()

    def core_composition(self) -> dict[str, int]:
        """Number of core atoms of each element."""
        symbols = np.array(self.atoms.get_chemical_symbols())[self.core_ids - 1]
        return {el: int(np.count_nonzero(symbols == el)) for el in self.elements}

    def parameters(self) -> dict[str, Any]:
        """The build parameters. A rocksalt cell: the keywords of :func:`build_fixed_core_cell`; any
        other crystal: those of :func:`build_crystal_core_cell`. Either call rebuilds this cell."""
        if self.crystal == "rocksalt":
            return {
                "rfix": self.rfix,
                "box": self.box,
                "a": self.a,
                "cation": self.cation,
                "anion": self.anion,
                "n_cation": self.n_cation,
                "n_anion": self.n_anion,
                "center": self.center,
                "min_dist": self.min_dist,
                "seed": self.seed,
                "max_tries": self.max_tries,
            }
        params: dict[str, Any] = {
            "rfix": self.rfix,
            "crystal": self.crystal,
            "elements": list(self.species),
            "a": self.a,
            "box": self.box,
            "natoms": list(self.counts),
            "center": self.center,
            "min_dist": self.min_dist,
            "seed": self.seed,
            "max_tries": self.max_tries,
        }
        if self.c is not None:
            params["c"] = self.c
        return params

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description: parameters, composition, ids and the POSCAR row -> id map."""
        return {
            "kind": f"fixed-core {self.crystal} cell",
            "crystal": self.crystal,
            "parameters": self.parameters(),
            "elements": self.elements,
            "composition": dict(zip(self.species, (int(n) for n in self.counts))),
            "n_atoms": self.n_atoms,
            "center_id": self.center_id,
            "center_element": self.center,
            "center_position": [round(float(x), 10) for x in self.center_position],
            "n_core": self.n_core,
            "core_composition": self.core_composition(),
            "core_ids": [int(i) for i in self.core_ids],
            "n_mobile": self.n_atoms - self.n_core,
            "closest_pair": round(float(self.closest_pair), 6),
            "poscar_ids": [int(i) for i in poscar_ids(self)],
        }


# --------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------


def rocksalt_sites(a: float, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rocksalt sites closer than ``radius`` (less ``SITE_TOL``) to a site at the origin.

    Returns ``(offsets, same_sublattice, index)``: the site vectors relative to the centre (Å, shape
    (n, 3)), whether each site is on the centre's sublattice, and the integer vectors (i, j, k) with
    ``offset = (a/2)·(i, j, k)``. The centre itself is row 0; rows are ordered by distance, then by
    (i, j, k).
    """
    half = a / 2.0
    n = int(math.floor(radius / half)) + 1
    rng = np.arange(-n, n + 1)
    ijk = np.stack(np.meshgrid(rng, rng, rng, indexing="ij"), axis=-1).reshape(-1, 3)
    n2 = np.einsum("ij,ij->i", ijk, ijk)
    dist = half * np.sqrt(n2)
    keep = dist < radius - SITE_TOL
    ijk, n2 = ijk[keep], n2[keep]
    order = np.lexsort((ijk[:, 2], ijk[:, 1], ijk[:, 0], n2))
    ijk = ijk[order]
    same = ijk.sum(axis=1) % 2 == 0
    return ijk * half, same, ijk


def crystal_prototype(crystal: str, elements: Sequence[str], a: float, c: float | None = None) -> "Atoms":
    """ASE's primitive cell of ``crystal`` (an ``ase.build.bulk`` crystal structure) made of ``elements``.

    ``elements`` lists the symbols in the order ASE's ``bulk`` takes them in its formula (rocksalt
    ``["Sr", "O"]``, fcc ``["Sr"]``, zincblende ``["Ga", "As"]``, fluorite ``["Ca", "F"]``).
    """
    from ase.build import bulk

    if crystal not in CRYSTALS:
        raise InputError(f"crystal={crystal!r} is not one of the supported ASE bulk structures: {', '.join(CRYSTALS)}")
    need = CRYSTALS[crystal]
    if len(elements) != need:
        raise InputError(
            f"crystal={crystal!r} is made of {need} element{'s' if need > 1 else ''} but elements={list(elements)} "
            f"names {len(elements)}"
        )
    if len(set(elements)) != len(elements):
        raise InputError(f"elements={list(elements)} names an element twice; {crystal} needs different elements")
    name = "".join(elements) + ("2" if crystal == "fluorite" else "")
    kwargs: dict[str, Any] = {"a": a}
    if c is not None:
        kwargs["c"] = c
    try:
        return bulk(name, crystal, **kwargs)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise InputError(f"crystal={crystal!r} with elements={list(elements)} and a={a}: ASE says: {exc}") from exc


def crystal_sites(prototype: "Atoms", center_index: int, radius: float) -> tuple[np.ndarray, list[str]]:
    """Sites of the periodic crystal ``prototype`` closer than ``radius`` (less ``SITE_TOL``) to its atom
    ``center_index``: ``(offsets, symbols)``, offsets relative to that atom (Å). Row 0 is the centre;
    rows are ordered by distance, then by the offset's x, y, z (each rounded to 1e-6 Å, so that
    round-off never reorders a shell)."""
    cell = np.asarray(prototype.cell)
    pos = prototype.positions
    # the translations that can reach the sphere: |n_i| <= radius / (spacing of the lattice planes i) + 1
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell).T, axis=1)
    nmax = [int(math.ceil(radius / d)) + 1 for d in spacing]
    grid = np.stack(
        np.meshgrid(*(np.arange(-m, m + 1) for m in nmax), indexing="ij"), axis=-1
    ).reshape(-1, 3)
    shifts = grid @ cell
    offsets = (pos[None, :, :] + shifts[:, None, :] - pos[center_index]).reshape(-1, 3)
    symbols = np.tile(np.array(prototype.get_chemical_symbols()), len(shifts))
    dist = np.linalg.norm(offsets, axis=1)
    keep = dist < radius - SITE_TOL
    offsets, symbols, dist = offsets[keep], symbols[keep], dist[keep]
    r = np.round(offsets, 6)
    order = np.lexsort((r[:, 2], r[:, 1], r[:, 0], np.round(dist, 6)))
    offsets = offsets[order]
    offsets[0] = 0.0  # the centre itself (exactly)
    return offsets, list(symbols[order])


def nearest_neighbour_distance(prototype: "Atoms") -> float:
    """The shortest distance between two sites of the periodic crystal ``prototype`` (Å)."""
    reach = 1.01 * float(np.linalg.norm(np.asarray(prototype.cell), axis=1).max())
    best = math.inf
    for i in range(len(prototype)):
        offsets, _ = crystal_sites(prototype, i, reach)
        best = min(best, float(np.linalg.norm(offsets[1:], axis=1).min()))
    return best


def max_rfix(box: float = PAPER_BOX, min_dist: float = PAPER_MIN_DIST) -> float:
    """Largest R_fix whose core fits in a cubic box: ``(box - min_dist) / 2`` (see the module docstring)."""
    return (box - min_dist) / 2.0


def _minimum_image(d: np.ndarray, box: float) -> np.ndarray:
    return d - box * np.rint(d / box)


def closest_pair_distance(positions: np.ndarray, box: float) -> float:
    """Smallest minimum-image distance between two of ``positions`` in a cubic periodic box (Å)."""
    pos = np.asarray(positions, dtype=float)
    if len(pos) < 2:
        return math.inf
    d = _minimum_image(pos[:, None, :] - pos[None, :, :], box)
    r2 = np.einsum("ijk,ijk->ij", d, d)
    np.fill_diagonal(r2, np.inf)
    return float(np.sqrt(r2.min()))


# --------------------------------------------------------------------------------------------------
# the builder
# --------------------------------------------------------------------------------------------------


def _symbol(name: str, value: str) -> str:
    from ase.data import atomic_numbers

    if not isinstance(value, str) or value not in atomic_numbers or value == "X":
        raise InputError(f"{name}={value!r} is not a chemical element symbol (expected e.g. 'Sr', 'Mg', 'O')")
    return value


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name}={value!r} must be a finite number {bound}")
    return v


def _count(name: str, value: int, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name}={value!r} must be an integer >= {minimum}")
    return int(value)


def _center_is_cation(center: str, cation: str, anion: str) -> bool:
    key = str(center)
    if key in ("cation", cation):
        return True
    if key in ("anion", anion):
        return False
    raise InputError(
        f"center={center!r} must be 'cation', 'anion', {cation!r} or {anion!r} (the element of the centre atom)"
    )


def _check_common(rfix, box, a, min_dist, max_tries, seed) -> tuple[float, float, float, float, int, int]:
    rfix = _positive("rfix", rfix)
    box = _positive("box", box)
    a = _positive("a", a)
    min_dist = _positive("min_dist", min_dist, allow_zero=True)
    max_tries = _count("max_tries", max_tries, minimum=1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed={seed!r} must be an integer >= 0")
    return rfix, box, a, min_dist, max_tries, int(seed)


def _check_fits(rfix: float, box: float, min_dist: float) -> None:
    """The core must fit: ``2·rfix + min_dist <= box`` (see the module docstring)."""
    if 2 * rfix + min_dist > box:
        raise InputError(
            f"rfix={rfix} Å is too large for box={box} Å: the core sphere must stay min_dist={min_dist} Å clear "
            f"of its own periodic images (2*rfix + min_dist <= box, i.e. rfix <= {max_rfix(box, min_dist):.4f} Å)"
        )


def _assemble(
    offsets: np.ndarray,
    core_symbols: Sequence[str],
    *,
    species: Sequence[str],
    counts: Sequence[int],
    count_names: Sequence[str],
    rfix: float,
    box: float,
    min_dist: float,
    seed: int,
    max_tries: int,
) -> tuple["Atoms", np.ndarray, float]:
    """The one placement: core sites at ``centre + offsets``, then the random atoms of each element of
    ``species`` (in that order) outside the R_fix sphere; returns (atoms, core_ids, closest pair)."""
    from ase import Atoms
    from ase.constraints import FixAtoms

    _check_fits(rfix, box, min_dist)
    core_symbols = np.asarray(core_symbols)
    n_rand = {}
    for el, have, name in zip(species, counts, count_names):
        need = int(np.count_nonzero(core_symbols == el))
        if need > have:
            raise InputError(
                f"the core for rfix={rfix} Å holds {need} {el} atoms but {name}={have}; raise the count or lower rfix"
            )
        n_rand[el] = have - need
    n_random = sum(n_rand.values())

    free_volume = box**3 - 4.0 / 3.0 * math.pi * rfix**3
    fraction = n_random * math.pi / 6.0 * min_dist**3 / free_volume
    if fraction > RSA_JAMMING_FRACTION:
        raise InputError(
            f"{n_random} random atoms with min_dist={min_dist} Å cannot fit in the free volume "
            f"{free_volume:.0f} Å^3 outside rfix={rfix} Å: their hard-sphere volume fraction {fraction:.2f} "
            f"exceeds the random-packing limit {RSA_JAMMING_FRACTION}; use fewer atoms, a bigger box or a smaller min_dist"
        )

    c = np.full(3, box / 2.0)
    n_total = offsets.shape[0] + n_random
    positions = np.empty((n_total, 3))
    positions[: len(offsets)] = c + offsets
    symbols = list(core_symbols)
    n_placed = len(offsets)

    rng = np.random.default_rng(int(seed))
    min_d2 = min_dist * min_dist
    rfix2 = rfix * rfix
    for el in species:
        for k in range(n_rand[el]):
            tries = 0
            while True:
                if tries >= max_tries:
                    raise InputError(
                        f"could not place {el} atom {k + 1} of {n_rand[el]} at least min_dist={min_dist} Å "
                        f"from the others after max_tries={max_tries} random positions (seed={seed}); "
                        "the free volume outside rfix is too crowded: use fewer atoms, a bigger box, a "
                        "smaller min_dist, or more max_tries"
                    )
                m = min(_BATCH, max_tries - tries)
                tries += m
                trial = rng.random((m, 3)) * box
                dc = _minimum_image(trial - c, box)
                ok = np.einsum("ij,ij->i", dc, dc) >= rfix2
                if not ok.any():
                    continue
                trial = trial[ok]
                d = _minimum_image(trial[:, None, :] - positions[None, :n_placed, :], box)
                r2min = np.einsum("ijk,ijk->ij", d, d).min(axis=1)
                good = np.flatnonzero(r2min >= min_d2)
                if good.size:
                    positions[n_placed] = trial[good[0]]
                    symbols.append(el)
                    n_placed += 1
                    break

    atoms = Atoms(symbols=symbols, positions=positions, cell=[box, box, box], pbc=True)
    n_core = len(offsets)
    core_ids = np.arange(1, n_core + 1, dtype=np.int64)
    core_mask = np.zeros(n_total, dtype=bool)
    core_mask[:n_core] = True
    atoms.new_array("core", core_mask)
    atoms.set_constraint(FixAtoms(indices=np.flatnonzero(core_mask)))
    return atoms, core_ids, closest_pair_distance(positions, box)


def build_fixed_core_cell(
    rfix: float = PAPER_RFIX,
    *,
    box: float = PAPER_BOX,
    a: float = PAPER_LATTICE,
    cation: str = DEFAULT_ELEMENTS[0],
    anion: str = DEFAULT_ELEMENTS[1],
    n_cation: int = PAPER_N_EACH,
    n_anion: int = PAPER_N_EACH,
    center: str = "cation",
    min_dist: float = PAPER_MIN_DIST,
    seed: int = 0,
    max_tries: int = DEFAULT_MAX_TRIES,
) -> FixedCoreCell:
    """Build the fixed-core rocksalt cell (defaults: the paper's SrO test cell with R_fix = 5.82 Å).

    Parameters
    ----------
    rfix
        Core radius R_fix (Å): every rocksalt site strictly closer than this to the centre is occupied.
    box
        Edge of the cubic periodic cell (Å); the centre atom sits at ``(box/2, box/2, box/2)``.
    a
        Rocksalt (conventional cubic) lattice constant of the core (Å).
    cation, anion
        Element symbols; LAMMPS type 1 is the cation, type 2 the anion.
    n_cation, n_anion
        Total number of atoms of each element (core + random).
    center
        Element of the centre atom: ``"cation"`` (default), ``"anion"`` or the element symbol.
    min_dist
        Smallest allowed distance (Å) between a random atom and any other atom, periodic images included.
    seed
        Seed of ``numpy.random.default_rng``; the same parameters give the same cell.
    max_tries
        Random trial positions per atom before giving up (the build never loops for ever).

    Raises
    ------
    InputError
        On invalid parameters, when the core does not fit in the box, when the core needs more atoms
        of an element than requested, or when the random atoms cannot be placed.
    """
    cation = _symbol("cation", cation)
    anion = _symbol("anion", anion)
    if cation == anion:
        raise InputError(f"cation and anion are both {cation!r}; a rocksalt cell needs two different elements")
    rfix, box, a, min_dist, max_tries, seed = _check_common(rfix, box, a, min_dist, max_tries, seed)
    n_cation = _count("n_cation", n_cation)
    n_anion = _count("n_anion", n_anion)
    center_cation = _center_is_cation(center, cation, anion)
    center_el, other_el = (cation, anion) if center_cation else (anion, cation)

    if min_dist > a / 2 + 1e-12:
        raise InputError(
            f"min_dist={min_dist} Å exceeds the nearest-neighbour distance a/2={a / 2:g} Å of the "
            "crystalline core; choose min_dist <= a/2"
        )
    _check_fits(rfix, box, min_dist)  # before enumerating sites: a huge rfix would enumerate a huge grid
    # rocksalt sites as exact multiples of a/2 (the positions sro_rfix.in's lattice produces)
    offsets, same, _ = rocksalt_sites(a, rfix)
    core_symbols = np.where(same, center_el, other_el)
    atoms, core_ids, closest = _assemble(
        offsets, core_symbols, species=(cation, anion), counts=(n_cation, n_anion),
        count_names=("n_cation", "n_anion"), rfix=rfix, box=box, min_dist=min_dist, seed=seed,
        max_tries=max_tries,
    )
    atoms.info.update(
        {"rfix": rfix, "center_id": 1, "n_core": len(core_ids), "seed": int(seed), "min_dist": min_dist, "a": a}
    )
    return FixedCoreCell(
        atoms=atoms,
        center_id=1,
        core_ids=core_ids,
        rfix=rfix,
        box=box,
        a=a,
        species=(cation, anion),
        counts=(n_cation, n_anion),
        center=center_el,
        min_dist=min_dist,
        seed=int(seed),
        max_tries=max_tries,
        closest_pair=closest,
    )


def build_crystal_core_cell(
    rfix: float,
    *,
    crystal: str,
    elements: Sequence[str],
    a: float,
    box: float,
    natoms: int | Sequence[int],
    center: str | None = None,
    c: float | None = None,
    min_dist: float = PAPER_MIN_DIST,
    seed: int = 0,
    max_tries: int = DEFAULT_MAX_TRIES,
) -> FixedCoreCell:
    """Build a fixed-core cell of any crystal (e.g. the paper's Sr metal: ``crystal="fcc",
    elements=["Sr"], a=5.99, box=17.29, natoms=96``).

    Parameters
    ----------
    crystal
        An ``ase.build.bulk`` crystal structure (see :data:`CRYSTALS`).
    elements
        Element symbols in the order of ASE's formula for the crystal; also the LAMMPS type order.
    a, c
        Lattice constant(s) (Å), as ``ase.build.bulk`` takes them (``a`` of the conventional cubic cell
        for the cubic crystals; ``c`` only for hcp/wurtzite, ASE's ideal ratio if not given).
    natoms
        Total number of atoms of each element, in ``elements`` order (an int for a one-element crystal).
    center
        Element of the centre atom (default: the first element); the centre is ASE's first basis atom
        of that element.

    The other parameters, the rules and the errors are those of :func:`build_fixed_core_cell`, which
    builds the rocksalt case with the same site order, placement and checks.
    """
    if isinstance(elements, str):
        elements = elements.replace(",", " ").split()
    elements = [_symbol("elements", e) for e in elements]
    rfix, box, a, min_dist, max_tries, seed = _check_common(rfix, box, a, min_dist, max_tries, seed)
    if c is not None:
        c = _positive("c", c)
    prototype = crystal_prototype(crystal, elements, a, c)  # checks the crystal and its elements first
    if isinstance(natoms, (int, np.integer)) and not isinstance(natoms, bool):
        natoms = [natoms]
    natoms = list(natoms)
    if len(natoms) != len(elements):
        raise InputError(f"natoms={natoms} must give one count per element of elements={elements}")
    counts = [_count(f"natoms[{el}]", n) for el, n in zip(elements, natoms)]
    center = elements[0] if center is None else str(center)
    if center not in elements:
        raise InputError(f"center={center!r} must be one of elements={elements} (the element of the centre atom)")
    _check_fits(rfix, box, min_dist)  # before enumerating sites: a huge rfix would enumerate a huge grid
    if crystal == "rocksalt":  # one placement, and the exact a/2 sites of build_fixed_core_cell
        if c is not None:
            raise InputError("c is only for hcp and wurtzite, not rocksalt")
        return build_fixed_core_cell(
            rfix, box=box, a=a, cation=elements[0], anion=elements[1], n_cation=counts[0], n_anion=counts[1],
            center=center, min_dist=min_dist, seed=seed, max_tries=max_tries,
        )
    nn = nearest_neighbour_distance(prototype)
    if min_dist > nn + 1e-12:
        raise InputError(
            f"min_dist={min_dist} Å exceeds the nearest-neighbour distance {nn:g} Å of the {crystal} core "
            f"(a={a:g} Å); choose min_dist <= {nn:g}"
        )
    center_index = prototype.get_chemical_symbols().index(center)
    offsets, core_symbols = crystal_sites(prototype, center_index, rfix)
    atoms, core_ids, closest = _assemble(
        offsets, core_symbols, species=elements, counts=counts,
        count_names=[f"natoms[{el}]" if len(elements) > 1 else "natoms" for el in elements],
        rfix=rfix, box=box, min_dist=min_dist, seed=seed, max_tries=max_tries,
    )
    atoms.info.update(
        {"rfix": rfix, "center_id": 1, "n_core": len(core_ids), "seed": int(seed), "min_dist": min_dist, "a": a,
         "crystal": crystal}
    )
    return FixedCoreCell(
        atoms=atoms,
        center_id=1,
        core_ids=core_ids,
        rfix=rfix,
        box=box,
        a=a,
        species=tuple(elements),
        counts=tuple(counts),
        center=center,
        min_dist=min_dist,
        seed=int(seed),
        max_tries=max_tries,
        closest_pair=closest,
        crystal=crystal,
        c=float(prototype.cell.lengths()[2]) if crystal in ("hcp", "wurtzite") else None,
    )


# --------------------------------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------------------------------


def _atoms_and_elements(obj: "FixedCoreCell | Atoms", elements: Sequence[str] | None) -> tuple["Atoms", list[str]]:
    atoms = obj.atoms if isinstance(obj, FixedCoreCell) else obj
    if elements is None:
        if isinstance(obj, FixedCoreCell):
            elements = obj.elements
        else:
            present = list(dict.fromkeys(atoms.get_chemical_symbols()))
            elements = [e for e in DEFAULT_ELEMENTS if e in present] + [
                e for e in present if e not in DEFAULT_ELEMENTS
            ]
    elements = list(elements)
    missing = sorted(set(atoms.get_chemical_symbols()) - set(elements))
    if missing:
        raise InputError(f"elements={elements} does not list {', '.join(missing)} present in the structure")
    return atoms, elements


def write_lammps_data(
    obj: "FixedCoreCell | Atoms", path: str | os.PathLike, *, elements: Sequence[str] | None = None
) -> Path:
    """Write a LAMMPS data file (``atom_style charge``, charges 0: the potential sets them).

    Atom ids are ASE index + 1, types follow ``elements`` (default: the cell's ``[cation, anion]``) and
    are named in an ``Atom Type Labels`` section, so ``read_data`` in LAMMPS 22 Jul 2025 defines the
    type labels the potential directories use. Only orthogonal cells are supported.
    """
    from ase.data import atomic_masses, atomic_numbers

    atoms, elements = _atoms_and_elements(obj, elements)
    cell = atoms.cell.array
    if np.count_nonzero(cell - np.diag(np.diag(cell))) or not all(atoms.pbc):
        raise InputError("write_lammps_data needs an orthogonal, fully periodic cell")
    lengths = np.diag(cell)
    pos = np.mod(atoms.positions, lengths)  # wrap into [0, L)
    pos = np.where(pos >= lengths, pos - lengths, pos)
    type_of = {el: i + 1 for i, el in enumerate(elements)}
    if isinstance(obj, FixedCoreCell):
        title = (
            f"nlmd fixed-core cell: rfix={obj.rfix:g} A, centre {obj.center} id {obj.center_id}, "
            f"core ids 1-{obj.n_core}, a={obj.a:g} A, seed={obj.seed}, min_dist={obj.min_dist:g} A"
        )
    else:
        title = f"nlmd structure {atoms.get_chemical_formula()}"
    lines = [title, "", f"{len(atoms)} atoms", f"{len(elements)} atom types", ""]
    for ax, length in zip("xyz", lengths):
        lines.append(f"0.0 {length:.10f} {ax}lo {ax}hi")
    lines += ["", "Atom Type Labels", ""]
    lines += [f"{i + 1} {el}" for i, el in enumerate(elements)]
    lines += ["", "Masses", ""]
    lines += [f"{i + 1} {atomic_masses[atomic_numbers[el]]:.6f}" for i, el in enumerate(elements)]
    lines += ["", "Atoms # charge", ""]
    for i, (sym, p) in enumerate(zip(atoms.get_chemical_symbols(), pos)):
        lines.append(f"{i + 1} {type_of[sym]} 0.0 {p[0]:.12f} {p[1]:.12f} {p[2]:.12f}")
    text = "\n".join(lines) + "\n"
    return write_text(path, text)


def write_extxyz(obj: "FixedCoreCell | Atoms", path: str | os.PathLike) -> Path:
    """Write an extended XYZ file (ids = line order; per-atom ``core`` flag and ``move_mask``)."""
    import ase.io

    atoms = obj.atoms if isinstance(obj, FixedCoreCell) else obj
    return atomic_write(path, lambda tmp: ase.io.write(tmp, atoms, format="extxyz"))


def poscar_ids(obj: "FixedCoreCell | Atoms", elements: Sequence[str] | None = None) -> np.ndarray:
    """Atom id (ASE index + 1) of every row of the POSCAR that :func:`write_poscar` writes.

    Rows are grouped by element in ``elements`` order (default: ``[cation, anion]``), each group in id
    order. ``poscar_ids(cell)[k]`` is the id of POSCAR atom ``k + 1``.
    """
    atoms, elements = _atoms_and_elements(obj, elements)
    symbols = np.array(atoms.get_chemical_symbols())
    return np.concatenate([np.flatnonzero(symbols == el) for el in elements]).astype(np.int64) + 1


def write_poscar(
    obj: "FixedCoreCell | Atoms", path: str | os.PathLike, *, elements: Sequence[str] | None = None
) -> Path:
    """Write a VASP 5 POSCAR with *Selective dynamics*: core atoms ``F F F``, all others ``T T T``.

    Atoms are grouped by element (VASP reads one POTCAR per group) in the order given by
    :func:`poscar_ids`; the comment line records R_fix and the centre's POSCAR row.
    """
    import ase.io
    from ase.constraints import FixAtoms

    atoms, elements = _atoms_and_elements(obj, elements)
    order = poscar_ids(atoms, elements) - 1
    out = atoms[order]
    if isinstance(obj, FixedCoreCell):
        fixed = obj.core_mask[order]
        row = int(np.flatnonzero(order == obj.center_id - 1)[0]) + 1
        label = (
            f"{''.join(elements)} fixed core rfix={obj.rfix:g} A; centre {obj.center} = POSCAR atom {row} "
            f"(id {obj.center_id}); core = {obj.n_core} atoms F F F; seed={obj.seed}"
        )
    else:
        fixed = np.zeros(len(out), dtype=bool)
        for c in atoms.constraints:
            if isinstance(c, FixAtoms):
                mask = np.zeros(len(atoms), dtype=bool)
                mask[c.get_indices()] = True
                fixed |= mask[order]
        label = " ".join(elements)
    # ASE writes the Selective dynamics block from a FixAtoms constraint (fixed atoms: F F F)
    out.set_constraint(FixAtoms(indices=np.flatnonzero(fixed)) if fixed.any() else None)
    buf = io.StringIO()
    ase.io.write(buf, out, format="vasp", direct=True)
    body = buf.getvalue().split("\n", 1)[1]  # ASE's first (comment) line is the symbols: use ours
    return write_text(path, label + "\n" + body)
