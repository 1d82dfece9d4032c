"""Figures of ``nlmd compare``: F_center(t), force parity, error histogram, errors against R_fix.

Each function takes arrays already reduced by :mod:`nlmd.compare` (one atom per frame, a bounded
sample, histogram counts), writes one PNG with matplotlib's Agg canvas and returns its path.
matplotlib is imported inside the functions so importing nlmd stays fast, and no pyplot state is used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_center_force", "plot_parity", "plot_error_histogram", "plot_rfix", "plot_rfix_models",
           "plot_center_force_models", "plot_point_charges"]

_DPI = 120
_MODEL, _REF, _ERR = "tab:blue", "black", "tab:red"


def _figure(width: float, height: float, rows: int = 1, **kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, **kw)
    return fig, axes


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def plot_center_force(
    path: str | os.PathLike,
    times: np.ndarray,
    f_model: np.ndarray,
    f_ref: np.ndarray,
    *,
    center_id: int,
    rfix: float | None = None,
    xlabel: str = "time (ps)",
) -> Path:
    """|F_center| of model and reference against time, and |F_model - F_ref| below (Fig. 5b).

    ``times`` may be steps instead (files without times); say so with ``xlabel``.
    """
    times = np.asarray(times, dtype=float)
    nm = np.linalg.norm(f_model, axis=1)
    nr = np.linalg.norm(f_ref, axis=1)
    err = np.linalg.norm(np.asarray(f_model) - np.asarray(f_ref), axis=1)
    order = np.argsort(times, kind="stable")
    times, nm, nr, err = times[order], nm[order], nr[order], err[order]
    fig, (top, bottom) = _figure(6.0, 4.2, rows=2, sharex=True, height_ratios=[2, 1])
    sparse = times.size <= 400
    top.plot(times, nm, "-", color=_MODEL, lw=1.2, label="model")
    top.plot(times, nr, "o" if sparse else "-", color=_REF, ms=3, lw=0.8, mfc="none", label="reference")
    top.set_ylabel(r"$|F_\mathrm{center}|$ (eV/Å)")
    title = f"centre atom id {center_id}"
    if rfix is not None:
        title += f", $R_\\mathrm{{fix}}$ = {rfix:.2f} Å"
    top.set_title(title, fontsize=10)
    top.legend(frameon=False, fontsize=8)
    top.set_ylim(bottom=0)
    bottom.plot(times, err, "-", color=_ERR, lw=1.0)
    bottom.set_ylabel(r"$|F_\mathrm{model}-F_\mathrm{ref}|$", fontsize=9)
    bottom.set_xlabel(xlabel)
    bottom.set_ylim(bottom=0)
    return _save(fig, path)


def plot_parity(
    path: str | os.PathLike,
    f_model: np.ndarray,
    f_ref: np.ndarray,
    masks: Mapping[str, np.ndarray],
    metrics: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> Path:
    """Model against reference force components, one colour per element (rows selected by ``masks``)."""
    fig, ax = _figure(4.6, 4.4)
    fm = np.asarray(f_model).reshape(-1, 3)
    fr = np.asarray(f_ref).reshape(-1, 3)
    n_points = 0
    for symbol, mask in masks.items():
        x, y = fr[mask].ravel(), fm[mask].ravel()
        n_points += x.size
        label = symbol
        m = (metrics or {}).get(symbol)
        if m:
            label += f" (RMSE {m['force_rmse']:.3f})"
        ax.scatter(x, y, s=2, alpha=0.4, linewidths=0, label=label, rasterized=True)
    if n_points:
        lo = float(min(fr.min(), fm.min()))
        hi = float(max(fr.max(), fm.max()))
        pad = 0.05 * (hi - lo or 1.0)
        lo, hi = lo - pad, hi + pad
    else:
        lo, hi = -1.0, 1.0
    ax.plot([lo, hi], [lo, hi], "-", color="0.5", lw=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("reference force component (eV/Å)")
    ax.set_ylabel("model force component (eV/Å)")
    ax.set_title(f"force parity ({n_points} components)", fontsize=10)
    if masks:
        ax.legend(frameon=False, fontsize=8, markerscale=4, loc="upper left")
    return _save(fig, path)


def plot_error_histogram(
    path: str | os.PathLike, edges: np.ndarray, counts: np.ndarray, *, clipped: int = 0
) -> Path:
    """Histogram (log counts) of signed force-component errors F_model - F_ref, empty tails trimmed."""
    edges = np.asarray(edges, dtype=float)
    counts = np.asarray(counts)
    nz = np.flatnonzero(counts)
    if nz.size:
        a, b = max(0, nz[0] - 1), min(counts.size, nz[-1] + 2)
        edges, counts = edges[a : b + 1], counts[a:b]
    fig, ax = _figure(5.0, 3.4)
    centres = 0.5 * (edges[:-1] + edges[1:])
    ax.hist(centres, bins=edges, weights=counts, log=True, color=_ERR, alpha=0.7, histtype="stepfilled")
    ax.set_xlabel(r"$F_\mathrm{model}-F_\mathrm{ref}$ per component (eV/Å)")
    ax.set_ylabel("count")
    title = f"force-component errors ({int(counts.sum())} components)"
    if clipped:
        title += f", {clipped} beyond the range counted at its ends"
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_rfix(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Force RMSE (all atoms, centre atom) and RMS |F_center| (reference, model) against R_fix (Fig. 5c).

    ``rows`` are entries of the ``table`` of :func:`nlmd.compare.compare_runs` that have an R_fix.
    """
    rows = sorted(rows, key=lambda r: r["rfix"])
    x = np.array([r["rfix"] for r in rows], dtype=float)

    def col(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)

    fig, ax = _figure(5.0, 3.8)
    ax.plot(x, col("force_rms_center_ref"), "s-", color=_REF, mfc="none", label=r"RMS $|F_\mathrm{center}|$ reference")
    ax.plot(x, col("force_rms_center_model"), "s--", color=_MODEL, mfc="none", label=r"RMS $|F_\mathrm{center}|$ model")
    ax.plot(x, col("force_rmse_center"), "o-", color=_ERR, label="force RMSE, centre atom")
    ax.plot(x, col("force_rmse_all"), "^-", color="tab:green", label="force RMSE, all atoms")
    ax.set_xlabel(r"$R_\mathrm{fix}$ (Å)")
    ax.set_ylabel("force (eV/Å)")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def plot_rfix_models(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], cells: Sequence[str]) -> Path:
    """Fig. 5c for several models: centre-force RMSE (solid) and RMS |F_center| (dashed) against R_fix.

    ``rows`` are the table rows of :func:`nlmd.experiments.sro_rfix.run_experiment` (model, cell, rfix,
    center_rmse, center_rms_model, center_rms_ref, force_reach_A); one panel per cell, the reference's RMS
    in black, each model's force reach 2·L·r_c marked where it falls inside the panel's R_fix range.
    """
    import matplotlib

    cells = [c for c in cells if any(r["cell"] == c for r in rows)] or ["-"]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(cells), 3.9), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(cells), squeeze=False)
    models = sorted({r["model"] for r in rows}, key=lambda m: min((r["layers"] or 99) for r in rows if r["model"] == m))
    colors = {m: matplotlib.colormaps["tab10"](i) for i, m in enumerate(models)}
    for ax, cell in zip(axes[0], cells):
        sel = [r for r in rows if r["cell"] == cell]
        if not sel:
            continue
        ref = {}
        for r in sel:
            ref.setdefault(r["rfix"], []).append(r["center_rms_ref"])
        xr = np.array(sorted(ref))
        ax.plot(xr, [np.mean(ref[x]) for x in xr], "s-", color=_REF, mfc="none", label=r"RMS $|F_\mathrm{center}|$ reference")
        for m in models:
            mr = sorted((r for r in sel if r["model"] == m), key=lambda r: r["rfix"])
            if not mr:
                continue
            x = np.array([r["rfix"] for r in mr])
            ax.plot(x, [r["center_rmse"] for r in mr], "o-", color=colors[m], label=f"{m}: RMSE")
            ax.plot(x, [r["center_rms_model"] for r in mr], "^--", color=colors[m], mfc="none", lw=0.9,
                    label=f"{m}: RMS $|F_\\mathrm{{center}}|$")
            reach = mr[0].get("force_reach_A")
            if reach is not None and x.min() <= reach <= x.max():
                ax.axvline(reach, color=colors[m], ls=":", lw=1.0)
                ax.text(reach, ax.get_ylim()[1] * 0.02, f" 2L·r$_c$ = {reach:.0f} Å", color=colors[m], fontsize=7,
                        rotation=90, va="bottom")
        box = sel[0].get("box")
        ax.set_title(f"{cell} cell" + (f" ({box:.2f} Å)" if box else ""), fontsize=10)
        ax.set_xlabel(r"$R_\mathrm{fix}$ (Å)")
        ax.set_ylabel("force on the centre atom (eV/Å)")
        ax.set_ylim(bottom=0)
    axes[0][0].legend(frameon=False, fontsize=7)
    return _save(fig, path)


