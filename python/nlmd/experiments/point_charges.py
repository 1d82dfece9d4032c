"""The paper's toy model end to end (Kang 2024, Figs. 2-4): how far a SevenNet model extrapolates F = k/d².

1. **Data set** (:func:`make_data_set`): ``configs`` random configurations per training distance
   (d = 4, 5, 6, 7, 8 A), each as types I, II and III (:mod:`nlmd.point_charges`), labelled with the exact
   reference ``potentials/point-charges-coulomb`` through LAMMPS, split 9:1 *by configuration* (the three
   types of one configuration share their random particles, so they stay on one side of the split) and
   written for ``sevenn`` as ``train.extxyz`` / ``valid.extxyz`` (energy and forces; no stress: the
   structures are not periodic).
2. **Training** (:func:`train`): SevenNet's own trainer, one model per number of layers (3 and 5), shipped
   to ``potentials/trained/point-charges-<L>layer`` with ``training.json`` (the recipe, seed, data size and
   validation errors), as the SrO recipe does (:mod:`nlmd.experiments.training`).
3. **Probe** (:func:`probe`): ``pairs`` new test configurations at each d = 4, 5, ..., 24 A (other seeds
   than the training set's); for each, the reference and every model evaluate types I and II, and the
   probe records F_z(+1e, I) - F_z(+1e, II) — the force that the -1e particle exerts on the +1e particle,
   exactly k/d² along +z for the reference, since Coulomb is pairwise — and the +1e particle's atomic
   energy difference E(I) - E(II) (SevenNet's per-atom energies; for the reference, LAMMPS splits each
   pair's energy equally, so it is k/(2d) in magnitude). Per model and d: mean ± standard deviation, the
   relative error (RMSE / (k/d²)) and the normalised standard deviation (std / (k/d²)), the paper's
   Fig. 3c, e; figures ``fig2b.png`` (ΔF vs d), ``fig3.png`` (relative error, normalised std) and
   ``fig4.png`` (ΔE vs k/d), with the layer regions (L·r_c) and the force reach (2L·r_c) marked.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlmd.errors import InputError
from nlmd.experiments import REPO
from nlmd.experiments.sro_rfix import Model, _json_default, shipped_models
from nlmd.experiments.training import ModelSettings, train_models
from nlmd.point_charges import COULOMB_K, SPECIES, build_point_charges

__all__ = ["Recipe", "RECIPES", "Budget", "BUDGETS", "make_data_set", "train", "probe", "format_table",
           "label", "config_seed"]

REFERENCE = REPO / "potentials/point-charges-coulomb"
#: the ±1e separations the paper trains on
TRAIN_DISTANCES = (4.0, 5.0, 6.0, 7.0, 8.0)
#: relative deviation of the mean ΔF from k/d² that counts as "reproduces k/d²"
TOLERANCE = 0.10


@dataclass(frozen=True)
class Recipe(ModelSettings):
    """Everything that determines a trained point-charge model (written to ``training.json``)."""

    distances: tuple[float, ...] = TRAIN_DISTANCES
    configs: int = 12  # random configurations per d, three structures each (paper: 200 structures per d)
    reference: str = "potentials/point-charges-coulomb"


#: ``full`` made the shipped models (2 cores); ``tiny`` is the same code on a test budget
RECIPES: dict[str, Recipe] = {
    "full": Recipe(configs=12, channel=16, lmax=1, epochs=25, batch_size=2),
    "tiny": Recipe(configs=2, channel=4, lmax=1, epochs=1, batch_size=2, radial_hidden=(8,)),
}


@dataclass(frozen=True)
class Budget:
    """The probe: distances (A) and test configurations per distance."""

    distances: tuple[float, ...]
    pairs: int
    seed: int = 1


BUDGETS: dict[str, Budget] = {
    "full": Budget(distances=tuple(float(d) for d in range(4, 25)), pairs=20),
    "demo": Budget(distances=(4.0, 6.0, 8.0, 12.0, 16.0, 20.0, 24.0), pairs=5),
    "tiny": Budget(distances=(4.0, 12.0), pairs=2),
}

#: purposes of a configuration's seed: training set and probe never share one
TRAINING, PROBE = 0, 1


def config_seed(seed: int, purpose: int, d: float, k: int) -> int:
    """The generator's seed of configuration ``k`` at distance ``d`` (distinct for every argument)."""
    return int(np.random.SeedSequence([int(seed), int(purpose), int(round(d * 1000)), int(k)]).generate_state(1)[0])


# --------------------------------------------------------------------------------------------- labels


