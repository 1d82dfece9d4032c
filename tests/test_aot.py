"""The AOTInductor package `nlmd deploy` compiles (deployed_serial.pt2) and pair_style e3gnn running it:
against the TorchScript model, graphs too small for the package, bad files, compilation failures."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from ase import Atoms

from conftest import assert_close, lmp_env, which
from nlmd.errors import SimulationError
from nlmd.evaluate import LammpsEvaluator


def evaluate(potential, atoms, elements=("Sr", "O")):
    with LammpsEvaluator(potential, list(elements)) as ev:
        return ev.evaluate(atoms)


def test_package_and_torchscript_agree(tiny_potential, tiny_torchscript_potential, sro_atoms):
    aot, ts = evaluate(tiny_potential, sro_atoms), evaluate(tiny_torchscript_potential, sro_atoms)
    assert np.abs(ts.forces).max() > 0.1
    assert_close(aot.forces, ts.forces, 1e-5, "forces, package vs TorchScript (eV/A)")
    assert_close(aot.energies, ts.energies, 1e-5, "per-atom energies (eV)")
    assert_close(aot.stress, ts.stress, 1e-6, "stress (eV/A^3)")
    assert abs(aot.energy - ts.energy) / len(sro_atoms) < 1e-6


def test_graph_too_small_for_the_package_goes_through_torchscript(tiny_potential, tiny_torchscript_potential):
    # one atom in a periodic cell: one node (the package is compiled for >= 2), edges to its own images
    atoms = Atoms("Sr", positions=[[0.1, 0.2, 0.0]], cell=[3.3, 3.5, 3.7], pbc=True)
    aot, ts = evaluate(tiny_potential, atoms), evaluate(tiny_torchscript_potential, atoms)
    assert aot.energy == pytest.approx(ts.energy, abs=1e-5)
    assert_close(aot.stress, ts.stress, 1e-6, "stress of a one-atom cell")
    assert abs(aot.stress).max() > 1e-4  # the images interact: not a trivially empty graph


def test_missing_torchscript_fallback_is_an_error_only_when_needed(tiny_potential, tmp_path, sro_atoms):
    d = tmp_path / "pot"
    shutil.copytree(tiny_potential, d)
    (d / "deployed_serial.pt").unlink()
    assert np.isfinite(evaluate(d, sro_atoms).energy)  # normal graphs do not need it
    with pytest.raises(SimulationError, match=r"compiled for at least 2 atoms and 2 edges, this graph has 1 and"):
        evaluate(d, Atoms("Sr", positions=[[0, 0, 0]], cell=[3.3, 3.5, 3.7], pbc=True))


def test_file_that_is_not_a_package(tiny_potential, tmp_path, sro_atoms):
    d = tmp_path / "pot"
    shutil.copytree(tiny_potential, d)
    (d / "deployed_serial.pt2").write_bytes(b"not a zip archive")
    with pytest.raises(SimulationError, match=r"deployed_serial.pt2 is not an AOTInductor package"):
        evaluate(d, sro_atoms)


def test_package_log_line_and_thread_counts(tiny_potential, tmp_path):
    """Through `lmp`: the log names the package, and 1 and 2 torch threads give the same forces."""
    lmp = which("lmp")
    (tmp_path / "in.lmp").write_text(
        "units metal\natom_style atomic\nregion b block 0 10.4 0 10.4 0 10.4\ncreate_box 2 b\n"
        "lattice fcc 5.2\ncreate_atoms 1 box\nlattice fcc 5.2 origin 0.5 0 0\ncreate_atoms 2 box\n"
        "mass * 50.0\ndisplace_atoms all random 0.1 0.1 0.1 7\n"
        f"variable potential string {tiny_potential}\nvariable elements string 'Sr O'\n"
        f"include {tiny_potential}/pair.lmp\n"
        "run 0\nwrite_dump all custom forces.txt id fx fy fz "
        "modify sort id format float %.8g\n")
    forces = {}
    for threads in ("1", "2"):
        env = lmp_env() | {"NLMD_TORCH_THREADS": threads}
        p = subprocess.run([lmp, "-in", "in.lmp", "-log", f"log.{threads}"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        log = (tmp_path / f"log.{threads}").read_text()
        assert "AOTInductor package" in log and f"{threads} torch thread(s)" in log
        forces[threads] = np.loadtxt(tmp_path / "forces.txt", skiprows=9)
    assert np.abs(forces["1"][:, 1:]).max() > 0.1
    assert_close(forces["2"], forces["1"], 1e-5, "forces on 2 vs 1 torch threads")


def test_failed_compilation_keeps_torchscript(tiny_checkpoint, tmp_path, monkeypatch):
    import nlmd.deploy
    from nlmd.errors import ModelError

    def fail(*args, **kwargs):
        raise ModelError("AOTInductor could not compile tiny.pth: no C++ compiler")

    monkeypatch.setattr(nlmd.deploy, "compile_aot", fail)
    said = []
    out = nlmd.deploy.deploy(tiny_checkpoint, tmp_path / "pot", parallel=False, verify=True, echo=said.append)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["aot"] is None and "no C++ compiler" in manifest["aot_failure"]
    assert any(s.startswith("warning: AOTInductor could not compile") for s in said)
    assert not (out / "deployed_serial.pt2").exists()
    assert "deployed_serial.pt ${elements}" in (out / "pair.lmp").read_text()
    assert manifest["verification"]["max_force_diff"] <= 1e-4
