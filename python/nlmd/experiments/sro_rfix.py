"""The fixed-core SrO experiment (Kang 2024, Fig. 5) against an exact reference, end to end.

For each R_fix (and seed): reference MD at 4000 K of ``lammps_inputs/sro_rfix.in`` driven by the reference
potential (as the paper's test frames came from DFT MD) -> every model rescored on exactly those frames
(``nlmd rescore``) -> ``nlmd compare`` -> a table per model and R_fix, Fig. 5c (RMSE and RMS |F_center|
against R_fix) and Fig. 5b (F_center(t), reference and models).

Two cells: the paper's (13.63 A, 144 atoms) and a larger one of the same density in which R_fix can pass
2·r_c = 10 A (``2·R_fix + mindist <= box``), where a 1-layer model with r_c = 5 A must give exactly zero
force on the centre: an L-layer model's force on an atom depends on atoms within 2·L·r_c of it (its energy
on L·r_c). Each frame records the distance from the centre to the nearest mobile atom, so the law is
checked on the frames where it applies (atoms of a hot liquid can drift into the sphere).

Outputs in the run directory: ``<cell>/rfix_<R>/ref.h5`` and ``<model>.h5`` per R_fix, ``results.json`` (the
table and the settings), ``fig5c.png``, ``fig5b.png`` and ``law.png``. Existing trajectory files made with
the same settings are reused, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlmd.errors import InputError
from nlmd.experiments import REPO, run_nlmd

__all__ = ["Budget", "BUDGETS", "Model", "run_experiment", "shipped_models"]

INPUT = REPO / "lammps_inputs/sro_rfix.in"
REFERENCE = REPO / "potentials/sro-rigid-ion"
#: rocksalt SrO at the paper's density: 144 atoms in 13.63 A, i.e. 8 atoms per (5.20 A)^3
DENSITY = 8 / 5.20**3


@dataclass(frozen=True)
class Cell:
    """A fixed-core cell of the experiment: box edge (A), atoms per element, the R_fix values run in it."""

    name: str
    box: float
    per_element: int
    rfix: tuple[float, ...]
    time_ps: float
    every: int

    def __post_init__(self) -> None:
        for r in self.rfix:
            if 2 * r + 1.5 > self.box + 1e-9:
                raise InputError(f"cell {self.name}: R_fix = {r} A does not fit in a {self.box} A box "
                                 f"(2*R_fix + 1.5 <= box)")


def _box_for(per_element: int) -> float:
    return round((2 * per_element / DENSITY) ** (1 / 3), 2)


@dataclass(frozen=True)
class Budget:
    """How much of the experiment to run."""

    name: str
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...] = (1,)
    minsteps: int = 50
    eqtime: float = 0.1
    sevennet0_every: int = 100  # steps between the frames SevenNet-0 is evaluated on (it costs ~1 s a frame)
    sevennet0_cells: tuple[str, ...] = ("paper",)
    fig5b_rfix: float = 5.82


PAPER_RFIX = (2.61, 3.68, 4.51, 5.20, 5.82)
#: just above the rocksalt shells at a/2*sqrt(12), sqrt(14), sqrt(16), sqrt(18) = 9.007, 9.728, 10.40, 11.03 A
LARGE_RFIX = (9.02, 9.74, 10.42, 11.05)

BUDGETS: dict[str, Budget] = {
    "full": Budget("full", (Cell("paper", 13.63, 72, PAPER_RFIX, 6.0, 10),
                            Cell("large", _box_for(400), 400, LARGE_RFIX, 2.0, 20))),
    "demo": Budget("demo", (Cell("paper", 13.63, 72, (2.61, 3.68, 5.82), 1.0, 10),), minsteps=50, eqtime=0.1,
                   sevennet0_every=100),
    "tiny": Budget("tiny", (Cell("paper", 13.63, 72, (3.68, 5.82), 0.02, 5),), minsteps=5, eqtime=0.005,
                   sevennet0_every=10, sevennet0_cells=()),
}


@dataclass
class Model:
    """A model of the comparison: a potential directory and how far it sees."""

    name: str
    potential: Path
    layers: int | None = None
    cutoff: float | None = None
    every: int | None = None  # evaluate on every this-many steps only (None: every reference frame)
    cells: tuple[str, ...] | None = None  # the cells it is evaluated in (None: all)

    @property
    def force_reach(self) -> float | None:
        return None if self.layers is None or self.cutoff is None else 2 * self.layers * self.cutoff

    @classmethod
    def from_directory(cls, name: str, potential: str | os.PathLike, **kw) -> "Model":
        potential = Path(potential)
        try:
            manifest = json.loads((potential / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{potential}: not a potential directory with a readable manifest.json ({exc})") from exc
        layers = manifest.get("num_layers") or manifest.get("layers")
        cutoff = manifest.get("cutoff")
        return cls(name, potential, None if layers is None else int(layers), None if cutoff is None else float(cutoff),
                   **kw)


def shipped_models(root: str | os.PathLike = REPO / "potentials", *, echo: Callable[[str], None] = print,
                   aot: bool = False, pattern: str = "sro-*") -> list[Model]:
    """The trained models shipped in ``potentials/trained/`` whose names match ``pattern``, deployed beside
    them (once) and loaded."""
    root = Path(root)
    models = []
    for src in sorted((root / "trained").glob(f"{pattern}/checkpoint.pth")):
        info = json.loads((src.parent / "training.json").read_text())
        target = root / src.parent.name
        manifest = target / "manifest.json"
        if not manifest.is_file() or json.loads(manifest.read_text()).get("provenance", {}).get("checkpoint_sha256") != _sha(src):
            echo(f"deploying {src} -> {target}")
            run_nlmd(["deploy", src, "-o", target, "--force", "--no-parallel", "--aot" if aot else "--no-aot"])
        models.append(Model(src.parent.name, target, int(info["layers"]), float(info["cutoff"])))
    models.sort(key=lambda m: (m.layers or 0, m.name))
    return models


def _sha(path: Path) -> str:
    from nlmd.deploy import sha256

    return sha256(path)


def _subsample(src: Path, out: Path, every: int) -> Path:
    """A copy of ``src`` with the frames whose step is a multiple of ``every`` (to rescore a costly model on)."""
    from nlmd.h5md import TrajectoryReader, TrajectoryWriter

    with TrajectoryReader(src) as r:
        rows = [i for i, s in enumerate(r.steps) if int(s) % every == 0]
        params = {k: v for k, v in r.parameters.items() if k not in ("units", "model")}
        params["subsampled_from"] = str(src)
        out.unlink(missing_ok=True)
        with TrajectoryWriter(out, boundary=r.boundary, fixed_core=r.fixed_core, parameters=params,
                              model=r.model) as w:
            for i in rows:
                w.write(r.frame(i))
    return out


def _center_series(path: Path, center_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, times, force on the centre (T,3)) of a trajectory file."""
    from nlmd.h5md import TrajectoryReader

    with TrajectoryReader(path) as r:
        row = int(np.searchsorted(r.ids, center_id))
        forces = np.asarray(r.read("force")[:, row])  # a few MB at most: one read
        return np.asarray(r.steps), np.asarray(r.times), forces


