"""Forces and energies of a model trajectory against a reference (DFT) on the same frames.

:func:`compare_files` matches the frames of two trajectory files by step (or time), checks that they
describe the same atoms at the same positions, and accumulates force and energy errors in one pass over
blocks of frames (float64 sums per atom), so memory does not grow with the number of frames.
:func:`compare_runs` does it for several runs of a fixed-core sweep and adds the R_fix table (Kang
2024, Fig. 5c). Metric definitions and the report's JSON keys are in ``docs/compare.md``.

The model file may hold more frames than the reference (MD every step, DFT every 20 fs): only the
frames whose step (or time) is in both files are compared.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from nlmd.errors import DataMismatchError, InputError
from nlmd.outputs import write_json

__all__ = [
    "compare_files",
    "compare_runs",
    "find_runs",
    "match_frames",
    "format_report",
    "format_runs",
    "write_report",
    "REPORT_VERSION",
]

#: Version of the JSON report layout (bump when keys change meaning).
REPORT_VERSION = 1
#: Atom-frames per block read (each (B, N, 3) float64 array is 24 bytes per atom-frame: 3 MB).
BLOCK_ATOM_FRAMES = 1 << 17
#: Atom-frames per sub-block reduced at once (arrays that stay in the CPU cache).
SUB_ATOM_FRAMES = 1 << 13
#: Most force components kept for the parity plot (chosen deterministically, evenly over frames).
PARITY_POINTS = 200_000
#: Default tolerance (ps) for matching frames by time.
TIME_TOL = 1e-6

#: Accepted spellings of the units nlmd compares in (files must be in LAMMPS metal units).
_UNITS = {
    "force": ("eV/Angstrom", {"eV Angstrom-1", "eV/Angstrom", "eV A-1", "eV/A", "eV Å-1", "eV/Å"}),
    "position": ("Angstrom", {"Angstrom", "A", "Å"}),
    "potential_energy": ("eV", {"eV"}),
    "time": ("ps", {"ps"}),
}


# --------------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------------


def match_frames(
    model_keys: np.ndarray,
    ref_keys: np.ndarray,
    *,
    by: str = "step",
    time_tol: float = TIME_TOL,
    names: tuple[str, str] = ("model", "reference"),
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(im, ir)`` of the frames present in both files, in ascending reference order.

    ``by="step"`` matches equal steps; ``by="time"`` matches each reference time with the nearest model
    time within ``time_tol`` (ps). Keys must be unique within each file (InputError otherwise). An
    empty result is returned as two empty arrays; the caller decides whether that is an error.
    """
    if by not in ("step", "time"):
        raise InputError(f"frames are matched by 'step' or 'time', not {by!r}")
    for keys, name in ((model_keys, names[0]), (ref_keys, names[1])):
        uniq, counts = np.unique(keys, return_counts=True)
        if uniq.size != keys.size:
            dup = uniq[counts > 1][0]
            hint = " (try --by time)" if by == "step" else ""
            raise InputError(f"{name} holds {by} {dup} more than once, so its frames cannot be matched by {by}{hint}")
    if by == "step":
        _, im, ir = np.intersect1d(model_keys, ref_keys, assume_unique=True, return_indices=True)
    else:
        if model_keys.size == 0 or ref_keys.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        order = np.argsort(model_keys, kind="stable")
        sorted_keys = model_keys[order]
        pos = np.searchsorted(sorted_keys, ref_keys)
        lo = np.clip(pos - 1, 0, sorted_keys.size - 1)
        hi = np.clip(pos, 0, sorted_keys.size - 1)
        nearest = np.where(np.abs(sorted_keys[lo] - ref_keys) <= np.abs(sorted_keys[hi] - ref_keys), lo, hi)
        ok = np.abs(sorted_keys[nearest] - ref_keys) <= time_tol
        ir = np.flatnonzero(ok)
        im = order[nearest[ok]]
        if np.unique(im).size != im.size:
            raise InputError(
                f"two frames of {names[1]} match the same frame of {names[0]} within {time_tol:g} ps; "
                "use a smaller time tolerance"
            )
    order = np.argsort(ir, kind="stable")
    return np.asarray(im, np.int64)[order], np.asarray(ir, np.int64)[order]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _symbol(z: int) -> str:
    z = int(z)
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z{z}"


def _check_unit(reader, key: str, label: str) -> str:
    """The unit of ``key`` in ``reader``'s file, normalised; DataMismatchError if it is not metal."""
    canonical, accepted = _UNITS[label]
    unit = reader.units.get(key)
    if unit is None:
        raise DataMismatchError(f"{reader.path}: {key} has no unit attribute; nlmd compare needs {canonical}")
    if unit not in accepted:
        raise DataMismatchError(f"{reader.path}: {key} is in {unit!r}; nlmd compare needs {canonical}")
    return canonical


