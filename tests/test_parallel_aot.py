"""pair_style e3gnn/parallel with the layers compiled ahead of time (nlmd.aot_layers), against the serial style.

The session's tiny potential (conftest.tiny_potential: `nlmd deploy`'s defaults) holds, beside SevenNet's
per-layer TorchScript files, its layers compiled with AOTInductor; e3gnn/parallel runs those (its log says so)
on 1-4 MPI ranks and must give the serial TorchScript model's energy, forces, virial and per-atom values
(test_parallel.compare), also where a rank's graph is too small for the packages and goes through the
TorchScript layers.
"""

from __future__ import annotations

import json
import shutil

import pytest

from test_parallel import _skip_without_mpi, check_case, compare, run_lammps, sro_cell, write_data

pytestmark = pytest.mark.mpi

# Compiled kernels sum in another order than TorchScript (fused loops): float32 rounding then differs by a few
# 1e-7 of each term. A per-atom virial sums ~40 edge terms r x dE/dr of up to ~25 eV (5 A x 5 eV/A) into
# values of ~10 eV, so its difference is a few 1e-6 of the largest value (measured: 1.2e-6). Forces, energies
# and the total virial keep test_parallel's tolerances.
ATOM_VIRIAL_RTOL = 5e-6


@pytest.fixture(scope="module")
def compiled(tiny_potential):
    """The tiny 2-layer SrO model as `nlmd deploy` writes it by default: TorchScript (serial and per layer), the
    serial package and the compiled layers."""
    _skip_without_mpi()
    manifest = json.loads((tiny_potential / "manifest.json").read_text())
    return {"dir": tiny_potential, "layers": 2, "summary": manifest["parallel"]["aot"], "manifest": manifest}


def test_compile_summary(compiled):
    s = compiled["summary"]
    files = sorted(p.name for p in (compiled["dir"] / "deployed_parallel").glob("*.pt2"))
    assert files == ["layer_0_forward.pt2", "layer_0_gradient.pt2", "layer_1.pt2"]
    assert s["device"] == "cpu" and len(s["layers"]) == 2
    assert s["layers"][0]["saved"] > 0 and s["layers"][1]["saved"] == 0
    # every layer's packages agree with SevenNet's Python layer on the traced graph and a larger one
    assert s["check_rel_diff"] < 1e-5
    on_disk = json.loads((compiled["dir"] / "deployed_parallel" / "aot_layers.json").read_text())
    assert on_disk == s
    assert {f"deployed_parallel/{f}" for f in files} <= set(compiled["manifest"]["files"])


def test_compiled_layers_match_serial_1_to_4_ranks(tmp_path, compiled):
    _, results = check_case(tmp_path, compiled, sro_cell(), "aot", atom_virial_rtol=ATOM_VIRIAL_RTOL)
    log = (tmp_path / "aot_par2.log").read_text()
    assert "layers run as AOTInductor packages" in log, log[-2000:]


def test_torchscript_keyword_and_packages_agree(tmp_path, compiled):
    """`pair_style e3gnn/parallel torchscript` runs the TorchScript layers of the same directory."""
    data = write_data(tmp_path / "ts.data", sro_cell(seed=3))
    pair = f"pair_coeff * * 2 {compiled['dir'] / 'deployed_parallel'} Sr O"
    ts = run_lammps(tmp_path, "ts", 2, {"data": str(data), "pair": "pair_style e3gnn/parallel torchscript\n" + pair})
    assert "layers run as TorchScript" in (tmp_path / "ts.log").read_text()
    aot = run_lammps(tmp_path, "aot", 2, {"data": str(data), "pair": "pair_style e3gnn/parallel\n" + pair})
    compare(ts, aot, "packages vs TorchScript layers, 2 ranks", atom_virial_rtol=ATOM_VIRIAL_RTOL)


def test_graphs_too_small_for_the_packages(tmp_path, compiled):
    """A rank with one local atom, or with no ghost atom, runs the TorchScript layers for that step; the
    exchange still pairs up with the ranks that run the packages."""
    from ase import Atoms

    # a 2-atom dimer far from a 64-atom block in a non-periodic box: on 2 ranks split along x, the dimer's rank
    # has 2 local atoms and no ghost
    block = sro_cell()
    dimer = Atoms("SrO", positions=[[40.0, 5.0, 5.0], [42.2, 5.0, 5.0]])
    atoms = block + dimer
    atoms.cell = [50.0, 12.0, 12.0]
    atoms.pbc = True
    ref, results = check_case(tmp_path, compiled, atoms, "small", ranks=(2,), setups={2: "processors 2 1 1"},
                                 atom_virial_rtol=ATOM_VIRIAL_RTOL)
    assert min(results[2][1]["nlocal"]) <= 2


def test_stale_packages_are_refused(tmp_path, compiled):
    """Compiled layers of another model (here: TorchScript layers of another cutoff beside them, as after an
    interrupted hand-made redeploy) are refused with one sentence, on every rank."""
    from nlmd.deploy import export_torchscript
    from nlmd.testing import make_tiny_checkpoint

    bad = tmp_path / "deployed_parallel"
    shutil.copytree(compiled["dir"] / "deployed_parallel", bad)
    other = tmp_path / "other"
    other.mkdir()
    export_torchscript(make_tiny_checkpoint(other / "model.pth", cutoff=4.5), other, parallel=True)
    for p in (other / "deployed_parallel").glob("deployed_parallel_*.pt"):
        shutil.copy(p, bad / p.name)
    data = write_data(tmp_path / "bad.data", sro_cell())
    with pytest.raises(RuntimeError) as err:
        run_lammps(tmp_path, "bad", 2, {"data": str(data), "pair": f"pair_style e3gnn/parallel\npair_coeff * * 2 {bad} Sr O"})
    assert "disagree on cutoff or species" in str(err.value)
    # the TorchScript layers alone still run
    run_lammps(tmp_path, "ts_only", 2,
               {"data": str(data), "pair": f"pair_style e3gnn/parallel torchscript\npair_coeff * * 2 {bad} Sr O"})
