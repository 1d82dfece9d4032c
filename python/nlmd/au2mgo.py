"""Au₂ on MgO(001) and on Al-doped MgO (Kang 2024, Fig. 6; the system of Ko et al. 2021).

The supports, the clusters on them, the relaxation with the support held fixed, the wetting/non-wetting
energy difference (Fig. 6b) and the force scan (Fig. 6c), all through LAMMPS with a potential directory's
``pair.lmp`` (:class:`nlmd.evaluate.LammpsEvaluator`), so any potential directory works.

Geometry (every length a parameter; defaults in brackets):

* **Support.** Rocksalt MgO, ``a`` [4.21 Å: experiment at room temperature is 4.212 Å; the papers do
  not state theirs; the support is fixed, so a only sets the frozen geometry the cluster sees], a (001)
  slab of ``layers`` [7] atomic layers ``a/2`` apart and ``lateral`` × ``lateral`` [2 × 2] conventional
  cells in plane (a periodic ``lateral·a`` square), ``vacuum`` [15 Å] of empty space above the top layer.
  In each layer the site ``(i·a/2, j·a/2)`` holds Mg when ``i + j + layer`` is even, O otherwise (layer 0
  is the bottom). The *site* is the surface O nearest the middle of the top layer: the cluster sits on it.
* **Dopant.** Al replaces the Mg of layer ``top - dopant_layer`` [5, i.e. 5·a/2 = 10.5 Å below the surface]
  nearest to the site laterally (directly below it when ``dopant_layer`` is odd). With the cluster's lower
  Au ~2.2 Å above the surface the Al–Au₂ z difference is ~12.7 Å: the paper's "about 12 Å". The undoped
  support is the same structure with Mg on that site: the two supports differ in that one atom only.
* **Clusters.** Both Au atoms come after the support (atom ids ``n_support + 1``, ``+ 2``).
  *Non-wetting*: upright on the site, the lower Au ``height`` [2.3 Å] above the O, the upper ``bond``
  [2.5 Å] above it. *Wetting*: lying flat, ``height`` above the surface, centred between the site O and
  its in-plane O neighbour along [110], the Au–Au axis along [110] (each Au near the top of one O).
* **Support fixed** in every calculation (as in the papers): an ASE ``FixAtoms`` on the support, and in
  the POSCARs ``F F F`` for the support, ``T T T`` for Au.

The calculations:

* **Relaxation** of the two Au atoms only, by ASE's ``BFGS`` over :class:`~nlmd.evaluate.LammpsEvaluator`
  (``fmax`` [0.05 eV/Å], at most ``steps`` [100]). Why ASE's optimiser and not LAMMPS ``minimize`` with
  ``fix setforce`` on the support: BFGS's steps depend on the forces alone (the support's are zero under
  FixAtoms), so two supports that give the cluster bit-identical forces give bit-identical relaxations.
  LAMMPS's line search compares total energies, which include the whole support and, in a float32 model,
  its rounding: the relaxed clusters could then differ in the last bits on supports that differ only
  beyond the model's reach. Each BFGS step costs one LAMMPS ``run 0`` on the same instance.
* **E_wetting − E_non-wetting** on each support, of the relaxed clusters: from the total energies
  (``dE``) and as the sum over atoms of the per-atom energy differences (``dE_atoms``). The two are
  equal in exact arithmetic; the second does not carry the float32 rounding of the whole support's energy,
  so it is *exactly* the same on both supports for a model that cannot see the dopant (the test).
* **Force scan**: the non-wetting cluster with the Au–Au distance fixed at the relaxed non-wetting value
  on the undoped support (one geometry for both supports), translated along z so that the lower Au is
  ``d`` above the site O (the nearest O), for ``scan_points`` values of ``d``; the sum of the forces on
  the two Au atoms (its z component; x and y vanish by symmetry) for each support.

Under ``mpirun -np N`` every rank runs LAMMPS and the same optimiser on the same (gathered) forces, so the
steps are the same on every rank; rank 0 writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from nlmd.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

#: LAMMPS type order of every structure here (the undoped support simply has no Al atom)
ELEMENTS: tuple[str, ...] = ("Mg", "O", "Al", "Au")
MGO_A = 4.21  # Å, experiment (room temperature) 4.212 Å
LATERAL = 2
LAYERS = 7
DOPANT_LAYER = 5
VACUUM = 15.0  # Å
BOND = 2.5  # Å, Au2 in the gas phase: 2.47 Å
HEIGHT = 2.3  # Å
CONFIGS = ("wetting", "non-wetting")
SUPPORTS = ("MgO", "Al-MgO")
#: Kang (2024), text beside Fig. 6: their 3-layer, 6 Å SevenNet model (the 4-layer model's and DFT's
#: values are only in the figure)
PAPER_3LAYER = {"MgO": 0.721, "Al-MgO": 0.141}


@dataclass(frozen=True)
class Support:
    """An MgO(001) slab (undoped or Al-doped): the atoms, where the cluster sits, where the dopant is."""

    atoms: "Atoms"
    a: float
    lateral: int
    layers: int
    vacuum: float
    dopant_layer: int
    doped: bool
    site_index: int  # ASE index of the surface O under the cluster
    dopant_index: int  # ASE index of the Al (doped) or of the Mg it replaces (undoped)

    @property
    def name(self) -> str:
        return "Al-MgO" if self.doped else "MgO"

    @property
    def surface_z(self) -> float:
        return float(self.atoms.positions[self.site_index, 2])

    @property
    def site(self) -> np.ndarray:
        return self.atoms.positions[self.site_index].copy()


def _check(name: str, value: float, *, minimum: float = 0.0, integer: bool = False) -> Any:
    if integer:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise InputError(f"{name}={value!r} must be an integer >= {minimum:g}")
        return int(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(v) or v <= minimum:
        raise InputError(f"{name}={value!r} must be a finite number > {minimum:g}")
    return v


def build_support(
    doped: bool,
    *,
    a: float = MGO_A,
    lateral: int = LATERAL,
    layers: int = LAYERS,
    vacuum: float = VACUUM,
    dopant_layer: int = DOPANT_LAYER,
) -> Support:
    """The MgO(001) slab (see the module docstring), with Al on the dopant site when ``doped``."""
    from ase import Atoms
    from ase.constraints import FixAtoms

    a = _check("a", a)
    lateral = _check("lateral", lateral, minimum=1, integer=True)
    layers = _check("layers", layers, minimum=2, integer=True)
    vacuum = _check("vacuum", vacuum)
    dopant_layer = _check("dopant_layer", dopant_layer, minimum=1, integer=True)
    if dopant_layer > layers - 1:
        raise InputError(
            f"dopant_layer={dopant_layer} is deeper than the slab: with layers={layers} the deepest layer is "
            f"{layers - 1} below the top"
        )
    half = a / 2
    n = 2 * lateral
    symbols, positions = [], []
    for layer in range(layers):
        for i in range(n):
            for j in range(n):
                symbols.append("Mg" if (i + j + layer) % 2 == 0 else "O")
                positions.append((i * half, j * half, layer * half))
    positions = np.array(positions)
    symbols = np.array(symbols)
    top = layers - 1
    middle = np.array([lateral * a / 2, lateral * a / 2])

    def nearest(layer: int, element: str) -> int:
        cand = np.flatnonzero((np.isclose(positions[:, 2], layer * half)) & (symbols == element))
        d = np.linalg.norm(positions[cand, :2] - middle, axis=1)
        return int(cand[np.lexsort((cand, np.round(d, 6)))[0]])

    site = nearest(top, "O")
    # the dopant site: the Mg of its layer nearest (laterally) to the site O
    layer = top - dopant_layer
    cand = np.flatnonzero(np.isclose(positions[:, 2], layer * half) & (symbols == "Mg"))
    d = np.linalg.norm(positions[cand, :2] - positions[site, :2], axis=1)
    dopant = int(cand[np.lexsort((cand, np.round(d, 6)))[0]])
    if doped:
        symbols[dopant] = "Al"
    height = top * half + vacuum
    atoms = Atoms(symbols=list(symbols), positions=positions, cell=[lateral * a, lateral * a, height], pbc=True)
    atoms.set_constraint(FixAtoms(indices=np.arange(len(atoms))))
    return Support(atoms=atoms, a=a, lateral=lateral, layers=layers, vacuum=vacuum, dopant_layer=dopant_layer,
                   doped=bool(doped), site_index=site, dopant_index=dopant)


def cluster_positions(support: Support, config: str, *, bond: float = BOND, height: float = HEIGHT) -> np.ndarray:
    """The two Au positions (lower/first, upper/second) of ``config`` on ``support``."""
    site = support.site
    if config == "non-wetting":
        return np.array([site + [0, 0, height], site + [0, 0, height + bond]])
    if config == "wetting":
        u = np.array([1.0, 1.0, 0.0]) / math.sqrt(2)  # [110]: the in-plane O-O neighbour direction
        mid = site + u * (support.a / (2 * math.sqrt(2))) + [0, 0, height]
        return np.array([mid - u * bond / 2, mid + u * bond / 2])
    raise InputError(f"config={config!r} must be one of {', '.join(CONFIGS)}")


def with_cluster(support: Support, au_positions: np.ndarray) -> "Atoms":
    """Support + Au₂ at ``au_positions`` (Au last), the support fixed (FixAtoms)."""
    from ase import Atoms
    from ase.constraints import FixAtoms

    atoms = support.atoms.copy()
    atoms += Atoms("Au2", positions=np.asarray(au_positions, dtype=float))
    n = len(support.atoms)
    atoms.set_constraint(FixAtoms(indices=np.arange(n)))
    core = np.zeros(len(atoms), dtype=bool)
    core[:n] = True
    atoms.new_array("support", core)
    return atoms


def scan_structure(support: Support, distance: float, bond: float) -> "Atoms":
    """The upright (non-wetting) cluster with its lower Au ``distance`` above the site O."""
    return with_cluster(support, cluster_positions(support, "non-wetting", bond=bond, height=distance))


# --------------------------------------------------------------------------------------------------
# calculations
# --------------------------------------------------------------------------------------------------


def _calculator(evaluator):
    """An ASE calculator over a LammpsEvaluator (energy, forces and per-atom energies of the current positions)."""
    from ase.calculators.calculator import Calculator, all_changes

    class EvaluatorCalculator(Calculator):
        implemented_properties = ["energy", "forces", "energies"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            ev = evaluator.evaluate(self.atoms)
            self.results = {"energy": ev.energy, "forces": ev.forces, "energies": ev.energies}

    return EvaluatorCalculator()


@dataclass
class Relaxed:
    atoms: "Atoms"
    energy: float
    energies: np.ndarray
    forces: np.ndarray
    steps: int
    converged: bool


def relax(evaluator, atoms: "Atoms", *, fmax: float, steps: int) -> Relaxed:
    """Relax the free (Au) atoms with ASE's BFGS, the support fixed by its FixAtoms; see the module docstring."""
    from ase.optimize import BFGS
    from ase.parallel import DummyMPI

    atoms = atoms.copy()
    atoms.calc = _calculator(evaluator)
    opt = BFGS(atoms, logfile=None, comm=DummyMPI())  # every rank steps alone, on the same forces
    converged = bool(opt.run(fmax=fmax, steps=steps))
    ev = evaluator.evaluate(atoms)
    out = atoms.copy()
    out.calc = None
    return Relaxed(out, ev.energy, ev.energies, ev.forces, int(opt.nsteps), converged)


