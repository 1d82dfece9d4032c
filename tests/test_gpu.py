"""CUDA deployment: the device a package is compiled for (manifest, package metadata), the refusal of a
package whose device the process lacks, and (`gpu`, skipped without CUDA) pair_style e3gnn on the GPU
against SevenNetCalculator on the GPU. bench/gpu_check.sh runs the `gpu` ones on the GPU machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

from conftest import assert_close
from nlmd.evaluate import LammpsEvaluator

torch = pytest.importorskip("torch")
HAS_CUDA = torch.cuda.is_available()


def package_metadata(path) -> dict:
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("wrapper_metadata.json"))
        return json.loads(z.read(name))


def forge_device(path, device: str) -> None:
    """Rewrite the `device` entry of an AOTInductor package's metadata (what the pair style reads)."""
    tmp = path.with_name(path.name + ".forged")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("metadata.json"):
                meta = json.loads(data)
                meta["device"] = device
                data = json.dumps(meta).encode()
            zout.writestr(info, data)
    tmp.replace(path)


def test_manifest_and_package_record_the_device(tiny_potential):
    expected = "cuda" if HAS_CUDA else "cpu"  # nlmd deploy's default --device auto
    manifest = json.loads((tiny_potential / "manifest.json").read_text())
    assert manifest["aot"]["device"] == expected
    meta = package_metadata(tiny_potential / "deployed_serial.pt2")
    assert meta["device"] == expected
    assert meta["AOTI_DEVICE_KEY"] == expected  # what Inductor compiled for agrees with what we recorded


def test_cuda_package_without_cuda_is_refused(tiny_potential, tmp_path, sro_atoms):
    """A package compiled for CUDA, loaded by a process without CUDA: one sentence, no crash. Without a GPU
    the package's metadata is forged; with one, the real CUDA package runs with the GPU hidden."""
    d = tmp_path / "pot"
    shutil.copytree(tiny_potential, d)
    if not HAS_CUDA:
        forge_device(d / "deployed_serial.pt2", "cuda")
    sro_atoms.write(tmp_path / "cell.extxyz")
    code = ("import sys; from ase.io import read; from nlmd.evaluate import LammpsEvaluator\n"
            "from nlmd.errors import SimulationError\n"
            f"with LammpsEvaluator({str(d)!r}, ['Sr', 'O']) as ev:\n"
            "    try:\n"
            f"        ev.evaluate(read({str(tmp_path / 'cell.extxyz')!r}))\n"
            "    except SimulationError as exc:\n"
            "        print('REFUSED', exc); sys.exit(3)\n")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "deployed_serial.pt2 is compiled for device 'cuda', which this process does not have" in proc.stdout


def _sevenn(checkpoint, atoms, device):
    from sevenn.calculator import SevenNetCalculator

    atoms = atoms.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms.calc = SevenNetCalculator(str(checkpoint), device=device)
        return float(atoms.get_potential_energy()), atoms.get_forces()


@pytest.mark.gpu  # skipped without CUDA (conftest)
@pytest.mark.parametrize("which", ["package", "torchscript"])
def test_e3gnn_on_cuda_matches_sevennet_calculator(which, tiny_checkpoint, tiny_potential, tiny_torchscript_potential,
                                                   sro_atoms, tmp_path):
    pot = tiny_potential if which == "package" else tiny_torchscript_potential
    log = tmp_path / "log.lammps"
    with LammpsEvaluator(pot, ["Sr", "O"], log=log) as ev:
        got = ev.evaluate(sro_atoms)
    assert "nlmd pair style on CUDA" in log.read_text()
    energy, forces = _sevenn(tiny_checkpoint, sro_atoms, "cuda")
    assert np.abs(forces).max() > 0.1
    assert_close(got.forces, forces, 1e-4, f"forces, e3gnn ({which}) on CUDA vs SevenNetCalculator on CUDA (eV/A)")
    assert abs(got.energy - energy) / len(sro_atoms) < 1e-5


def test_resolve_device():
    from nlmd.aot import resolve_device

    assert resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device must be auto, cpu or cuda"):
        resolve_device("gpu")
    if not HAS_CUDA:
        with pytest.raises(RuntimeError, match="a CUDA package is compiled on a GPU, and this torch has none"):
            resolve_device("cuda")