def plot_center_force_models(path: str | os.PathLike, series: Mapping[str, Mapping[str, Any]], *,
                             rfix: float, component: int = 0) -> Path:
    """Fig. 5b for several models: one component of F_center against the step, reference and models.

    ``series[name]`` holds ``steps``, ``fm`` (model, (T,3)) and ``fr`` (reference, (T,3)) on common steps.
    """
    import matplotlib

    fig, (top, bottom) = _figure(6.4, 4.4, rows=2, sharex=True, height_ratios=[2, 1])
    axis = "xyz"[component]
    longest = max(series.values(), key=lambda s: len(s["steps"]))
    top.plot(np.asarray(longest["steps"]) * 1e-3, np.asarray(longest["fr"])[:, component], "-", color=_REF, lw=1.4,
             label="reference")
    for i, (name, s) in enumerate(sorted(series.items())):
        c = matplotlib.colormaps["tab10"](i)
        t = np.asarray(s["steps"]) * 1e-3
        top.plot(t, np.asarray(s["fm"])[:, component], "-", color=c, lw=0.9, label=name)
        bottom.plot(t, np.linalg.norm(np.asarray(s["fm"]) - np.asarray(s["fr"]), axis=1), "-", color=c, lw=0.8)
    top.set_ylabel(f"$F_{{\\mathrm{{center}},{axis}}}$ (eV/Å)")
    top.set_title(f"force on the centre atom, $R_\\mathrm{{fix}}$ = {rfix:.2f} Å", fontsize=10)
    top.legend(frameon=False, fontsize=7, ncol=2)
    bottom.set_ylabel(r"$|F_\mathrm{model}-F_\mathrm{ref}|$", fontsize=9)
    bottom.set_xlabel("time (ps; steps of 1 fs)")
    bottom.set_ylim(bottom=0)
    return _save(fig, path)