class _RowPlan:
    """How to read frames ``idx`` of one file: one read per block, one per run of frames if sparse.

    A span at most twice as long as ``idx`` is read at once and subsampled; sparser indices (a model
    file with every MD step against DFT every 20 steps) are read run by run of consecutive frames.
    """

    # TODO(h5md): a reader.read(series, index=idx) (h5py point/strided selection) would replace this.
    def __init__(self, idx: np.ndarray) -> None:
        idx = np.asarray(idx, dtype=np.int64)
        self.inverse = None
        if idx.size > 1 and not np.all(idx[1:] > idx[:-1]):
            idx, self.inverse = np.unique(idx, return_inverse=True)
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        self.span = (lo, hi) if hi - lo <= 2 * idx.size else None
        self.take = None if self.span is None or hi - lo == idx.size else idx - lo
        if self.span is None:
            breaks = np.flatnonzero(np.diff(idx) != 1) + 1
            self.runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(idx, breaks)]

    def read(self, reader, series: str) -> np.ndarray:
        if self.span is not None:
            arr = reader.read(series, *self.span)
            if self.take is not None:
                arr = arr[self.take]
        else:
            arr = np.concatenate([reader.read(series, a, b) for a, b in self.runs])
        return arr if self.inverse is None else arr[self.inverse]


def _minimum_image_norm(d: np.ndarray, box: np.ndarray, periodic: np.ndarray) -> np.ndarray:
    """|d| (B,N) of the shortest image along periodic directions (``ase.geometry.find_mic``, any cell).

    ``box`` is (B,3,3) with rows the cell vectors. A singular cell (no box) leaves ``d`` as it is.
    """
    from ase.geometry import find_mic

    d = np.asarray(d, dtype=np.float64)
    out = np.sqrt(np.einsum("bni,bni->bn", d, d))
    if periodic.any():
        for b in range(d.shape[0]):
            ok = np.isfinite(d[b]).all(axis=1)
            if abs(np.linalg.det(box[b])) >= 1e-12 and ok.any():
                out[b, ok] = find_mic(d[b][ok], box[b], periodic)[1]
    return out


