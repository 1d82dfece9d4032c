"""``nlmd experiment``: the SrO training recipe and the fixed-core sweep, on tiny budgets.

The same code made the shipped models and docs/results/sro-rfix (full budgets); here it runs in about a
minute: a 1-layer model trained for 2 epochs by sevenn, and a sweep whose law is exact.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO

from nlmd.cli import main
from nlmd.errors import InputError
from nlmd.experiments import sro_rfix as X
from nlmd.experiments.training import RECIPES, sevenn_input, train


@pytest.fixture(scope="module")
def one_layer_short(tmp_path_factory):
    """A random 1-layer SevenNet with a 2.7 A cutoff, deployed (TorchScript): it sees 2·r_c = 5.4 A far."""
    from nlmd.deploy import deploy
    from nlmd.testing import make_tiny_checkpoint

    d = tmp_path_factory.mktemp("short")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cp = make_tiny_checkpoint(d / "short.pth", ("Sr", "O"), cutoff=2.7, num_layers=1, seed=3)
        return deploy(cp, d / "short", parallel=False, aot=False, verify=False, echo=lambda s: None)


def test_sevenn_input_follows_the_recipe(tmp_path):
    text = sevenn_input(RECIPES["full"], 3, tmp_path)
    assert "num_convolution_layer: 3" in text and "cutoff: 5.0" in text and "bessel_basis_num: 8" in text
    assert f"load_trainset_path: ['{tmp_path.resolve() / 'train.extxyz'}']" in text
    recipe = RECIPES["full"]
    assert recipe.lr * recipe.gamma() ** recipe.epochs == pytest.approx(recipe.lr_final)


def test_training_recipe_trains_and_ships_with_sevenn(tmp_path):
    """Reference MD -> export -> split -> sevenn -> checkpoint + training.json that nlmd deploy accepts."""
    recipe = RECIPES["tiny"]
    done = train(recipe, [1], tmp_path / "work", tmp_path / "ship", jobs=1, echo=lambda s: None)
    info = done[0]
    d = tmp_path / "ship" / "sro-1layer"
    assert (d / "checkpoint.pth").is_file() and (d / "sevenn.yaml").is_file()
    saved = json.loads((d / "training.json").read_text())
    assert saved["layers"] == 1 and saved["force_reach_A"] == 10.0
    # 3 temperatures x 11 frames (0.2 ps every 20 fs), split 9:1
    assert saved["data"]["n_train"] + saved["data"]["n_valid"] == 33 and saved["data"]["n_valid"] == 3
    assert saved["epochs"] == recipe.epochs and 1 <= saved["best_epoch"] <= recipe.epochs
    assert saved["validation"]["force_rmse_eV_per_A"] == info["validation"]["force_rmse_eV_per_A"] > 0
    import ase.io

    frames = ase.io.read(tmp_path / "work/data/train.extxyz", index=":")
    assert len(frames) == 30 and frames[0].get_forces().shape == (64, 3)
    from nlmd.deploy import load_checkpoint

    assert load_checkpoint(d / "checkpoint.pth").config["num_convolution_layer"] == 1


def test_budgets_fit_their_cells():
    for budget in X.BUDGETS.values():
        for cell in budget.cells:
            assert all(2 * r + 1.5 <= cell.box for r in cell.rfix)
    large = X.BUDGETS["full"].cells[1]
    assert min(large.rfix) < 10.0 < max(large.rfix)  # on both sides of 2·r_c for r_c = 5 A
    assert large.per_element * 2 / large.box**3 == pytest.approx(144 / 13.63**3, rel=0.01)
    with pytest.raises(InputError, match="does not fit"):
        X.Cell("x", 13.63, 72, (6.2,), 0.1, 10)


def test_sweep_gives_exactly_zero_centre_force_beyond_the_force_reach(tmp_path, one_layer_short):
    """A 1-layer model with r_c = 2.7 A: zero force on the centre for R_fix > 5.4 A, not for R_fix < 5.4 A."""
    budget = replace(X.BUDGETS["tiny"], cells=(X.Cell("paper", 13.63, 72, (3.68, 5.82), 0.02, 5),))
    model = X.Model.from_directory("short", one_layer_short)
    assert (model.layers, model.cutoff, model.force_reach) == (1, 2.7, 5.4)
    res = X.run_experiment(tmp_path / "run", [model], budget, echo=lambda s: None)
    rows = {r["rfix"]: r for r in res["table"]}
    inside, beyond = rows[3.68], rows[5.82]
    assert inside["frames"] == beyond["frames"] == 5
    assert beyond["nearest_mobile_min_A"] > 5.4 and beyond["frames_beyond_reach"] == 5
    assert beyond["center_max_model"] <= 1e-6 and beyond["center_rms_model"] <= 1e-6
    assert beyond["center_rms_ref"] > 0.05  # the reference's force comes from beyond R_fix
    assert inside["center_max_model"] > 1e-3
    assert beyond["center_spread_model_beyond_reach"] == 0.0  # bit-identical: nothing beyond the reach enters
    assert res["law"] == [{"model": "short", "rfix": 5.82, "force_reach_A": 5.4, "frames": 5,
                           "center_max_model": beyond["center_max_model"], "center_spread_model": 0.0,
                           "center_rms_ref": beyond["center_rms_ref_beyond_reach"], "holds": True}]
    # the metrics are nlmd compare's on the same files
    from nlmd.compare import compare_files

    d = tmp_path / "run/paper/rfix_3.68/seed_1"
    rep = compare_files(d / "short.h5", d / "ref.h5")
    assert inside["center_rmse"] == rep["center"]["force_rmse"]
    assert inside["mobile_rmse"] == rep["mobile"]["force_rmse"]
    assert -1.0 <= inside["center_correlation"] <= 1.0
    assert 0.0 < inside["mobile_rms_ref"] and 0.0 < inside["mobile_rms_model"]
    assert inside["mobile_rmse_over_rms_ref"] == pytest.approx(inside["mobile_rmse"] / inside["mobile_rms_ref"])
    for key in ("fig5c", "fig5b"):
        assert (tmp_path / "run" / f"{key}.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "run/results.json").read_text())
    assert saved["table"] == json.loads(json.dumps(res["table"]))
    assert saved["runs"][0]["start_temperature"]["window_ps"] == 0.5
    # a second run reuses the trajectories (same settings) and gives the same table
    again = X.run_experiment(tmp_path / "run", [model], budget, echo=lambda s: None)
    assert again["table"] == res["table"] and again["seconds"] < res["seconds"]


def test_experiment_command(tmp_path, one_layer_short):
    out = tmp_path / "cli"
    r = CliRunner().invoke(main, ["experiment", "sro-rfix", "--budget", "tiny", "-o", str(out), "--no-shipped",
                                  "--no-sevennet0", "--model", f"short={one_layer_short}"])
    assert r.exit_code == 0, r.output
    assert "centre-atom force on frames of reference MD" in r.output and "short" in r.output
    table = json.loads((out / "results.json").read_text())["table"]
    assert sorted(row["rfix"] for row in table) == [3.68, 5.82]
    assert all(np.isfinite(row["center_rmse"]) for row in table)
    bad = CliRunner().invoke(main, ["experiment", "sro-rfix", "--budget", "tiny", "-o", str(out), "--no-shipped",
                                    "--model", "nameonly"])
    assert bad.exit_code == 1 and "expected NAME=DIR" in bad.output
