"""`nlmd deploy`: what it writes, what it verifies, and every bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nlmd.cli import main


def run(*args):
    return CliRunner().invoke(main, ["deploy", *map(str, args)])


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_deploy_writes_a_verified_potential_directory(tiny_potential, tiny_checkpoint):
    names = sorted(p.name for p in tiny_potential.iterdir())
    assert names == ["deployed_parallel", "deployed_serial.pt", "deployed_serial.pt2", "manifest.json", "pair.lmp"]
    m = json.loads((tiny_potential / "manifest.json").read_text())
    assert m["elements"] == ["O", "Sr"]
    assert m["cutoff"] == 4.0 and m["num_layers"] == 2
    assert len(m["provenance"]["checkpoint_sha256"]) == 64
    for key in ("sevenn_version", "torch_version", "lammps_version", "date"):
        assert m["provenance"][key]
    assert m["verification"]["max_force_diff"] <= 1e-4
    assert sorted(m["files"]) == ["deployed_parallel/aot_layers.json", "deployed_parallel/deployed_parallel_0.pt",
                                  "deployed_parallel/deployed_parallel_1.pt", "deployed_parallel/layer_0_forward.pt2",
                                  "deployed_parallel/layer_0_gradient.pt2", "deployed_parallel/layer_1.pt2",
                                  "deployed_serial.pt", "deployed_serial.pt2"]
    assert m["aot"]["file"] == "deployed_serial.pt2" and m["aot"]["check_rel_dedr_diff"] <= 1e-4
    # the layers of e3gnn/parallel, compiled by default beside the serial package
    assert m["parallel"]["aot"]["check_rel_diff"] <= 1e-4 and len(m["parallel"]["aot"]["layers"]) == 2
    pair = (tiny_potential / "pair.lmp").read_text()
    assert "pair_coeff * * ${potential}/deployed_serial.pt2 ${elements}" in pair
    assert "pair_coeff * * 2 ${potential}/deployed_parallel ${elements}" in pair
    assert "extract_setting(world_size)" in pair


def test_cli_deploy_and_force(tiny_checkpoint, tmp_path):
    out = tmp_path / "pot"
    r = run(tiny_checkpoint, "-o", out, "--no-parallel", "--no-aot")
    assert r.exit_code == 0, r.output
    assert "largest force difference" in r.output
    assert not (out / "deployed_parallel").exists()
    assert not (out / "deployed_serial.pt2").exists()
    assert "deployed_serial.pt ${elements}" in (out / "pair.lmp").read_text()
    assert json.loads((out / "manifest.json").read_text())["aot"] is None
    r = run(tiny_checkpoint, "-o", out, "--no-parallel", "--no-aot")
    assert r.exit_code == 1
    assert "already exists; pass --force" in r.output
    r = run(tiny_checkpoint, "-o", out, "--no-parallel", "--no-aot", "--force", "--no-verify")
    assert r.exit_code == 0, r.output
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.pth", "no such checkpoint file"),
        (lambda d: (d / "notes.pth").write_text("not a model") and d / "notes.pth", "is not a SevenNet checkpoint"),
        (lambda d: d, "is a directory"),
        (lambda d: "7net-nonexistent", "neither a checkpoint file nor a pretrained SevenNet name"),
    ],
)
def test_bad_model_gives_one_sentence_and_writes_nothing(tmp_path, make, message):
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "out"
    r = run(make(src), "-o", out)
    assert r.exit_code == 1
    assert message in r.output
    assert r.output.count("\n") == 1, r.output  # one line
    assert not out.exists() and leftovers(tmp_path) == []


def test_torch_file_that_is_not_a_checkpoint(tmp_path):
    import torch

    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pth")
    r = run(tmp_path / "other.pth", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "is not a SevenNet checkpoint" in r.output
    assert not (tmp_path / "out").exists()


def test_failed_verification_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    import nlmd.deploy

    monkeypatch.setattr(nlmd.deploy, "VERIFY_FORCE_TOL", 0.0)  # float32 LAMMPS vs calculator never agree to 0
    r = run(tiny_checkpoint, "-o", tmp_path / "out", "--no-parallel", "--no-aot")
    assert r.exit_code == 1
    assert "verification failed" in r.output and "nothing was written" in r.output
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
