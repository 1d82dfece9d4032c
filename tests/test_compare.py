"""nlmd.compare: closed-form metrics on hand-made pairs, every error case, the R_fix sweep, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from nlmd import compare
from nlmd.cli import main
from nlmd.errors import DataMismatchError, InputError
from nlmd.h5md import FixedCore, Frame, TrajectoryReader, TrajectoryWriter

N = 12  # atoms: rows 0..5 Sr, 6..11 O
T = 8  # frames
IDS = np.arange(1, N + 1, dtype=np.int64) * 3  # ids need not be 1..N
SPECIES = np.array([38] * 6 + [8] * 6, dtype=np.int32)
CENTER_ROW = 2  # a Sr atom
CORE_ROWS = [0, 1, 2, 6, 7]  # the centre included
FIXED = FixedCore(center_id=int(IDS[CENTER_ROW]), rfix=3.68, core_ids=IDS[CORE_ROWS])
BOX = np.diag([10.0, 11.0, 12.0])
F_CENTER_REF = np.array([0.0, 3.0, 4.0])  # |F_center| = 5 in every reference frame


def reference_arrays(seed: int = 0, n_frames: int = T):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.0, 10.0, size=(n_frames, N, 3))
    forces = rng.normal(size=(n_frames, N, 3))
    forces[:, CENTER_ROW] = F_CENTER_REF
    pe = rng.normal(size=n_frames) * 10.0 - 50.0
    return pos, forces, pe


def write(
    path: Path,
    *,
    positions,
    forces,
    pe=None,
    steps=None,
    times=None,
    fixed_core=None,
    ids=None,
    species=None,
    box=BOX,
) -> Path:
    """A trajectory file through the one writer; per-frame ids/species/box may be given as (T, ...) arrays."""
    n_frames = len(positions)
    steps = list(range(n_frames)) if steps is None else list(steps)
    times = [0.001 * s for s in steps] if times is None else list(times)

    def per_frame(value, default, t):
        value = default if value is None else np.asarray(value)
        return value[t] if value.ndim == default.ndim + 1 else value

    with TrajectoryWriter(path, fixed_core=fixed_core, flush_every=4) as w:
        for t in range(n_frames):
            w.write(Frame(
                step=steps[t], time=times[t], box=per_frame(box, BOX, t),
                ids=per_frame(ids, IDS, t), species=per_frame(species, SPECIES, t),
                positions=positions[t], forces=None if forces is None else forces[t],
                observables={} if pe is None else {"potential_energy": float(pe[t])},
            ))
    return path


@pytest.fixture
def ref_data():
    return reference_arrays()


@pytest.fixture
def ref_file(tmp_path, ref_data):
    pos, forces, pe = ref_data
    return write(tmp_path / "ref.h5", positions=pos, forces=forces, pe=pe)


def assert_group(metrics, rmse, mae, n_atoms):
    assert metrics["force_rmse"] == pytest.approx(rmse, rel=1e-12, abs=1e-15)
    assert metrics["force_mae"] == pytest.approx(mae, rel=1e-12, abs=1e-15)
    assert metrics["n_atoms"] == n_atoms


# --------------------------------------------------------------------------------------------------
# closed-form metrics
# --------------------------------------------------------------------------------------------------


def test_constant_force_offset(tmp_path, ref_data, ref_file):
    pos, forces, pe = ref_data
    c = np.array([0.3, -0.4, 1.2])  # |c| = 1.3
    model = write(tmp_path / "model.h5", positions=pos, forces=forces + c, pe=pe + N * 0.05, fixed_core=FIXED)
    rep = compare.compare_files(model, ref_file)

    assert rep["n_frames"] == T and rep["n_atoms"] == N
    assert rep["rfix"] == pytest.approx(3.68)
    rmse, mae = math.sqrt((0.09 + 0.16 + 1.44) / 3), (0.3 + 0.4 + 1.2) / 3
    assert_group(rep["all"], rmse, mae, N)
    assert_group(rep["core"], rmse, mae, 5)
    assert_group(rep["mobile"], rmse, mae, N - 5)
    assert set(rep["per_element"]) == {"Sr", "O"}
    assert_group(rep["per_element"]["Sr"], rmse, mae, 6)
    assert_group(rep["per_element"]["O"], rmse, mae, 6)
    center = rep["center"]
    assert center["id"] == FIXED.center_id
    assert center["force_rmse"] == pytest.approx(1.3, rel=1e-12)
    assert center["force_mae"] == pytest.approx(1.3, rel=1e-12)
    assert center["force_rms_ref"] == pytest.approx(5.0, rel=1e-12)
    assert center["force_rms_model"] == pytest.approx(math.sqrt(0.3**2 + 2.6**2 + 5.2**2), rel=1e-12)
    e = rep["energy"]
    assert e["offset_per_atom"] == pytest.approx(0.05, rel=1e-9)
    assert e["mae_per_atom"] == pytest.approx(0.05, rel=1e-9)
    assert e["rmse_per_atom"] == pytest.approx(0.05, rel=1e-9)
    assert rep["units"] == {"force": "eV/Angstrom", "length": "Angstrom", "energy": "eV", "time": "ps"}
    assert rep["frames"] == {
        "model_total": T, "reference_total": T, "first_step": 0, "last_step": T - 1,
        "first_time": 0.0, "last_time": pytest.approx(0.001 * (T - 1)),
    }
    assert rep["model"] == str(model) and rep["reference"] == str(ref_file)
    json.dumps(rep, allow_nan=False)  # JSON-ready, no numpy scalars


def test_single_wrong_atom_in_one_frame(tmp_path, ref_data, ref_file):
    pos, forces, pe = ref_data
    d = 2.0
    wrong = forces.copy()
    wrong[5, CENTER_ROW, 0] += d  # the centre atom (Sr, in the core), frame 5 only
    model = write(tmp_path / "model.h5", positions=pos, forces=wrong, pe=pe, fixed_core=FIXED)
    rep = compare.compare_files(model, ref_file)

    assert_group(rep["all"], math.sqrt(d**2 / (3 * N * T)), d / (3 * N * T), N)
    assert_group(rep["per_element"]["Sr"], math.sqrt(d**2 / (3 * 6 * T)), d / (3 * 6 * T), 6)
    assert_group(rep["per_element"]["O"], 0.0, 0.0, 6)
    assert_group(rep["core"], math.sqrt(d**2 / (3 * 5 * T)), d / (3 * 5 * T), 5)
    assert_group(rep["mobile"], 0.0, 0.0, N - 5)
    assert rep["center"]["force_rmse"] == pytest.approx(math.sqrt(d**2 / T), rel=1e-12)
    assert rep["center"]["force_mae"] == pytest.approx(d / T, rel=1e-12)
    assert rep["center"]["force_rms_ref"] == pytest.approx(5.0, rel=1e-12)
    assert rep["center"]["force_rms_model"] == pytest.approx(math.sqrt((25 * (T - 1) + 29) / T), rel=1e-12)
    assert rep["energy"] == {"mae_per_atom": 0.0, "rmse_per_atom": 0.0, "offset_per_atom": 0.0}


@pytest.mark.parametrize("shift", [False, True])
def test_shifted_energy_zero(tmp_path, ref_data, ref_file, shift):
    pos, forces, pe = ref_data
    delta, eps = -3.0, 0.002  # another energy zero, plus +-eps per atom alternating (mean zero)
    wiggle = np.where(np.arange(T) % 2 == 0, eps, -eps)
    model = write(tmp_path / "model.h5", positions=pos, forces=forces, pe=pe + N * (delta + wiggle))
    rep = compare.compare_files(model, ref_file, shift_energy=shift)

    e = rep["energy"]
    assert e["offset_per_atom"] == pytest.approx(delta, rel=1e-9)
    if shift:
        assert e["mae_per_atom"] == pytest.approx(eps, rel=1e-6)
        assert e["rmse_per_atom"] == pytest.approx(eps, rel=1e-6)
    else:
        assert e["mae_per_atom"] == pytest.approx(abs(delta), rel=1e-9)
        assert e["rmse_per_atom"] == pytest.approx(math.sqrt(delta**2 + eps**2), rel=1e-9)
    assert rep["shift_energy"] is shift
    assert_group(rep["all"], 0.0, 0.0, N)
    assert rep["center"] is None and rep["core"] is None and rep["mobile"] is None and rep["rfix"] is None


def test_energy_missing_in_one_file_is_null(tmp_path, ref_data, ref_file):
    pos, forces, _ = ref_data
    model = write(tmp_path / "model.h5", positions=pos, forces=forces)  # no potential_energy
    rep = compare.compare_files(model, ref_file)
    assert rep["energy"] is None
    assert str(model) in rep["energy_note"]
    assert "energy: not compared" in compare.format_report(rep)


def test_model_with_extra_frames_matches_reference_steps(tmp_path):
    # MD every step, DFT every 10 steps: only the reference's steps are compared
    pos_m, forces_m, pe_m = reference_arrays(seed=1, n_frames=40)
    ref_steps = [0, 10, 20, 30]
    c = np.array([0.1, 0.0, 0.0])
    ref = write(tmp_path / "ref.h5", positions=pos_m[ref_steps], forces=forces_m[ref_steps], pe=pe_m[ref_steps],
                steps=ref_steps, fixed_core=FIXED)
    garbage = forces_m + 1e3
    garbage[ref_steps] = forces_m[ref_steps] + c
    model = write(tmp_path / "model.h5", positions=pos_m, forces=garbage, pe=pe_m)
    rep = compare.compare_files(model, ref)

    assert rep["n_frames"] == 4
    assert rep["frames"]["model_total"] == 40 and rep["frames"]["reference_total"] == 4
    assert (rep["frames"]["first_step"], rep["frames"]["last_step"]) == (0, 30)
    assert_group(rep["all"], 0.1 / math.sqrt(3), 0.1 / 3, N)
    assert rep["center"]["force_rmse"] == pytest.approx(0.1)  # centre id from the reference file alone
    assert rep["energy"]["mae_per_atom"] == 0.0
    # the same numbers whatever the block size (accumulation over blocks)
    for block in (1, 3):
        again = compare.compare_files(model, ref, block_frames=block)
        for key in ("all", "core", "mobile", "per_element", "center", "energy"):
            assert _close(again[key], rep[key]), key


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if a is None or b is None or isinstance(a, (str, int)) and not isinstance(a, bool) and a == b:
        return a == b
    return a == pytest.approx(b, rel=1e-12, abs=1e-15)


def test_match_by_time(tmp_path, ref_data):
    pos, forces, pe = reference_arrays(seed=2, n_frames=20)
    picked = [0, 5, 10, 15]
    # a DFT import numbers its frames 0, 1, 2, ... but keeps the MD times
    ref = write(tmp_path / "ref.h5", positions=pos[picked], forces=forces[picked], pe=pe[picked],
                steps=range(4), times=[0.002 * i for i in picked])
    model = write(tmp_path / "model.h5", positions=pos, forces=forces, pe=pe, steps=range(0, 40, 2),
                  times=[0.002 * i for i in range(20)])
    rep = compare.compare_files(model, ref, by="time")
    assert rep["n_frames"] == 4 and rep["by"] == "time"
    assert rep["all"]["force_rmse"] == 0.0
    with pytest.raises(DataMismatchError, match="different positions"):
        compare.compare_files(model, ref, by="step")  # steps 0, 2 match but hold other frames


def test_periodic_images_and_triclinic_cell(tmp_path, ref_data):
    pos, forces, pe = ref_data
    box = np.array([[10.0, 0.0, 0.0], [3.0, 9.0, 0.0], [1.0, 2.0, 8.0]])
    ref = write(tmp_path / "ref.h5", positions=pos, forces=forces, box=box)
    moved = pos.copy()
    moved[3, 4] += box[1] - 2 * box[2]  # the same atom, another periodic image
    moved[4, 7] += 5e-5  # within the tolerance
    model = write(tmp_path / "model.h5", positions=moved, forces=forces, box=box)
    assert compare.compare_files(model, ref)["n_frames"] == T
    moved[6, 9] += box[0] + np.array([2e-4, 0.0, 0.0])  # an image, but 2e-4 off
    model = write(tmp_path / "model.h5", positions=moved, forces=forces, box=box)
    with pytest.raises(DataMismatchError, match=r"step 6 .*atom id 30 differs by 0.0002"):
        compare.compare_files(model, ref)


def test_match_frames_unit():
    im, ir = compare.match_frames(np.arange(0, 100), np.array([40, 0, 20, 500]))
    assert ir.tolist() == [0, 1, 2] and im.tolist() == [40, 0, 20]
    im, ir = compare.match_frames(np.array([0.0, 0.1, 0.2]), np.array([0.1 + 1e-9, 0.35]), by="time")
    assert im.tolist() == [1] and ir.tolist() == [0]
    with pytest.raises(InputError, match="more than once"):
        compare.match_frames(np.array([0, 1, 1]), np.array([0]))


# --------------------------------------------------------------------------------------------------
# error cases
# --------------------------------------------------------------------------------------------------


def test_no_common_frame(tmp_path, ref_data, ref_file):
    pos, forces, pe = ref_data
    model = write(tmp_path / "model.h5", positions=pos, forces=forces, steps=range(100, 100 + T))
    with pytest.raises(DataMismatchError, match="no frame in common by step") as exc:
        compare.compare_files(model, ref_file)
    assert str(model) in str(exc.value) and str(ref_file) in str(exc.value)


def test_different_ids(tmp_path, ref_data, ref_file):
    pos, forces, _ = ref_data
    ids = IDS.copy()
    ids[-1] += 1
    model = write(tmp_path / "model.h5", positions=pos, forces=forces, ids=ids)
    with pytest.raises(DataMismatchError, match=r"different atoms at step 0: row 11 is atom id 37 .* id 36"):
        compare.compare_files(model, ref_file)


def test_ids_changing_in_a_later_frame(tmp_path, ref_data, ref_file):
    pos, forces, _ = ref_data
    ids = np.tile(IDS, (T, 1))
    ids[3, -1] += 1
    model = write(tmp_path / "model.h5", positions=pos, forces=forces, ids=ids)
    with pytest.raises(DataMismatchError, match="different atoms at step 3"):
        compare.compare_files(model, ref_file)


def test_different_species(tmp_path, ref_data, ref_file):
    pos, forces, _ = ref_data
    species = np.tile(SPECIES, (T, 1))
    species[4, 1] = 8
    model = write(tmp_path / "model.h5", positions=pos, forces=forces, species=species)
    with pytest.raises(DataMismatchError, match=r"different species at step 4: atom id 6 is O .* Sr"):
        compare.compare_files(model, ref_file)


def test_different_positions_names_first_bad_frame_and_largest_deviation(tmp_path, ref_data, ref_file):
    pos, forces, _ = ref_data
    moved = pos.copy()
    moved[5, 2, 1] += 3e-3
    moved[5, 8, 0] += 7e-3  # the largest deviation in the first bad frame
    moved[6, 1, 0] += 1.0  # a later, larger one
    model = write(tmp_path / "model.h5", positions=moved, forces=forces)
    with pytest.raises(DataMismatchError, match=r"positions at step 5 .*atom id 27 differs by 0.007") as exc:
        compare.compare_files(model, ref_file)
    assert str(model) in str(exc.value) and str(ref_file) in str(exc.value)


def test_different_cells(tmp_path, ref_data, ref_file):
    pos, forces, _ = ref_data
    boxes = np.tile(BOX, (T, 1, 1))
    boxes[2, 0, 0] += 0.01
    model = write(tmp_path / "model.h5", positions=pos, forces=forces, box=boxes)
    with pytest.raises(DataMismatchError, match="different cells at step 2"):
        compare.compare_files(model, ref_file)


@pytest.mark.parametrize(
    "dataset, unit",
    [("particles/trajectory/force/value", "kcal mol-1 Angstrom-1"),
     ("particles/trajectory/position/value", "nm"),
     ("observables/trajectory/potential_energy/value", "Hartree")],
)
def test_units_must_be_metal(tmp_path, ref_data, ref_file, dataset, unit):
    pos, forces, pe = ref_data
    model = write(tmp_path / "model.h5", positions=pos, forces=forces, pe=pe)
    with h5py.File(ref_file, "r+") as f:  # a file from another producer
        f[dataset].attrs["unit"] = unit
    with pytest.raises(DataMismatchError, match=unit):
        compare.compare_files(model, ref_file)


def test_missing_forces_and_missing_file(tmp_path, ref_data, ref_file):
    pos, _, _ = ref_data
    model = write(tmp_path / "model.h5", positions=pos, forces=None)
    with pytest.raises(InputError, match="holds no forces"):
        compare.compare_files(model, ref_file)
    with pytest.raises(InputError, match="no such file"):
        compare.compare_files(tmp_path / "absent.h5", ref_file)


def test_fixed_cores_must_agree(tmp_path, ref_data):
    pos, forces, _ = ref_data
    ref = write(tmp_path / "ref.h5", positions=pos, forces=forces, fixed_core=FIXED)
    other = FixedCore(center_id=int(IDS[3]), rfix=3.68, core_ids=FIXED.core_ids)
    model = write(tmp_path / "model.h5", positions=pos, forces=forces, fixed_core=other)
    with pytest.raises(DataMismatchError, match="different centre atoms"):
        compare.compare_files(model, ref)
    other = FixedCore(center_id=FIXED.center_id, rfix=3.68, core_ids=IDS[CORE_ROWS[:-1]])
    model = write(tmp_path / "model.h5", positions=pos, forces=forces, fixed_core=other)
    with pytest.raises(DataMismatchError, match="different fixed cores"):
        compare.compare_files(model, ref)
    # R_fix may differ (nlmd import gives a lower bound): the model's is reported
    model = write(tmp_path / "model.h5", positions=pos, forces=forces,
                  fixed_core=FixedCore(center_id=FIXED.center_id, rfix=3.9, core_ids=FIXED.core_ids))
    rep = compare.compare_files(model, ref)
    assert rep["center"]["id"] == FIXED.center_id and rep["rfix"] == pytest.approx(3.9)


def test_files_without_times(tmp_path, ref_data, ref_file):
    # nlmd import writes NaN times when the DFT file carries no time step
    pos, forces, pe = ref_data
    model = write(tmp_path / "model.h5", positions=pos, forces=forces, pe=pe, times=[float("nan")] * T,
                  fixed_core=FIXED)
    with pytest.raises(InputError, match="no time"):
        compare.compare_files(model, ref_file, by="time")
    rep = compare.compare_files(model, ref_file, plot_dir=tmp_path / "fig")
    assert rep["frames"]["first_time"] is None and rep["frames"]["last_time"] is None
    json.dumps(rep, allow_nan=False)
    assert "t = " not in compare.format_report(rep)


def test_non_finite_forces(tmp_path, ref_data, ref_file):
    pos, forces, _ = ref_data
    bad = forces.copy()
    bad[3, 0, 0] = np.nan
    model = write(tmp_path / "model.h5", positions=pos, forces=bad)
    with pytest.raises(InputError, match="forces at step 3 are not finite") as exc:
        compare.compare_files(model, ref_file)
    assert str(exc.value).startswith(str(model))
    ref = write(tmp_path / "ref_bad.h5", positions=pos, forces=bad)
    with pytest.raises(InputError, match="forces at step 3 are not finite") as exc:
        compare.compare_files(ref_file, ref)  # the NaN is in the second file: named as such
    assert str(exc.value).startswith(str(ref))


# --------------------------------------------------------------------------------------------------
# bounded sampling, histogram, report file
# --------------------------------------------------------------------------------------------------


def test_parity_selection_is_bounded_and_deterministic():
    for frames, atoms in ((10, 5), (10**6, 1000), (3, 10**6)):
        f, a = compare._parity_selection(frames, atoms)
        assert f.size * a.size * 3 <= compare.PARITY_POINTS
        assert f.min() >= 0 and f.max() < frames
        assert np.array_equal(f, compare._parity_selection(frames, atoms)[0])


def test_error_histogram_counts_every_component():
    h = compare._ErrorHistogram(max_bins=50)
    h.add(np.zeros((2, 4, 3)))  # zeros before any width is known
    h.add(np.array([0.01, -0.02, 0.01, 0.02]))  # rms 0.0158 -> width 0.001
    h.add(np.array([0.5, 100.0]))  # beyond 50 bins: counted at the ends
    edges, counts = h.result()
    assert h.width == pytest.approx(0.001)
    assert counts.sum() == 30 and h.clipped == 2
    assert counts[50] == 24 and counts[50 + 10] == 2 and counts[50 - 20] == 1 and counts[-1] == 2
    assert edges.size == counts.size + 1


def test_write_report_is_atomic_json(tmp_path):
    path = compare.write_report({"a": 1.5, "b": None}, tmp_path / "sub" / "report.json")
    assert json.loads(path.read_text()) == {"a": 1.5, "b": None}
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


# --------------------------------------------------------------------------------------------------
# the R_fix sweep and figures
# --------------------------------------------------------------------------------------------------


def make_runs(root: Path, rfixes=(5.82, 2.61, 3.68)) -> Path:
    for k, rfix in enumerate(rfixes):
        run = root / f"r{rfix:.2f}"
        run.mkdir(parents=True)
        pos, forces, pe = reference_arrays(seed=10 + k)
        core = FixedCore(center_id=FIXED.center_id, rfix=rfix, core_ids=FIXED.core_ids)
        err = np.zeros(3)
        err[0] = 0.1 * (k + 1)  # a constant offset: RMSE all = 0.1 (k+1)/sqrt(3)
        write(run / "ref.h5", positions=pos, forces=forces, pe=pe)
        write(run / "model.h5", positions=pos, forces=forces + err, pe=pe, fixed_core=core)
    return root


def test_compare_runs_rfix_table(tmp_path):
    runs = compare.find_runs(make_runs(tmp_path / "sweep"))
    assert [name for name, _, _ in runs] == ["r2.61", "r3.68", "r5.82"]
    out = compare.compare_runs(runs)
    table = out["table"]
    assert [row["rfix"] for row in table] == pytest.approx([2.61, 3.68, 5.82])
    offsets = {5.82: 0.1, 2.61: 0.2, 3.68: 0.3}  # by the order make_runs wrote them
    for row in table:
        d = offsets[round(row["rfix"], 2)]
        assert row["force_rmse_all"] == pytest.approx(d / math.sqrt(3), rel=1e-12)
        assert row["force_rmse_center"] == pytest.approx(d, rel=1e-12)
        assert row["force_rms_center_ref"] == pytest.approx(5.0, rel=1e-12)
        assert row["force_rms_center_model"] == pytest.approx(math.hypot(d, 3.0, 4.0), rel=1e-12)
    assert out["n_runs"] == 3 and [r["name"] for r in out["runs"]] == ["r2.61", "r3.68", "r5.82"]
    text = compare.format_runs(out)
    assert "R_fix" in text and "r3.68" in text


def test_find_runs_errors(tmp_path):
    with pytest.raises(InputError, match="no run found"):
        compare.find_runs(tmp_path)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.h5").write_bytes(b"")
    with pytest.raises(InputError, match="no ref.h5"):
        compare.find_runs(tmp_path)


def test_figures(tmp_path):
    root = make_runs(tmp_path / "sweep", rfixes=(2.61, 5.82))
    out = compare.compare_runs(compare.find_runs(root), plot_dir=tmp_path / "fig")
    assert Path(out["figures"]["rfix"]).stat().st_size > 1000
    for rep in out["runs"]:
        assert set(rep["figures"]) == {"center_force", "parity", "error_histogram"}
        for path in rep["figures"].values():
            assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert Path(path).parent == tmp_path / "fig" / rep["name"]


# --------------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------------


def test_cli_single_pair_json(tmp_path, ref_data, ref_file):
    pos, forces, pe = ref_data
    model = write(tmp_path / "model.h5", positions=pos, forces=forces + 0.5, pe=pe, fixed_core=FIXED)
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["compare", str(model), str(ref_file), "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "all" in result.stdout and "centre atom id 9" in result.stdout
    data = json.loads(report.read_text())
    assert data["all"]["force_rmse"] == pytest.approx(0.5)
    assert data == json.loads(json.dumps(compare.compare_files(model, ref_file)))


def test_cli_runs_and_pairs(tmp_path):
    root = make_runs(tmp_path / "sweep")
    report = tmp_path / "runs.json"
    result = CliRunner().invoke(main, ["compare", "--runs", str(root), "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["n_runs"] == 3
    pairs = []
    for name in ("r2.61", "r5.82"):
        pairs += ["--pair", str(root / name / "model.h5"), str(root / name / "ref.h5")]
    result = CliRunner().invoke(main, ["compare", *pairs])
    assert result.exit_code == 0, result.output
    assert "r2.61" in result.stdout and "r5.82" in result.stdout


@pytest.mark.parametrize("args", [
    ["MODEL", "BAD"],  # positions differ
    ["MODEL", "ABSENT"],
    [],
    ["MODEL"],
    ["MODEL", "REF", "--runs", "DIR"],
])
def test_cli_bad_input_is_one_line_exit_1(tmp_path, ref_data, ref_file, args):
    pos, forces, _ = ref_data
    model = write(tmp_path / "model.h5", positions=pos, forces=forces)
    bad = write(tmp_path / "bad.h5", positions=pos + 0.5, forces=forces)
    names = {"MODEL": str(model), "REF": str(ref_file), "BAD": str(bad), "ABSENT": str(tmp_path / "absent.h5"),
             "DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["compare", *[names.get(a, a) for a in args]])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nlmd: error: ")


def test_reader_sees_what_compare_checks(ref_file):
    # guard against the layout drifting under compare: the units and boundary it relies on
    with TrajectoryReader(ref_file) as r:
        assert r.units["force"] == "eV Angstrom-1" and r.units["position"] == "Angstrom"
        assert r.boundary == ("periodic",) * 3


def test_element_names_in_the_report():
    assert compare._symbol(38) == "Sr" and compare._symbol(8) == "O" and compare._symbol(118) == "Og"
    assert compare._symbol(0) == "Z0" and compare._symbol(200) == "Z200"  # no element: named by number


def test_cli_end_to_end_subprocess(tmp_path, ref_data, ref_file):
    import os
    import subprocess
    import sys

    import nlmd

    pos, forces, pe = ref_data
    model = write(tmp_path / "model.h5", positions=pos, forces=forces + 0.25, pe=pe)
    env = {**os.environ, "PYTHONPATH": str(Path(nlmd.__file__).parents[1])}
    ok = subprocess.run([sys.executable, "-m", "nlmd", "compare", str(model), str(ref_file),
                         "--json", str(tmp_path / "r.json")], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "r.json").read_text())["all"]["force_mae"] == pytest.approx(0.25)
    bad = subprocess.run([sys.executable, "-m", "nlmd", "compare", str(model), str(tmp_path / "none.h5")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "none.h5" in bad.stderr