def model_reach(manifest: dict) -> dict[str, Any]:
    """What a potential can see: cutoff r_c, layers L, energy reach L·r_c, force reach 2L·r_c (SevenNet);
    classical potentials: their real-space cutoff, and None for the reach when they have a kspace term."""
    kind = manifest.get("kind")
    if kind == "sevenn" and manifest.get("cutoff") and manifest.get("num_layers"):
        rc, n = float(manifest["cutoff"]), int(manifest["num_layers"])
        return {"kind": "sevenn", "cutoff": rc, "layers": n, "energy_reach": n * rc, "force_reach": 2 * n * rc}
    rc = manifest.get("real_space_cutoff")
    long_range = bool(manifest.get("kspace"))
    return {"kind": kind, "cutoff": rc, "layers": None,
            "energy_reach": None if long_range or rc is None else float(rc),
            "force_reach": None if long_range or rc is None else 2 * float(rc)}


def _min_image_distance(atoms: "Atoms", i: int, j: int) -> float:
    return float(atoms.get_distance(i, j, mic=True))


def run_au2mgo(
    potential: str | Path,
    *,
    a: float = MGO_A,
    lateral: int = LATERAL,
    layers: int = LAYERS,
    vacuum: float = VACUUM,
    dopant_layer: int = DOPANT_LAYER,
    bond: float = BOND,
    height: float = HEIGHT,
    fmax: float = 0.05,
    steps: int = 100,
    scan: tuple[float, float, int] = (1.9, 3.0, 10),
    comm=None,
    log: str | Path | None = None,
    echo: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Both supports, both clusters relaxed, the energy differences and the force scan; a JSON-ready dict
    (``structures`` holds the ase.Atoms: initial and relaxed per support and config, and the scan frames)."""
    from nlmd.evaluate import LammpsEvaluator
    from nlmd.potential_dir import PotentialDirectory

    bond = _check("bond", bond)
    height = _check("height", height)
    fmax = _check("fmax", fmax)
    steps = _check("steps", steps, minimum=1, integer=True)
    lo, hi, npts = scan
    lo, hi = _check("scan start", lo), _check("scan end", hi)
    npts = _check("scan points", npts, minimum=2, integer=True)
    if hi <= lo:
        raise InputError(f"the scan must go up: start {lo} Å >= end {hi} Å")
    pot = PotentialDirectory.load(potential)
    manifest = pot.manifest
    missing = [e for e in ELEMENTS if manifest.get("elements") and e not in manifest["elements"]]
    if missing:
        raise InputError(f"the potential {pot.path} does not know {', '.join(missing)} (its manifest's elements); "
                         f"Au₂/MgO needs {', '.join(ELEMENTS)}")
    reach = model_reach(manifest)
    supports = {s.name: s for s in (build_support(d, a=a, lateral=lateral, layers=layers, vacuum=vacuum,
                                                  dopant_layer=dopant_layer) for d in (False, True))}
    # the vacuum must keep the cluster's top clear of the next slab image by more than the cutoff
    gap = vacuum - height - bond
    rc = reach.get("cutoff")
    if rc is not None and gap <= float(rc):
        raise InputError(f"vacuum={vacuum} Å leaves {gap:.2f} Å between the upright cluster and the next slab "
                         f"image, not more than the potential's cutoff {rc} Å: raise vacuum")
    if hi + bond >= vacuum - (float(rc) if rc else 0.0):
        raise InputError(f"the scan end {hi} Å puts the cluster within the cutoff of the next slab image: "
                         "lower it or raise vacuum")

    result: dict[str, Any] = {
        "parameters": {"a": a, "lateral": lateral, "layers": layers, "vacuum": vacuum, "dopant_layer": dopant_layer,
                       "bond": bond, "height": height, "fmax": fmax, "steps": steps,
                       "scan": {"start": lo, "end": hi, "points": npts}},
        "elements": list(ELEMENTS),
        "potential": str(Path(pot.path).resolve()),
        "model": {k: manifest.get(k) for k in ("name", "kind", "cutoff", "num_layers")},
        "reach": reach,
        "supports": {},
        "paper_3layer_dE": PAPER_3LAYER,
    }
    structures: dict[str, Any] = {}
    with LammpsEvaluator(pot.path, ELEMENTS, comm=comm, log=log) as ev:
        relaxed: dict[tuple[str, str], Relaxed] = {}
        for name, sup in supports.items():
            for config in CONFIGS:
                start = with_cluster(sup, cluster_positions(sup, config, bond=bond, height=height))
                r = relax(ev, start, fmax=fmax, steps=steps)
                relaxed[name, config] = r
                structures[f"{name}_{config}"] = start
                structures[f"{name}_{config}.relaxed"] = r.atoms
                echo(f"{name} {config}: E = {r.energy:.6f} eV after {r.steps} BFGS steps"
                     f"{'' if r.converged else ' (not converged)'}")
        n_sup = len(supports["MgO"].atoms)
        bond_eq = float(np.linalg.norm(np.diff(relaxed["MgO", "non-wetting"].atoms.positions[n_sup:], axis=0)))
        distances = np.linspace(lo, hi, npts)
        for name, sup in supports.items():
            w, nw = relaxed[name, "wetting"], relaxed[name, "non-wetting"]
            z_al = float(sup.atoms.positions[sup.dopant_index, 2])
            entry: dict[str, Any] = {
                "n_atoms": n_sup + 2,
                "dopant": "Al" if sup.doped else None,
                "dopant_id": sup.dopant_index + 1,
                "site_id": sup.site_index + 1,
                "dE": w.energy - nw.energy,
                "dE_atoms": float(np.sum(w.energies - nw.energies)),
            }
            for config, r in (("wetting", w), ("non-wetting", nw)):
                au = r.atoms.positions[n_sup:]
                entry[config] = {
                    "energy": r.energy,
                    "bfgs_steps": r.steps,
                    "converged": r.converged,
                    "max_force_au": float(np.linalg.norm(r.forces[n_sup:], axis=1).max()),
                    "au_positions": au.round(6).tolist(),
                    "au_au": float(np.linalg.norm(au[1] - au[0])),
                    "lower_au_height": float(au[:, 2].min() - sup.surface_z),
                    # the dopant site (the Al, or the Mg on its site in the undoped support) to the cluster
                    "dz_dopant_au2": float(au[:, 2].mean() - z_al),
                    "dz_dopant_lower_au": float(au[:, 2].min() - z_al),
                    "dopant_au_distance": min(_min_image_distance(r.atoms, sup.dopant_index, n_sup + k)
                                              for k in (0, 1)),
                }
            fz, fsum = [], []
            frames = []
            for d in distances:
                atoms = scan_structure(sup, float(d), bond_eq)
                e = ev.evaluate(atoms)
                total = e.forces[n_sup:].sum(axis=0)
                fz.append(float(total[2]))
                fsum.append(total.round(8).tolist())
                frames.append(atoms)
            structures[f"{name}_scan"] = frames
            entry["scan"] = {"distance": distances.round(6).tolist(), "sum_fz_au": fz, "sum_f_au": fsum,
                             "au_au": bond_eq}
            echo(f"{name}: E_wetting - E_non-wetting = {entry['dE']:.4f} eV (atoms: {entry['dE_atoms']:.4f} eV)")
            result["supports"][name] = entry
    result["doping_shift"] = result["supports"]["Al-MgO"]["dE_atoms"] - result["supports"]["MgO"]["dE_atoms"]
    distance = min(result["supports"]["Al-MgO"][c]["dopant_au_distance"] for c in CONFIGS)
    result["dopant_au_distance"] = distance
    if reach.get("energy_reach") is not None:
        result["sees_dopant"] = {"energy": distance < reach["energy_reach"], "force": distance < reach["force_reach"]}
    result["structures"] = structures
    return result


def plot(result: dict[str, Any], out: Path) -> list[Path]:
    """fig6b.png (E_wetting − E_non-wetting per support) and fig6c.png (the force scan)."""
    from nlmd.plots import _figure, _save

    paths = []
    fig, ax = _figure(4.2, 3.2)
    names = list(result["supports"])
    values = [result["supports"][n]["dE_atoms"] for n in names]
    x = np.arange(len(names))
    ax.bar(x - 0.18, values, 0.36, label=result["model"].get("name") or "model", color="tab:blue")
    ax.bar(x + 0.18, [PAPER_3LAYER[n] for n in names], 0.36, label="paper, 3-layer SevenNet", color="0.7")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, names)
    ax.set_ylabel("E_wetting − E_non-wetting (eV)")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "fig6b.png"))
    fig, ax = _figure(4.2, 3.2)
    for n in names:
        s = result["supports"][n]["scan"]
        ax.plot(s["distance"], s["sum_fz_au"], "o-", label=n)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("lower Au – nearest O distance (Å)")
    ax.set_ylabel("sum of F_z on Au₂ (eV/Å)")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "fig6c.png"))
    return paths