def label(structures: Sequence[Any], reference: str | os.PathLike = REFERENCE) -> list[Any]:
    """Copies of ``structures`` carrying the reference's energy and forces (ASE single-point results)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from nlmd.evaluate import LammpsEvaluator

    out: list[Any] = [None] * len(structures)
    groups: dict[int, list[int]] = {}
    for i, atoms in enumerate(structures):
        groups.setdefault(len(atoms), []).append(i)
    for rows in groups.values():  # one LAMMPS instance per number of atoms
        with LammpsEvaluator(reference, list(SPECIES)) as ev:
            for i in rows:
                atoms = structures[i].copy()
                res = ev.evaluate(atoms)
                atoms.calc = SinglePointCalculator(atoms, energy=res.energy, forces=res.forces)
                out[i] = atoms
    return out


def make_data_set(recipe: Recipe, out: str | os.PathLike, *, reference: str | os.PathLike | None = None,
                  echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Step 1: labelled types I, II, III at the training distances -> ``train.extxyz`` and ``valid.extxyz``."""
    import ase.io

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reference = Path(reference) if reference is not None else REPO / recipe.reference
    configs = []  # (d, k, [I, II, III])
    t0 = time.perf_counter()
    for d in recipe.distances:
        for k in range(recipe.configs):
            cell = build_point_charges(d, config_seed(recipe.seed, TRAINING, d, k))
            configs.append((d, k, [cell.types[t] for t in ("I", "II", "III")]))
    flat = label([a for _, _, trio in configs for a in trio], reference)
    rng = np.random.default_rng(recipe.seed)
    order = rng.permutation(len(configs))
    n_valid = max(1, int(round(recipe.valid_fraction * len(configs))))
    valid_cfg = set(order[:n_valid].tolist())
    train_, valid = [], []
    for c in range(len(configs)):
        (valid if c in valid_cfg else train_).extend(flat[3 * c:3 * c + 3])
    ase.io.write(out / "train.extxyz", train_, format="extxyz")
    ase.io.write(out / "valid.extxyz", valid, format="extxyz")
    sizes = sorted({len(a) for a in flat})
    echo(f"  {len(configs)} configurations x 3 types at d = {', '.join(f'{d:g}' for d in recipe.distances)} A, "
         f"{sizes[0]}-{sizes[-1]} particles, labelled with {reference.name} ({time.perf_counter() - t0:.1f} s)")
    return {"configurations": len(configs), "n_train": len(train_), "n_valid": len(valid),
            "n_atoms": [sizes[0], sizes[-1]], "distances": list(recipe.distances),
            "split": "by configuration (its types I, II, III together)", "reference": str(reference)}


def train(recipe: Recipe, layers: Sequence[int], out: str | os.PathLike, ship_to: str | os.PathLike | None, *,
          jobs: int = 2, echo: Callable[[str], None] = print, command: str | None = None) -> list[dict]:
    """Steps 1-2: the data set, then one ``sevenn`` run per number of layers, shipped beside its recipe."""
    out = Path(out)
    echo(f"data set: the toy model labelled with {recipe.reference}")
    data = make_data_set(recipe, out / "data", echo=echo)
    echo(f"  {data['n_train']} training + {data['n_valid']} validation structures")
    return train_models(recipe, layers, out / "data", data, out, ship_to, jobs=jobs, name="point-charges-{L}layer",
                        species=list(SPECIES), echo=echo, command=command)


# ---------------------------------------------------------------------------------------------- probe


def shipped(root: str | os.PathLike = REPO / "potentials", *, echo: Callable[[str], None] = print) -> list[Model]:
    """The point-charge models shipped in ``potentials/trained/``, deployed (once) beside them."""
    return shipped_models(root, echo=echo, pattern="point-charges-*")


def _pair_values(ev_i, ev_ii, cell) -> tuple[float, float]:
    """(ΔF_z, ΔE) of the +1e particle between types I and II of one configuration."""
    a, b = ev_i.evaluate(cell.types["I"]), ev_ii.evaluate(cell.types["II"])
    row = cell.plus_index
    return float(a.forces[row, 2] - b.forces[row, 2]), float(a.energies[row] - b.energies[row])