def _resolve_fixed_core(model, ref):
    """The fixed core described by either file; DataMismatchError if both name different atoms.

    The centre id and the core ids must agree when both files have a core. R_fix may differ (``nlmd
    import`` derives a lower bound from the fixed atoms): the model file's value is used when it has one.
    """
    fm, fr = model.fixed_core, ref.fixed_core
    if fm is not None and fr is not None:
        if fm.center_id != fr.center_id:
            raise DataMismatchError(
                f"{model.path} and {ref.path} name different centre atoms (id {fm.center_id} and id {fr.center_id})"
            )
        if not np.array_equal(fm.core_ids, fr.core_ids):
            diff = np.setxor1d(fm.core_ids, fr.core_ids)
            raise DataMismatchError(
                f"{model.path} and {ref.path} give different fixed cores "
                f"({fm.core_ids.size} and {fr.core_ids.size} atoms; first differing id {int(diff[0])})"
            )
    return fm if fm is not None else fr


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class _ErrorHistogram:
    """Counts of signed force-component errors on fixed-width bins, accumulated block by block.

    The bin width is fixed by the first block with a non-zero error (a tenth of its RMS error, rounded
    down to 1, 2 or 5 × 10^k); bins grow as needed up to ``max_bins`` each side (400 RMS by default),
    beyond which errors are counted in the outermost bins (``clipped`` says how many). Memory is
    bounded; counts are exact.
    """

    def __init__(self, max_bins: int = 4000) -> None:
        self.width: float | None = None
        self.max_bins = max_bins
        self.zeros = 0  # errors seen before the width was fixed (all exactly zero)
        self.counts = np.zeros(1, np.int64)  # bins -k..k, centre bin index k
        self.clipped = 0

    def add(self, err: np.ndarray) -> None:
        err = err.reshape(-1)
        if self.width is None:
            rms = math.sqrt(float(np.dot(err, err)) / max(1, err.size))
            if rms == 0.0:
                self.zeros += err.size
                return
            raw = rms / 10.0
            exp = math.floor(math.log10(raw))
            mant = raw / 10**exp
            self.width = (1.0 if mant < 2 else 2.0 if mant < 5 else 5.0) * 10**exp
        k = np.rint(err / self.width).astype(np.int64)
        kmax = int(np.abs(k).max(initial=0))
        if kmax > self.max_bins:
            self.clipped += int(np.count_nonzero(np.abs(k) > self.max_bins))
            np.clip(k, -self.max_bins, self.max_bins, out=k)
            kmax = self.max_bins
        half = self.counts.size // 2
        if kmax > half:
            grown = np.zeros(2 * kmax + 1, np.int64)
            grown[kmax - half : kmax + half + 1] = self.counts
            self.counts, half = grown, kmax
        self.counts += np.bincount(k + half, minlength=self.counts.size)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(bin edges, counts) in eV/Angstrom."""
        width = self.width or 1e-3
        half = self.counts.size // 2
        counts = self.counts.copy()
        counts[half] += self.zeros
        edges = (np.arange(-half, half + 2) - 0.5) * width
        return edges, counts


# --------------------------------------------------------------------------------------------------
# one pair of files
# --------------------------------------------------------------------------------------------------


def compare_files(
    model_path: str | os.PathLike,
    ref_path: str | os.PathLike,
    *,
    by: str = "step",
    shift_energy: bool = False,
    position_tol: float = 1e-4,
    time_tol: float = TIME_TOL,
    plot_dir: str | os.PathLike | None = None,
    block_frames: int | None = None,
) -> dict[str, Any]:
    """Compare forces and energies of ``model_path`` with ``ref_path`` on their common frames.

    Frames are matched by ``by`` ("step" or "time", within ``time_tol`` ps). Matched frames must hold
    the same atom ids and species and the same positions within ``position_tol`` Angstrom (minimum
    image along periodic directions) in the same cell; forces must be in eV/Angstrom and the potential
    energy in eV in both files. ``shift_energy`` removes the mean per-atom energy difference before the
    energy errors (references with another energy zero). ``plot_dir`` writes the figures there.

    Returns the report (a JSON-ready dict; keys in ``docs/compare.md``). Raises
    :class:`~nlmd.errors.DataMismatchError` when the files do not describe the same frames and
    :class:`~nlmd.errors.InputError` when a file is missing, unreadable or lacks forces.
    """
    from nlmd.h5md import TrajectoryReader

    model_path, ref_path = Path(model_path), Path(ref_path)
    for p in (model_path, ref_path):
        if not p.is_file():
            raise InputError(f"{p}: no such file")
    with TrajectoryReader(model_path) as model, TrajectoryReader(ref_path) as ref:
        return _compare_open(
            model, ref, by=by, shift_energy=shift_energy, position_tol=float(position_tol),
            time_tol=float(time_tol), plot_dir=None if plot_dir is None else Path(plot_dir),
            block_frames=block_frames,
        )


def _compare_open(model, ref, *, by, shift_energy, position_tol, time_tol, plot_dir, block_frames):
    """The comparison of two open files: validate, match, accumulate in one pass, report, plot."""
    units = _check_inputs(model, ref, by)
    im, ir = _match(model, ref, by=by, time_tol=time_tol)
    atoms = _atoms(model, ref, ir)
    want_plots = plot_dir is not None
    forces = _ForceErrors(atoms.n_atoms)
    center = _CenterForce(atoms.center_row, trace=want_plots) if atoms.center_row is not None else None
    parity = _ParitySample(im.size, atoms.n_atoms) if want_plots else None
    hist = _ErrorHistogram() if want_plots else None
    for block in _matched_blocks(model, ref, im, ir, atoms, position_tol, block_frames):
        if center is not None:
            center.add(block.fm, block.fr)
        if parity is not None:
            parity.add(block.p0, block.p1, block.fm, block.fr)
        if not forces.add(block.fm, block.fr, hist):  # consumes block.fm
            _raise_not_finite((model, block.plan_m), (ref, block.plan_r), steps=block.steps)
    report = _report(model, ref, im, ir, atoms, forces, center, by=by, units=units, position_tol=position_tol,
                     shift_energy=shift_energy)
    if want_plots:
        report["figures"] = _plot(plot_dir, model, ref, im, ir, atoms, center, parity, hist, report["per_element"])
    return report


# --- validation and matching


def _check_inputs(model, ref, by: str) -> dict[str, str]:
    """What both files must hold (forces, frames) and in which units; the report's units."""
    for r in (model, ref):
        if not r.has("force"):
            raise InputError(f"{r.path}: holds no forces, so there is nothing to compare")
        if r.n_frames == 0:
            raise InputError(f"{r.path}: holds no frames")
    units = {
        "force": _check_unit(model, "force", "force"),
        "length": _check_unit(model, "position", "position"),
        "energy": "eV",
        "time": "ps",
    }
    _check_unit(ref, "force", "force")
    _check_unit(ref, "position", "position")
    if by == "time":
        _check_unit(model, "time", "time")
        _check_unit(ref, "time", "time")
    return units


