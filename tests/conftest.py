"""Shared fixtures: tiny random SevenNet models, deployed once per test session."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """GPU tests skip without CUDA; MPI tests skip without mpirun or mpi4py."""
    need_gpu = any("gpu" in item.keywords for item in items)
    cuda = False
    if need_gpu:
        try:
            import torch

            cuda = torch.cuda.is_available()
        except ImportError:
            cuda = False
    try:
        import mpi4py  # noqa: F401

        from nlmd.runtime import executable

        executable("mpirun")
        mpi = True
    except Exception:  # noqa: BLE001
        mpi = False
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)"))
        if "mpi" in item.keywords and not mpi:
            item.add_marker(pytest.mark.skip(reason="needs mpirun and mpi4py"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random 2-layer SevenNet checkpoint for Sr and O (cutoff 4 A)."""
    from nlmd.testing import make_tiny_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pth", ("Sr", "O"))


@pytest.fixture(scope="session")
def tiny_potential(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint deployed as `nlmd deploy` does by default into a potential directory, verified:
    TorchScript, the AOTInductor package pair_style e3gnn runs on one rank, and the parallel deployment."""
    from nlmd.deploy import deploy

    out = tmp_path_factory.mktemp("pot") / "tiny"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deploy(tiny_checkpoint, out, parallel=True, verify=True, echo=lambda s: None)
    return out


@pytest.fixture(scope="session")
def tiny_torchscript_potential(tiny_potential, tmp_path_factory) -> Path:
    """The tiny deployment with pair.lmp pointing pair_style e3gnn at the TorchScript file (no package)."""
    import json

    from nlmd.deploy import pair_lines

    d = tmp_path_factory.mktemp("pot-ts") / "tiny"
    shutil.copytree(tiny_potential, d)
    manifest = json.loads((d / "manifest.json").read_text())
    (d / "deployed_serial.pt2").unlink()
    manifest["aot"] = None
    manifest["files"].remove("deployed_serial.pt2")
    (d / "manifest.json").write_text(json.dumps(manifest))
    (d / "pair.lmp").write_text(pair_lines(manifest))
    return d


@pytest.fixture
def sro_atoms():
    """64-atom rocksalt SrO (a = 5.20 A) with random displacements."""
    from ase.build import bulk

    atoms = bulk("SrO", "rocksalt", a=5.2, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.12, seed=3)
    return atoms


def lmp_env() -> dict:
    """Environment for subprocess `lmp`/`mpirun` the way users have it: the venv's bin first on PATH."""
    from nlmd.runtime import executable

    env = dict(os.environ)
    bindir = str(Path(executable("lmp")).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("LAMMPS_PLUGIN_PATH", None)
    return env


def assert_close(actual, expected, atol, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    diff = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    assert diff <= atol, f"{what}: largest difference {diff:.3e} > {atol:g}"


def which(name: str) -> str | None:
    from nlmd.runtime import executable

    try:
        return executable(name)
    except Exception:  # noqa: BLE001
        return shutil.which(name)