def _nearest_mobile(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, distance from the centre to the nearest mobile atom, minimum image) of each frame."""
    from nlmd.h5md import TrajectoryReader

    with TrajectoryReader(path) as r:
        core = r.fixed_core
        mobile = ~np.isin(r.ids, core.core_ids)
        c = int(np.searchsorted(r.ids, core.center_id))
        out = np.empty(r.n_frames)
        for i in range(r.n_frames):
            x = r.read("position", i, i + 1)[0]
            box = np.diag(r.read("box", i, i + 1)[0])
            d = x[mobile] - x[c]
            d -= box * np.round(d / box)
            out[i] = np.sqrt((d**2).sum(axis=1)).min()
        return np.asarray(r.steps), out


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.ravel(a), np.ravel(b)
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _evaluate(model_file: Path, ref_file: Path, center_id: int) -> dict[str, Any]:
    """The metrics of one model on one reference run: nlmd compare's, plus correlation and the zero law."""
    from nlmd.compare import compare_files

    rep = compare_files(model_file, ref_file)
    sm, _, fm = _center_series(model_file, center_id)
    sr, _, fr = _center_series(ref_file, center_id)
    common, im, ir = np.intersect1d(sm, sr, return_indices=True)
    fm, fr = fm[im], fr[ir]
    c = rep["center"]
    return {
        "frames": int(rep["n_frames"]),
        "center_rms_ref": c["force_rms_ref"],
        "center_rms_model": c["force_rms_model"],
        "center_rmse": c["force_rmse"],
        "center_rmse_over_rms_ref": c["force_rmse"] / c["force_rms_ref"] if c["force_rms_ref"] > 0 else None,
        "center_correlation": _pearson(fm, fr),
        "center_max_model": float(np.max(np.linalg.norm(fm, axis=1))) if fm.size else None,
        "mobile_rmse": rep["mobile"]["force_rmse"],
        **_mobile_stats(model_file, ref_file),
        "all_rmse": rep["all"]["force_rmse"],
        "_steps": common, "_fm": fm, "_fr": fr,
    }