def plot_point_charges(out: str | os.PathLike, results: Mapping[str, Any]) -> dict[str, Path]:
    """The toy model's figures (Kang 2024, Figs. 2b, 3c/e, 4): ``fig2b.png``, ``fig3.png``, ``fig4.png``.

    ``results`` is :func:`nlmd.experiments.point_charges.probe`'s: rows per potential and d with the mean and
    std of ΔF_z and ΔE of the +1e particle between types I and II, the relative error and normalised std.
    """
    out = Path(out)
    k = float(results["coulomb_k_eVA"])
    models = [p for p in results["potentials"] if p["layers"]]
    colours = {p["name"]: c for p, c in zip(models, ("tab:blue", "tab:orange", "tab:green", "tab:purple"))}

    def rows(name: str) -> list[Mapping[str, Any]]:
        return sorted((r for r in results["rows"] if r["potential"] == name), key=lambda r: r["d"])

    ds = np.array(sorted({r["d"] for r in results["rows"]}))
    dd = np.linspace(ds.min(), ds.max(), 200)
    trained = (4.0, 8.0)

    def regions(ax) -> None:
        ax.axvspan(*trained, color="tab:green", alpha=0.12, lw=0, label="trained d")
        for p in models:
            for m in range(1, p["layers"] + 1):
                x = m * p["cutoff"]
                if ds.min() <= x <= ds.max():
                    ax.axvline(x, color=colours[p["name"]], ls=":", lw=0.8)

    figs: dict[str, Path] = {}
    fig, ax = _figure(6.0, 4.0)
    ax.plot(dd, k / dd ** 2, color=_REF, ls="--", lw=1, label="k/d²")
    for p in models:
        r = rows(p["name"])
        ax.errorbar([x["d"] for x in r], [x["dF_mean"] for x in r], yerr=[x["dF_std"] for x in r], fmt="o", ms=3,
                    capsize=2, color=colours[p["name"]], label=f"{p['name']} ({p['layers']} layers)")
    regions(ax)
    ax.set_yscale("symlog", linthresh=0.02)
    ax.set_xlabel("d (Å)")
    ax.set_ylabel("F_z(+1e, I) − F_z(+1e, II) (eV/Å)")
    ax.set_title("Force of the −1e particle on the +1e particle (dotted: L·r_c)")
    ax.legend(fontsize=7)
    figs["fig2b"] = _save(fig, out / "fig2b.png")

    fig, axes = _figure(6.0, 6.0, rows=2, sharex=True)
    for key, ax, label in (("relative_error", axes[0], "relative error (RMSE / (k/d²))"),
                           ("normalised_std", axes[1], "normalised std (std / (k/d²))")):
        for p in models:
            r = rows(p["name"])
            ax.plot([x["d"] for x in r], [x[key] for x in r], "o-", ms=3, color=colours[p["name"]],
                    label=f"{p['layers']} layers")
        regions(ax)
        ax.axhline(results["tolerance"], color="gray", lw=0.6)
        ax.set_yscale("log")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("d (Å)")
    figs["fig3"] = _save(fig, out / "fig3.png")

    fig, ax = _figure(6.0, 4.0)
    ax.plot(dd, k / dd, color=_REF, ls="--", lw=1, label="k/d (pair energy)")
    ax.plot(dd, -k / dd, color=_REF, ls=":", lw=1, label="−k/d")
    ax.plot(dd, -k / (2 * dd), color="gray", ls="-.", lw=0.8, label="−k/(2d): the reference's half")
    for p in results["potentials"]:
        r = rows(p["name"])
        colour = colours.get(p["name"], "gray")
        ax.errorbar([x["d"] for x in r], [x["dE_mean"] for x in r], yerr=[x["dE_std"] for x in r], fmt="o", ms=3,
                    capsize=2, color=colour, label=p["name"] if p["layers"] else "reference (LAMMPS: half the pair)")
    regions(ax)
    ax.set_xlabel("d (Å)")
    ax.set_ylabel("E(+1e, I) − E(+1e, II) (eV)")
    ax.legend(fontsize=7)
    figs["fig4"] = _save(fig, out / "fig4.png")
    return figs