def probe(potentials: Sequence[Model], budget: Budget | str = "full", out: str | os.PathLike | None = None, *,
          reference: str | os.PathLike = REFERENCE, echo: Callable[[str], None] = print,
          command: str | None = None) -> dict[str, Any]:
    """Step 3: ΔF_z and ΔE of the +1e particle between types I and II, per potential and d (see the module).

    The reference is probed first, as ``"reference"``; with ``out``, the test structures (labelled by the
    reference), ``results.json`` and the figures are written there.
    """
    import ase.io

    from nlmd.evaluate import LammpsEvaluator

    budget = BUDGETS[budget] if isinstance(budget, str) else budget
    names = [p.name for p in potentials]
    if len(set(names)) != len(names) or "reference" in names:
        raise InputError(f"model names must be unique and not 'reference', got {names}")
    allp = [Model("reference", Path(reference))] + list(potentials)
    raw: dict[str, dict[float, dict[str, list[float]]]] = {p.name: {} for p in allp}
    t_start = time.perf_counter()
    for d in budget.distances:
        cells = [build_point_charges(d, config_seed(budget.seed, PROBE, d, k)) for k in range(budget.pairs)]
        if out is not None:
            tests = Path(out) / "test-set"
            tests.mkdir(parents=True, exist_ok=True)
            ase.io.write(tests / f"d{d:g}.extxyz", label([c.types[t] for c in cells for t in ("I", "II")], reference),
                         format="extxyz")
        for p in allp:
            elements = list(SPECIES) if p.layers is None else None
            t0 = time.perf_counter()
            with LammpsEvaluator(p.potential, elements) as ev_i, LammpsEvaluator(p.potential, elements) as ev_ii:
                vals = [_pair_values(ev_i, ev_ii, c) for c in cells]
            raw[p.name][d] = {"dF": [v[0] for v in vals], "dE": [v[1] for v in vals]}
            echo(f"  d = {d:4.1f} A  {p.name:>24}: ΔF = {np.mean(raw[p.name][d]['dF']):+.4f} ± "
                 f"{np.std(raw[p.name][d]['dF']):.4f} eV/A (k/d² = {COULOMB_K / d ** 2:.4f}; "
                 f"{time.perf_counter() - t0:.1f} s)")
    results = {
        "coulomb_k_eVA": COULOMB_K,
        "budget": asdict(budget),
        "tolerance": TOLERANCE,
        "potentials": [{"name": p.name, "potential": str(p.potential), "layers": p.layers, "cutoff": p.cutoff}
                       for p in allp],
        "rows": [row for p in allp for row in _rows(p, raw[p.name])],
        "raw": {name: {f"{d:g}": v for d, v in per_d.items()} for name, per_d in raw.items()},
        "seconds": time.perf_counter() - t_start,
        "command": command,
    }
    results["summary"] = summarise(results)
    if out is not None:
        out = Path(out)
        from nlmd.plots import plot_point_charges

        results["figures"] = {k: str(v) for k, v in plot_point_charges(out, results).items()}
        (out / "results.json").write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    return results


def _rows(p: Model, per_d: Mapping[float, Mapping[str, list[float]]]) -> list[dict[str, Any]]:
    rows = []
    for d, v in per_d.items():
        ideal_f, ideal_e = COULOMB_K / d ** 2, COULOMB_K / d
        df, de = np.asarray(v["dF"]), np.asarray(v["dE"])
        rmse = float(np.sqrt(np.mean((df - ideal_f) ** 2)))
        rows.append({
            "potential": p.name, "layers": p.layers, "d": d, "n": len(df),
            "k_over_d2": ideal_f, "dF_mean": float(df.mean()), "dF_std": float(df.std()), "dF_rmse": rmse,
            "mean_deviation": float(abs(df.mean() - ideal_f) / ideal_f),
            "relative_error": rmse / ideal_f, "normalised_std": float(df.std()) / ideal_f,
            "k_over_d": ideal_e, "dE_mean": float(de.mean()), "dE_std": float(de.std()),
        })
    return rows


def summarise(results: Mapping[str, Any]) -> dict[str, Any]:
    """Per potential: the largest d up to which the mean ΔF stays within the tolerance of k/d² at every
    probed d (``reproduces_up_to_A``), the first d where it does not, and the relative error per layer region."""
    out: dict[str, Any] = {}
    for p in results["potentials"]:
        rows = sorted((r for r in results["rows"] if r["potential"] == p["name"]), key=lambda r: r["d"])
        good = None
        first_bad = None
        for r in rows:
            if r["mean_deviation"] <= results["tolerance"]:
                if first_bad is None:
                    good = r["d"]
            elif first_bad is None:
                first_bad = r["d"]
        regions = {}
        if p["layers"] and p["cutoff"]:
            rc = p["cutoff"]
            for k in range(1, 2 * p["layers"] + 1):
                sel = [r["relative_error"] for r in rows if (k - 1) * rc < r["d"] <= k * rc]
                if sel:
                    regions[f"{(k - 1) * rc:g}-{k * rc:g}"] = float(np.mean(sel))
        out[p["name"]] = {"reproduces_up_to_A": good, "first_miss_A": first_bad,
                          "mean_relative_error_by_region": regions}
    return out


def format_table(results: Mapping[str, Any]) -> str:
    """ΔF_z of the +1e particle (mean ± std, eV/Å) per d and potential, against k/d²."""
    names = [p["name"] for p in results["potentials"]]
    by = {(r["potential"], r["d"]): r for r in results["rows"]}
    ds = sorted({r["d"] for r in results["rows"]})
    lines = ["   d (A)   k/d²    " + "".join(f"{n:>24}" for n in names)]
    for d in ds:
        cells = "".join(f"{by[(n, d)]['dF_mean']:>+14.4f} ± {by[(n, d)]['dF_std']:<7.4f}" for n in names)
        lines.append(f"{d:8.1f} {COULOMB_K / d ** 2:7.4f}  {cells}")
    for n, s in results["summary"].items():
        lines.append(f"{n}: mean within {100 * results['tolerance']:.0f} % of k/d² up to d = {s['reproduces_up_to_A']} A"
                     + (f" (first miss at {s['first_miss_A']} A)" if s["first_miss_A"] is not None else ""))
    return "\n".join(lines)