def _mobile_stats(model_file: Path, ref_file: Path) -> dict[str, float | None]:
    """RMS force component of the mobile atoms (reference, model), their ratio of RMSE to it and the correlation,
    over the frames the two files share (by step)."""
    from nlmd.h5md import TrajectoryReader

    with TrajectoryReader(model_file) as m, TrajectoryReader(ref_file) as r:
        mobile = ~np.isin(r.ids, r.fixed_core.core_ids)
        _, im, ir = np.intersect1d(m.steps, r.steps, return_indices=True)
        n = 0
        s_r = s_m = s_rr = s_mm = s_rm = s_dd = 0.0
        for i, j in zip(im, ir):
            fm = m.read("force", int(i), int(i) + 1)[0][mobile].ravel()
            fr = r.read("force", int(j), int(j) + 1)[0][mobile].ravel()
            n += fr.size
            s_r += fr.sum(); s_m += fm.sum()
            s_rr += fr @ fr; s_mm += fm @ fm; s_rm += fr @ fm
            d = fm - fr
            s_dd += d @ d
    if n == 0:
        return {"mobile_rms_ref": None, "mobile_rms_model": None, "mobile_rmse_over_rms_ref": None,
                "mobile_correlation": None}
    rms_ref, rms_model = math.sqrt(s_rr / n), math.sqrt(s_mm / n)
    cov = s_rm / n - (s_r / n) * (s_m / n)
    var_r, var_m = s_rr / n - (s_r / n) ** 2, s_mm / n - (s_m / n) ** 2
    return {
        "mobile_rms_ref": rms_ref,
        "mobile_rms_model": rms_model,
        "mobile_rmse_over_rms_ref": math.sqrt(s_dd / n) / rms_ref if rms_ref > 0 else None,
        "mobile_correlation": cov / math.sqrt(var_r * var_m) if var_r > 0 and var_m > 0 else None,
    }


def _start_temperature(ref_file: Path, temp: float, window: float = 0.5) -> dict[str, float]:
    from nlmd.h5md import TrajectoryReader

    with TrajectoryReader(ref_file) as r:
        t, T = r.times, r.observable("temperature")
    sel = t <= window + 1e-9
    return {"window_ps": window, "mean_K": float(T[sel].mean()), "max_K": float(T[sel].max()),
            "mean_over_temp": float(T[sel].mean() / temp), "max_over_temp": float(T[sel].max() / temp)}