def _match(model, ref, *, by: str, time_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`match_frames` on two open files; DataMismatchError when they share no frame."""
    mname, rname = str(model.path), str(ref.path)
    keys = (model.steps, ref.steps) if by == "step" else (model.times, ref.times)
    if by == "time":
        for r, k in ((model, model.times), (ref, ref.times)):
            if not np.all(np.isfinite(k)):
                raise InputError(f"{r.path}: some frames have no time (NaN), so frames cannot be matched by time; "
                                 "match by step, or import with --dt")
    im, ir = match_frames(*keys, by=by, time_tol=time_tol, names=(mname, rname))
    if im.size == 0:
        k = "steps" if by == "step" else "times (ps)"
        km, kr = keys
        raise DataMismatchError(
            f"{mname} and {rname} have no frame in common by {by}: {mname} has {k} {km.min():g}..{km.max():g} "
            f"({km.size} frames), {rname} has {kr.min():g}..{kr.max():g} ({kr.size} frames)"
        )
    return im, ir


@dataclass
class _Atoms:
    """The atoms both files describe (rows by id), and where the fixed core and its centre are."""

    ids: np.ndarray
    species: np.ndarray
    fixed: Any  # FixedCore | None
    center_row: int | None
    core_mask: np.ndarray | None

    @property
    def n_atoms(self) -> int:
        return int(self.ids.size)


def _atoms(model, ref, ir: np.ndarray) -> _Atoms:
    """The first frame's ids and species (checked frame by frame in the pass) and the fixed core."""
    both = f"{model.path} and {ref.path}"
    ids, species = model.ids, model.species
    if model.n_atoms != ref.n_atoms:
        raise DataMismatchError(f"{both} differ in atoms at step {int(ref.steps[ir[0]])}: {model.n_atoms} atoms "
                                f"and {ref.n_atoms} atoms")
    fixed = _resolve_fixed_core(model, ref)
    center_row = core_mask = None
    if fixed is not None:
        center_row = int(np.searchsorted(ids, fixed.center_id))
        if center_row >= ids.size or ids[center_row] != fixed.center_id:
            raise DataMismatchError(
                f"{both}: the centre atom id {fixed.center_id} of the fixed core is not in the files"
            )
        core_mask = np.isin(ids, fixed.core_ids)
        missing = np.setdiff1d(fixed.core_ids, ids)
        if missing.size:
            raise DataMismatchError(f"{both}: fixed-core atom id {int(missing[0])} is not in the files")
    return _Atoms(ids=ids, species=species, fixed=fixed, center_row=center_row, core_mask=core_mask)


@dataclass
class _Block:
    """Forces of matched frames ``p0:p1`` (positions in the match), after their atoms, cells and positions
    were found equal in both files."""

    p0: int
    p1: int
    steps: np.ndarray
    fm: np.ndarray  # (B, N, 3) model forces
    fr: np.ndarray  # (B, N, 3) reference forces
    plan_m: _RowPlan
    plan_r: _RowPlan


def _matched_blocks(model, ref, im, ir, atoms: _Atoms, position_tol: float,
                    block_frames: int | None) -> Iterator[_Block]:
    """The matched frames block by block (one read per series and file), each checked: the same ids and
    species as the first frame, the same cell and the same positions (minimum image) within ``position_tol``."""
    both = f"{model.path} and {ref.path}"
    n_atoms = atoms.n_atoms
    periodic = np.array([b == "periodic" for b in ref.boundary], dtype=bool)
    if block_frames is None:
        block_frames = max(1, BLOCK_ATOM_FRAMES // n_atoms)
    comp_tol = position_tol / math.sqrt(3.0)
    for p0 in range(0, im.size, block_frames):
        p1 = min(p0 + block_frames, im.size)
        plan_m, plan_r = _RowPlan(im[p0:p1]), _RowPlan(ir[p0:p1])
        steps = ref.steps[ir[p0:p1]]
        for series in ("id", "species"):
            _check_constant(model, ref, series, plan_m.read(model, series), plan_r.read(ref, series),
                            atoms.ids, atoms.species, steps)

        boxm, boxr = plan_m.read(model, "box"), plan_r.read(ref, "box")
        dbox = np.abs(boxm - boxr).max(axis=(1, 2))
        if not np.all(dbox <= position_tol):
            j = int(np.argmax(~(dbox <= position_tol)))
            raise DataMismatchError(
                f"{both} have different cells at step {int(steps[j])}: cell vectors differ by up to "
                f"{dbox[j]:.3g} Angstrom (tolerance {position_tol:g})"
            )
        d = plan_m.read(model, "position")
        np.subtract(d, plan_r.read(ref, "position"), out=d)
        if not (d.max() <= comp_tol and -d.min() <= comp_tol):  # else every |d| <= position_tol
            dev = _minimum_image_norm(d, boxr, periodic)
            worst = dev.max(axis=1)
            bad = ~(worst <= position_tol)  # NaN counts as bad
            if bad.any():
                j = int(np.argmax(bad))
                a = int(np.nanargmax(dev[j])) if np.isfinite(dev[j]).any() else 0
                raise DataMismatchError(
                    f"{both} have different positions at step {int(steps[j])} (the first such frame): "
                    f"atom id {int(atoms.ids[a])} differs by {worst[j]:.3g} Angstrom, the largest in that frame "
                    f"(tolerance {position_tol:g}, periodic images considered)"
                )
        del d
        yield _Block(p0, p1, steps, plan_m.read(model, "force"), plan_r.read(ref, "force"), plan_m, plan_r)


# --- accumulators (one pass, memory independent of the number of frames)


class _ForceErrors:
    """Sums over frames of (F_model - F_ref)^2 and |F_model - F_ref| per force component, reduced in
    cache-sized sub-blocks; :meth:`group` turns them into the RMSE and MAE of a set of atoms."""

    def __init__(self, n_atoms: int) -> None:
        self.n_atoms = n_atoms
        self.n_frames = 0
        self.sq3 = np.zeros(3 * n_atoms)
        self.ab3 = np.zeros(3 * n_atoms)
        self.sub = max(1, SUB_ATOM_FRAMES // n_atoms)

    def add(self, fm: np.ndarray, fr: np.ndarray, hist: _ErrorHistogram | None = None) -> bool:
        """Add a block (``fm`` is overwritten with |F_model - F_ref|); False when a difference is not finite."""
        b = fm.shape[0]
        fm2, fr2 = fm.reshape(b, -1), fr.reshape(b, -1)
        for s0 in range(0, b, self.sub):
            err = fm2[s0 : s0 + self.sub]  # becomes F_model - F_ref in place
            np.subtract(err, fr2[s0 : s0 + self.sub], out=err)
            part = np.einsum("bk,bk->k", err, err)
            if not math.isfinite(float(part.sum())):
                return False
            self.sq3 += part
            if hist is not None:
                hist.add(err)
            np.abs(err, out=err)
            self.ab3 += np.add.reduce(err, axis=0)
        self.n_frames += b
        return True

    def group(self, mask: np.ndarray | None = None) -> dict[str, Any] | None:
        """``force_rmse``, ``force_mae`` (eV/Angstrom, over components) and ``n_atoms`` of the atoms in
        ``mask`` (None: all); None for an empty set."""
        sq_atom = self.sq3.reshape(self.n_atoms, 3).sum(axis=1)
        abs_atom = self.ab3.reshape(self.n_atoms, 3).sum(axis=1)
        n = self.n_atoms if mask is None else int(np.count_nonzero(mask))
        if n == 0:
            return None
        count = 3.0 * n * self.n_frames
        s = sq_atom.sum() if mask is None else sq_atom[mask].sum()
        a = abs_atom.sum() if mask is None else abs_atom[mask].sum()
        return {"force_rmse": math.sqrt(s / count), "force_mae": float(a / count), "n_atoms": n}

    def atom_sq(self, row: int) -> float:
        """Sum over frames of |F_model - F_ref|^2 of the atom in ``row``."""
        return float(self.sq3[3 * row : 3 * row + 3].sum())


class _CenterForce:
    """The centre atom's force: sums of |ΔF|, |F_ref|^2 and |F_model|^2 over frames, and (``trace``) the
    force vectors along the run for the F_center(t) figure."""

    def __init__(self, row: int, *, trace: bool = False) -> None:
        self.row = row
        self.norm = self.ref_sq = self.model_sq = 0.0
        self.trace = trace
        self.model: list[np.ndarray] = []
        self.ref: list[np.ndarray] = []

    def add(self, fm: np.ndarray, fr: np.ndarray) -> None:
        cm, cr = fm[:, self.row].copy(), fr[:, self.row].copy()
        dc = cm - cr
        self.norm += float(np.sqrt(np.einsum("bi,bi->b", dc, dc)).sum())
        self.ref_sq += float(np.einsum("bi,bi->", cr, cr))
        self.model_sq += float(np.einsum("bi,bi->", cm, cm))
        if self.trace:
            self.model.append(cm)
            self.ref.append(cr)

    def metrics(self, center_id: int, forces: _ForceErrors) -> dict[str, Any]:
        n = forces.n_frames
        return {
            "id": int(center_id),
            "force_rmse": math.sqrt(forces.atom_sq(self.row) / n),
            "force_mae": self.norm / n,
            "force_rms_ref": math.sqrt(self.ref_sq / n),
            "force_rms_model": math.sqrt(self.model_sq / n),
        }


class _ParitySample:
    """The force components kept for the parity plot: at most PARITY_POINTS, evenly over frames."""

    def __init__(self, n_frames: int, n_atoms: int) -> None:
        self.frames, self.atoms = _parity_selection(n_frames, n_atoms)
        self.model: list[np.ndarray] = []
        self.ref: list[np.ndarray] = []

    def add(self, p0: int, p1: int, fm: np.ndarray, fr: np.ndarray) -> None:
        sel = self.frames[(self.frames >= p0) & (self.frames < p1)] - p0
        if sel.size:
            self.model.append(fm[sel][:, self.atoms].reshape(-1, 3))
            self.ref.append(fr[sel][:, self.atoms].reshape(-1, 3))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(model, reference) components, (K, 3) each."""
        pm = np.concatenate(self.model) if self.model else np.zeros((0, 3))
        pr = np.concatenate(self.ref) if self.ref else np.zeros((0, 3))
        return pm, pr


# --- the report and the figures


def _report(model, ref, im, ir, atoms: _Atoms, forces: _ForceErrors, center: _CenterForce | None, *, by: str,
            units: dict[str, str], position_tol: float, shift_energy: bool) -> dict[str, Any]:
    """The JSON-ready report (keys in docs/compare.md)."""
    per_element = {_symbol(z): forces.group(atoms.species == z) for z in np.unique(atoms.species)}
    energy, energy_note = _energy_metrics(model, ref, im, ir, atoms.n_atoms, shift_energy)
    mtimes = model.times[im]
    fixed, core = atoms.fixed, atoms.core_mask
    return {
        "nlmd_compare": REPORT_VERSION,
        "model": str(model.path),
        "reference": str(ref.path),
        "by": by,
        "n_frames": int(im.size),
        "n_atoms": atoms.n_atoms,
        "frames": {
            "model_total": int(model.n_frames),
            "reference_total": int(ref.n_frames),
            "first_step": int(ref.steps[ir].min()),
            "last_step": int(ref.steps[ir].max()),
            "first_time": _finite_or_none(np.nanmin(mtimes)) if np.isfinite(mtimes).any() else None,
            "last_time": _finite_or_none(np.nanmax(mtimes)) if np.isfinite(mtimes).any() else None,
        },
        "units": units,
        "position_tol": position_tol,
        "shift_energy": bool(shift_energy),
        "rfix": None if fixed is None else float(fixed.rfix),
        "center": center.metrics(fixed.center_id, forces) if center is not None else None,
        "all": forces.group(None),
        "core": forces.group(core) if core is not None else None,
        "mobile": forces.group(~core) if core is not None else None,
        "per_element": per_element,
        "energy": energy,
        "energy_note": energy_note,
        "figures": {},
    }


def _plot(plot_dir: Path, model, ref, im, ir, atoms: _Atoms, center: _CenterForce | None, parity: _ParitySample,
          hist: _ErrorHistogram, per_element: dict) -> dict[str, str]:
    """F_center(t) (with a fixed core), the force parity plot and the error histogram; their paths."""
    from nlmd import plots

    plot_dir.mkdir(parents=True, exist_ok=True)
    figures = {}
    if center is not None:
        mtimes = model.times[im]
        timed = bool(np.all(np.isfinite(mtimes)))
        figures["center_force"] = str(
            plots.plot_center_force(
                plot_dir / "center_force.png", mtimes if timed else ref.steps[ir],
                np.concatenate(center.model), np.concatenate(center.ref),
                center_id=atoms.fixed.center_id, rfix=atoms.fixed.rfix, xlabel="time (ps)" if timed else "step",
            )
        )
    pm, pr = parity.arrays()
    sp = np.tile(atoms.species[parity.atoms], pm.shape[0] // max(1, parity.atoms.size))
    labels = {_symbol(z): sp == z for z in np.unique(atoms.species)}
    figures["parity"] = str(plots.plot_parity(plot_dir / "force_parity.png", pm, pr, labels, per_element))
    edges, counts = hist.result()
    figures["error_histogram"] = str(
        plots.plot_error_histogram(plot_dir / "force_error_histogram.png", edges, counts, clipped=hist.clipped)
    )
    return figures


def _check_atoms(model, ref, ids_m, sp_m, ids_r, sp_r, where: str) -> None:
    both = f"{model.path} and {ref.path}"
    if not np.array_equal(ids_m, ids_r):
        row = int(np.argmax(ids_m != ids_r))
        raise DataMismatchError(
            f"{both} hold different atoms at {where}: row {row} is atom id {int(ids_m[row])} in the first "
            f"and id {int(ids_r[row])} in the second"
        )
    if not np.array_equal(sp_m, sp_r):
        row = int(np.argmax(sp_m != sp_r))
        raise DataMismatchError(
            f"{both} hold different species at {where}: atom id {int(ids_m[row])} is "
            f"{_symbol(sp_m[row])} in the first and {_symbol(sp_r[row])} in the second"
        )


def _check_constant(model, ref, series, am, ar, ids, species, steps) -> None:
    """Ids or species of a block of matched frames: equal in both files and to the first frame's."""
    base = ids if series == "id" else species
    bad = np.any(am != base, axis=1) | np.any(ar != base, axis=1)
    if not bad.any():
        return
    j = int(np.argmax(bad))
    where = f"step {int(steps[j])}"
    if series == "id":
        _check_atoms(model, ref, am[j], species, ar[j], species, where)
    else:
        _check_atoms(model, ref, ids, am[j], ids, ar[j], where)
    # same in both files but not as in frame 0 of the file: rows no longer follow the same atoms
    raise DataMismatchError(
        f"{model.path} and {ref.path}: the atoms' {series} change along the trajectory at {where}; "
        "nlmd compare needs the same atoms in the same rows in every frame"
    )


def _raise_not_finite(*files, steps) -> None:
    """InputError naming the file and step of a block whose forces are NaN or infinite."""
    for reader, plan in files:
        bad = ~np.isfinite(plan.read(reader, "force")).all(axis=(1, 2))
        if bad.any():
            j = int(np.argmax(bad))
            raise InputError(f"{reader.path}: forces at step {int(steps[j])} are not finite (NaN or inf)")
    raise InputError(f"{files[0][0].path} and {files[1][0].path}: force differences overflow (not finite)")


def _energy_metrics(model, ref, im, ir, n_atoms, shift):
    """Per-atom energy metrics from the potential_energy observables, or (None, why not)."""
    missing = [str(r.path) for r in (model, ref) if "potential_energy" not in r.observable_names]
    if missing:
        return None, f"no potential_energy in {' and '.join(missing)}"
    for r in (model, ref):
        _check_unit(r, "potential_energy", "potential_energy")
    em = np.asarray(model.observable("potential_energy"), dtype=np.float64)
    er = np.asarray(ref.observable("potential_energy"), dtype=np.float64)
    if em.ndim != 1 or er.ndim != 1:
        return None, "potential_energy is not a scalar per frame"
    diff = (em[im] - er[ir]) / n_atoms
    if not np.all(np.isfinite(diff)):
        return None, "potential_energy is not finite in every matched frame"
    offset = float(diff.mean())
    err = diff - offset if shift else diff
    note = f"mean offset {offset:.6g} eV/atom removed (--shift-energy)" if shift else None
    return {
        "mae_per_atom": float(np.abs(err).mean()),
        "rmse_per_atom": math.sqrt(float(np.square(err).mean())),
        "offset_per_atom": offset,
    }, note


def _parity_selection(n_frames: int, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Matched-frame positions and atom rows kept for the parity plot (at most PARITY_POINTS components)."""
    per_frame = 3 * n_atoms
    if per_frame > PARITY_POINTS:
        rows = np.unique(np.linspace(0, n_atoms - 1, PARITY_POINTS // 3).round().astype(np.int64))
        return np.array([0], np.int64), rows
    k = min(n_frames, max(1, PARITY_POINTS // per_frame))
    frames = np.unique(np.linspace(0, n_frames - 1, k).round().astype(np.int64))
    return frames, np.arange(n_atoms)


# --------------------------------------------------------------------------------------------------
# several runs: the R_fix sweep
# --------------------------------------------------------------------------------------------------


def find_runs(directory: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """Runs in ``directory``: each subdirectory holding ``model.h5`` and ``ref.h5`` is a run named after it.

    ``.h5md`` is accepted for either file. Subdirectories with neither file are ignored; one with only
    one of them is an InputError, as is a directory with no run.
    """
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"{root}: no such directory")
    runs = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        found = {}
        for role in ("model", "ref"):
            hits = [sub / f"{role}{ext}" for ext in (".h5", ".h5md") if (sub / f"{role}{ext}").is_file()]
            if len(hits) > 1:
                raise InputError(f"{sub}: holds both {hits[0].name} and {hits[1].name}; keep one")
            if hits:
                found[role] = hits[0]
        if len(found) == 1:
            have = next(iter(found.values())).name
            lack = "ref.h5" if "model" in found else "model.h5"
            raise InputError(f"{sub}: has {have} but no {lack} (a run directory needs model.h5 and ref.h5)")
        if found:
            runs.append((sub.name, found["model"], found["ref"]))
    if not runs:
        raise InputError(f"{root}: no run found (expected subdirectories holding model.h5 and ref.h5)")
    return runs


def _run_names(pairs: Sequence[tuple[Path, Path]]) -> list[str]:
    """Short unique names: the model file's stem, else its directory name, else numbered."""
    for make in (lambda m: m.stem, lambda m: m.parent.name or m.stem, lambda m: f"{m.parent.name}/{m.stem}"):
        names = [make(Path(m)) for m, _ in pairs]
        if len(set(names)) == len(names) and all(names):
            return names
    return [f"run{i + 1}" for i in range(len(pairs))]


def compare_runs(
    pairs: Iterable[tuple[str | os.PathLike, str | os.PathLike]]
    | Iterable[tuple[str, str | os.PathLike, str | os.PathLike]],
    *,
    by: str = "step",
    shift_energy: bool = False,
    position_tol: float = 1e-4,
    time_tol: float = TIME_TOL,
    plot_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Compare several (model, reference) pairs and tabulate the errors against R_fix (Fig. 5c).

    ``pairs`` holds ``(model, ref)`` or ``(name, model, ref)`` tuples (:func:`find_runs` gives the
    latter). R_fix is read from the files' fixed core; runs without one are listed last. With
    ``plot_dir`` each run's figures go to ``plot_dir/<name>/`` and the R_fix figure to
    ``plot_dir/rfix.png``.
    """
    items = [tuple(p) for p in pairs]
    if not items:
        raise InputError("no runs to compare")
    if all(len(p) == 3 for p in items):
        names = [str(p[0]) for p in items]
        files = [(Path(p[1]), Path(p[2])) for p in items]
    elif all(len(p) == 2 for p in items):
        files = [(Path(p[0]), Path(p[1])) for p in items]
        names = _run_names(files)
    else:
        raise InputError("runs are given as (model, ref) or (name, model, ref) pairs, not a mixture")
    if len(set(names)) != len(names):
        raise InputError(f"run names must be unique, got {names}")

    runs = []
    for name, (m, r) in zip(names, files):
        rep = compare_files(
            m, r, by=by, shift_energy=shift_energy, position_tol=position_tol, time_tol=time_tol,
            plot_dir=None if plot_dir is None else Path(plot_dir) / name,
        )
        runs.append({"name": name, **rep})
    runs.sort(key=lambda x: (x["rfix"] is None, x["rfix"] if x["rfix"] is not None else 0.0, x["name"]))

    table = []
    for rep in runs:
        c = rep["center"] or {}
        table.append({
            "name": rep["name"],
            "rfix": rep["rfix"],
            "n_frames": rep["n_frames"],
            "force_rmse_all": rep["all"]["force_rmse"],
            "force_rmse_mobile": (rep["mobile"] or {}).get("force_rmse"),
            "force_rmse_center": c.get("force_rmse"),
            "force_rms_center_ref": c.get("force_rms_ref"),
            "force_rms_center_model": c.get("force_rms_model"),
            "energy_mae_per_atom": (rep["energy"] or {}).get("mae_per_atom"),
        })
    out: dict[str, Any] = {
        "nlmd_compare_runs": REPORT_VERSION,
        "n_runs": len(runs),
        "table": table,
        "runs": runs,
        "figures": {},
    }
    if plot_dir is not None:
        rows = [t for t in table if t["rfix"] is not None and t["force_rmse_center"] is not None]
        if rows:
            from nlmd import plots

            path = plots.plot_rfix(Path(plot_dir) / "rfix.png", rows)
            out["figures"]["rfix"] = str(path)
    return out


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------


def write_report(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a report as JSON through a temporary file renamed into place (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, report, allow_nan=False)


def _f(x: float | None, scale: float = 1.0, fmt: str = "{:.4f}") -> str:
    return "-" if x is None else fmt.format(x * scale)


def format_report(rep: dict[str, Any]) -> str:
    """The report as a table for the terminal (forces in eV/Angstrom, energies in meV/atom)."""
    fr = rep["frames"]
    lines = [
        f"model:     {rep['model']}",
        f"reference: {rep['reference']}",
        f"matched {rep['n_frames']} of {fr['reference_total']} reference frames by {rep['by']} "
        f"(model holds {fr['model_total']}; steps {fr['first_step']}..{fr['last_step']}"
        + (f", t = {fr['first_time']:.4g}..{fr['last_time']:.4g} ps" if fr["first_time"] is not None else "")
        + f"), {rep['n_atoms']} atoms"
        + (f", R_fix = {rep['rfix']:.3f} Angstrom" if rep["rfix"] is not None else ""),
        "",
        f"{'forces (eV/Angstrom)':<24}{'RMSE':>10}{'MAE':>10}{'atoms':>8}",
    ]
    rows = [("all", rep["all"]), ("core (fixed)", rep["core"]), ("mobile", rep["mobile"])]
    rows += [(sym, m) for sym, m in rep["per_element"].items()]
    for label, m in rows:
        if m is None:
            continue
        lines.append(f"  {label:<22}{m['force_rmse']:>10.4f}{m['force_mae']:>10.4f}{m['n_atoms']:>8d}")
    c = rep["center"]
    if c is not None:
        lines += [
            f"  centre atom id {c['id']:<7}{c['force_rmse']:>10.4f}{c['force_mae']:>10.4f}        1"
            "   (|F_model - F_ref|)",
            f"  RMS |F_center|: reference {c['force_rms_ref']:.4f}, model {c['force_rms_model']:.4f}",
        ]
    else:
        lines.append("  (no fixed core in either file: no centre-atom metrics)")
    lines.append("")
    e = rep["energy"]
    if e is None:
        lines.append(f"energy: not compared ({rep['energy_note']})")
    else:
        lines.append(
            f"energy (meV/atom): MAE {e['mae_per_atom'] * 1e3:.3f}, RMSE {e['rmse_per_atom'] * 1e3:.3f}, "
            f"mean offset (model - ref) {e['offset_per_atom'] * 1e3:.3f}"
            + (" (removed before the errors)" if rep["shift_energy"] else "")
        )
    for name, path in rep.get("figures", {}).items():
        lines.append(f"figure {name}: {path}")
    return "\n".join(lines)


def format_runs(out: dict[str, Any]) -> str:
    """The R_fix table for the terminal (eV/Angstrom)."""
    head = (
        f"{'run':<16}{'R_fix':>8}{'frames':>8}{'RMSE all':>10}{'RMSE mob':>10}{'RMSE ctr':>10}"
        f"{'RMS|Fc| ref':>13}{'RMS|Fc| mod':>13}"
    )
    lines = ["force errors against R_fix (eV/Angstrom; R_fix in Angstrom)", head]
    for t in out["table"]:
        lines.append(
            f"{t['name'][:15]:<16}{_f(t['rfix'], fmt='{:.3f}'):>8}{t['n_frames']:>8d}"
            f"{_f(t['force_rmse_all']):>10}{_f(t['force_rmse_mobile']):>10}{_f(t['force_rmse_center']):>10}"
            f"{_f(t['force_rms_center_ref']):>13}{_f(t['force_rms_center_model']):>13}"
        )
    for name, path in out.get("figures", {}).items():
        lines.append(f"figure {name}: {path}")
    return "\n".join(lines)