def run_experiment(
    out: str | os.PathLike,
    models: Sequence[Model],
    budget: Budget | str = "full",
    *,
    reference: str | os.PathLike = REFERENCE,
    temp: float = 4000.0,
    echo: Callable[[str], None] = print,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the experiment into ``out``; return (and write to ``out/results.json``) the table and settings."""
    budget = BUDGETS[budget] if isinstance(budget, str) else budget
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reference = Path(reference)
    if not models:
        raise InputError("no models to compare: deploy the shipped models (potentials/trained) or give --model")
    names = [m.name for m in models]
    if len(set(names)) != len(names) or "ref" in names:
        raise InputError(f"model names must be unique and not 'ref', got {names}")
    rows: list[dict[str, Any]] = []
    series: dict[tuple[str, float], dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for cell in budget.cells:
        for rfix in cell.rfix:
            for seed in budget.seeds:
                d = out / cell.name / f"rfix_{rfix:.2f}" / f"seed_{seed}"
                d.mkdir(parents=True, exist_ok=True)
                ref = d / "ref.h5"
                settings = {"rfix": rfix, "seed": seed, "box": cell.box, "per_element": cell.per_element,
                            "time_ps": cell.time_ps, "every": cell.every, "minsteps": budget.minsteps,
                            "eqtime": budget.eqtime, "temp": temp, "reference": str(reference),
                            "input_sha256": _sha(INPUT)}
                stamp = d / "ref.settings.json"
                if not (ref.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings):
                    t0 = time.perf_counter()
                    run_nlmd(["run", INPUT, "-o", ref, "--force", "--quiet", "--every", cell.every,
                           "-v", "potential", reference, "-v", "rfix", rfix, "-v", "seed", seed,
                           "-v", "time", cell.time_ps, "-v", "temp", temp, "-v", "box", cell.box,
                           "-v", "ncation", cell.per_element, "-v", "nanion", cell.per_element,
                           "-v", "minsteps", budget.minsteps, "-v", "eqtime", budget.eqtime,
                           "-v", "prefix", d / "ref"], log=d / "ref.out")
                    stamp.write_text(json.dumps(settings, indent=1))
                    echo(f"{cell.name} R_fix {rfix:.2f} seed {seed}: reference MD ({time.perf_counter() - t0:.0f} s)")
                run = {"cell": cell.name, **settings, "start_temperature": _start_temperature(ref, temp)}
                steps, nearest = _nearest_mobile(ref)
                run["nearest_mobile_min_A"] = float(nearest.min())
                runs.append(run)
                for m in models:
                    if m.cells is not None and cell.name not in m.cells:
                        continue
                    src = ref
                    if m.every is not None and m.every > cell.every:
                        src = _subsample(ref, d / f"ref_every{m.every}.h5", m.every)
                    mfile = d / f"{m.name}.h5"
                    mstamp = d / f"{m.name}.settings.json"
                    msettings = {"reference_settings": settings, "potential": str(m.potential),
                                 "every": m.every, "manifest_mtime": (m.potential / "manifest.json").stat().st_mtime}
                    if not (mfile.is_file() and mstamp.is_file() and json.loads(mstamp.read_text()) == msettings):
                        t0 = time.perf_counter()
                        run_nlmd(["rescore", src, "--potential", m.potential, "-o", mfile, "--force"],
                              log=d / f"{m.name}.out")
                        mstamp.write_text(json.dumps(msettings, indent=1))
                        echo(f"  {m.name}: rescored ({time.perf_counter() - t0:.0f} s)")
                    ev = _evaluate(mfile, ref, center_id=1)
                    in_model_steps = np.isin(steps, ev["_steps"])
                    near = nearest[in_model_steps]
                    reach = m.force_reach
                    row = {"model": m.name, "layers": m.layers, "cutoff": m.cutoff, "force_reach_A": reach,
                           "cell": cell.name, "box": cell.box, "rfix": rfix, "seed": seed,
                           **{k: v for k, v in ev.items() if not k.startswith("_")},
                           "nearest_mobile_min_A": float(near.min()) if near.size else None}
                    if reach is not None and near.size:
                        outside = near > reach
                        row["frames_beyond_reach"] = int(outside.sum())
                        row["center_max_model_beyond_reach"] = (
                            float(np.linalg.norm(ev["_fm"][outside], axis=1).max()) if outside.any() else None)
                        # independence from everything beyond the reach: the same force, to the last bit, in every frame
                        row["center_spread_model_beyond_reach"] = (
                            float(np.abs(ev["_fm"][outside] - ev["_fm"][outside][0]).max()) if outside.any() else None)
                        row["center_rms_ref_beyond_reach"] = (
                            float(np.sqrt(np.mean(np.sum(ev["_fr"][outside] ** 2, axis=1)))) if outside.any() else None)
                    rows.append(row)
                    series[(m.name, rfix)] = {"steps": ev["_steps"], "fm": ev["_fm"], "fr": ev["_fr"],
                                              "dt": None}
                    echo(f"  {m.name:>12}: RMS|F_c| ref {row['center_rms_ref']:.3f} model {row['center_rms_model']:.3f}"
                         f"  RMSE {row['center_rmse']:.3f} ({row['center_rmse_over_rms_ref']:.2f} of RMS)"
                         f"  corr {row['center_correlation'] if row['center_correlation'] is None else round(row['center_correlation'], 2)}"
                         f"  mobile RMSE {row['mobile_rmse']:.3f}")
    results = {
        "nlmd_experiment": "sro-rfix",
        "budget": {**asdict(budget)},
        "reference": str(reference),
        "models": [{"name": m.name, "potential": str(m.potential), "layers": m.layers, "cutoff": m.cutoff,
                    "force_reach_A": m.force_reach, "every": m.every} for m in models],
        "runs": runs,
        "table": rows,
        "law": _law(rows),
        "seconds": time.perf_counter() - t_start,
        "command": command,
    }
    from nlmd import plots

    figures = {"fig5c": str(plots.plot_rfix_models(out / "fig5c.png", rows, [c.name for c in budget.cells]))}
    b_rows = {name: s for (name, r), s in series.items() if abs(r - budget.fig5b_rfix) < 1e-6}
    if b_rows:
        figures["fig5b"] = str(plots.plot_center_force_models(out / "fig5b.png", b_rows, rfix=budget.fig5b_rfix))
    results["figures"] = figures
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    return results


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


#: |F_center| of a model beyond its reach: zero up to the round-off of the crystal's cancellation. SevenNet
#: models compute in single precision: a sum of ~1-10 eV/A contributions cancels to ~1e-6-1e-5 eV/A.
LAW_TOLERANCE = 1e-5


def _law(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per model and R_fix where some frames have every mobile atom beyond the model's force reach.

    The law holds when the model's centre force is the same to the last bit in all those frames (nothing
    beyond the reach enters it) and no larger than :data:`LAW_TOLERANCE` (the crystal's symmetric sum).
    """
    out = []
    for r in rows:
        if r.get("frames_beyond_reach"):
            out.append({"model": r["model"], "rfix": r["rfix"], "force_reach_A": r["force_reach_A"],
                        "frames": r["frames_beyond_reach"],
                        "center_max_model": r["center_max_model_beyond_reach"],
                        "center_spread_model": r["center_spread_model_beyond_reach"],
                        "center_rms_ref": r["center_rms_ref_beyond_reach"],
                        "holds": bool(r["center_spread_model_beyond_reach"] == 0.0
                                      and r["center_max_model_beyond_reach"] <= LAW_TOLERANCE)})
    return out


def format_table(results: Mapping[str, Any]) -> str:
    """The Fig. 5c table as text: one line per model and R_fix."""
    head = (f"{'cell':<6} {'R_fix':>6} {'model':>12} {'reach':>6} {'frames':>6} {'RMS ref':>8} {'RMS mod':>8} "
            f"{'RMSE':>7} {'RMSE/RMS':>8} {'corr':>6} {'mob.RMSE':>8} {'mob.RMS':>8} {'mob.r':>6}")
    lines = ["centre-atom force on frames of reference MD at 4000 K (eV/A); reach = 2*L*r_c (A)", head]
    for r in sorted(results["table"], key=lambda r: (r["cell"] != "paper", r["rfix"], r["layers"] or 99, r["model"])):
        corr = "-" if r["center_correlation"] is None else f"{r['center_correlation']:.2f}"
        ratio = "-" if r["center_rmse_over_rms_ref"] is None else f"{r['center_rmse_over_rms_ref']:.2f}"
        reach = "-" if r["force_reach_A"] is None else f"{r['force_reach_A']:.0f}"
        lines.append(f"{r['cell']:<6} {r['rfix']:>6.2f} {r['model']:>12} {reach:>6} {r['frames']:>6} "
                     f"{r['center_rms_ref']:>8.3f} {r['center_rms_model']:>8.3f} {r['center_rmse']:>7.3f} "
                     f"{ratio:>8} {corr:>6} {r['mobile_rmse']:>8.3f} {r['mobile_rms_ref']:>8.3f} "
                     f"{'-' if r['mobile_correlation'] is None else format(r['mobile_correlation'], '.2f'):>6}")
    for law in results.get("law", []):
        lines.append(f"law: {law['model']} at R_fix {law['rfix']:.2f} A, {law['frames']} frames with every mobile atom "
                     f"beyond {law['force_reach_A']:.0f} A: |F_center| model {law['center_max_model']:.1e} eV/A, the same "
                     f"in every frame to {law['center_spread_model']:.0e}; RMS reference {law['center_rms_ref']:.3f} eV/A "
                     f"-> {'holds' if law['holds'] else 'VIOLATED'}")
    return "\n".join(lines)


def format_markdown(results: Mapping[str, Any]) -> str:
    """The table of :func:`format_table` as Markdown (docs/results/sro-rfix/README.md)."""
    def f(x, fmt=".3f"):
        return "–" if x is None else format(x, fmt)

    lines = ["| cell | R_fix (Å) | model | 2L·r_c (Å) | frames | RMS F_c ref | RMS F_c model | RMSE F_c | RMSE/RMS | "
             "corr F_c | RMSE mobile | RMS mobile ref | RMSE/RMS mobile | corr mobile |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results["table"], key=lambda r: (r["cell"] != "paper", r["rfix"], r["layers"] or 99, r["model"])):
        lines.append(
            f"| {r['cell']} | {r['rfix']:.2f} | {r['model']} | {f(r['force_reach_A'], '.0f')} | {r['frames']} | "
            f"{f(r['center_rms_ref'])} | {f(r['center_rms_model'])} | {f(r['center_rmse'])} | "
            f"{f(r['center_rmse_over_rms_ref'], '.2f')} | {f(r['center_correlation'], '.2f')} | {f(r['mobile_rmse'])} | "
            f"{f(r['mobile_rms_ref'])} | {f(r['mobile_rmse_over_rms_ref'], '.2f')} | {f(r['mobile_correlation'], '.2f')} |")
    return "\n".join(lines)
