"""nlmd.rescore and ``nlmd rescore``: a potential on exactly the frames of a trajectory file.

The rigid-ion reference is checked against an independent LAMMPS run (``lmp`` on data files of the
same frames, forces dumped); the tiny SevenNet against SevenNetCalculator on the checkpoint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from click.testing import CliRunner

from conftest import REPO, assert_close, lmp_env, which
from nlmd.cli import main
from nlmd.errors import InputError, SimulationError
from nlmd.h5md import FixedCore, Frame, TrajectoryReader, TrajectoryWriter
from nlmd.rescore import rescore_file, type_elements
from nlmd.structures import build_fixed_core_cell

RIGID_ION = REPO / "potentials" / "sro-rigid-ion"
FORCE_TOL = 1e-5  # eV/A, SevenNet (float32) against SevenNetCalculator


# --------------------------------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------------------------------


def cell_frames(seed: int = 0) -> tuple[list[Frame], FixedCore]:
    """Three frames of the 144-atom fixed-core cell with ids 7, 9, 11, ... (not 1..N):

    0: mobile atoms displaced; 1: a larger triclinic (lower-triangular) cell; 2: an Sr and an O atom
    exchange species (types and charges change between frames).
    """
    cell = build_fixed_core_cell(3.68, seed=seed)
    atoms = cell.atoms
    n = len(atoms)
    ids = 7 + 2 * np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    box0 = atoms.cell.array.copy()
    pos0 = atoms.positions + np.where(cell.core_mask[:, None], 0.0, rng.normal(0, 0.08, (n, 3)))
    box1 = box0 @ np.eye(3) * 1.02 + np.array([[0, 0, 0], [0.6, 0, 0], [-0.4, 0.5, 0]])
    pos1 = atoms.cell.scaled_positions(pos0) @ box1
    species2 = atoms.numbers.astype(np.int32).copy()
    sr, o = int(np.flatnonzero(species2 == 38)[-1]), int(np.flatnonzero(species2 == 8)[-1])
    species2[[sr, o]] = species2[[o, sr]]
    frames = [
        Frame(step=0, time=0.0, box=box0, ids=ids, species=atoms.numbers, positions=pos0),
        Frame(step=20, time=0.01, box=box1, ids=ids, species=atoms.numbers, positions=pos1),
        Frame(step=40, time=0.02, box=box0, ids=ids, species=species2, positions=pos0 + 0.03),
    ]
    core = FixedCore(center_id=int(ids[0]), rfix=cell.rfix, core_ids=ids[cell.core_ids - 1])
    return frames, core


def write(path: Path, frames: list[Frame], core: FixedCore | None = None, **kwargs) -> Path:
    with TrajectoryWriter(path, parameters={"source": "test"}, fixed_core=core, **kwargs) as w:
        for fr in frames:
            w.write(fr)
    return path


def sro_frames() -> list[Frame]:
    """64-atom rocksalt SrO: displaced; then a skewed cell that is *not* lower triangular."""
    from ase.build import bulk

    atoms = bulk("SrO", "rocksalt", a=5.2, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.12, seed=3)
    ids = np.arange(1, len(atoms) + 1)
    out = [Frame(step=0, time=0.0, box=atoms.cell.array, ids=ids, species=atoms.numbers, positions=atoms.positions)]
    skew = atoms.copy()
    skew.set_cell(atoms.cell.array + np.array([[0.0, 0.3, -0.2], [0.25, 0.0, 0.1], [0.1, -0.15, 0.0]]),
                  scale_atoms=True)
    skew.rattle(0.05, seed=4)
    out.append(Frame(step=1, time=0.001, box=skew.cell.array, ids=ids, species=skew.numbers,
                     positions=skew.positions))
    return out


# --------------------------------------------------------------------------------------------------
# an independent LAMMPS evaluation
# --------------------------------------------------------------------------------------------------


def lammps_data(path: Path, frame: Frame) -> None:
    """A LAMMPS data file (atom_style charge, type labels Sr O) with the frame's ids and cell."""
    box = np.asarray(frame.box, dtype=float).tolist()  # floats whose repr LAMMPS reads
    assert box[0][1] == box[0][2] == box[1][2] == 0.0, "lower-triangular cells only"
    types = {38: 1, 8: 2}
    lines = ["frame", "", f"{len(frame.ids)} atoms", "2 atom types", "",
             f"0.0 {box[0][0]!r} xlo xhi", f"0.0 {box[1][1]!r} ylo yhi", f"0.0 {box[2][2]!r} zlo zhi",
             f"{box[1][0]!r} {box[2][0]!r} {box[2][1]!r} xy xz yz", "",
             "Atom Type Labels", "", "1 Sr", "2 O", "", "Masses", "", "1 87.62", "2 15.999", "",
             "Atoms # charge", ""]
    for i, z, p in zip(frame.ids.tolist(), frame.species.tolist(), frame.positions.tolist()):
        lines.append(f"{i} {types[z]} 0.0 {p[0]!r} {p[1]!r} {p[2]!r}")
    path.write_text("\n".join(lines) + "\n")


def lmp_reference(tmp_path: Path, frames: list[Frame], potential: Path) -> list[dict]:
    """Forces, per-atom and total energies of every frame from one `lmp` run (read_data, run 0, clear)."""
    script = []
    for k, fr in enumerate(frames):
        lammps_data(tmp_path / f"frame{k}.data", fr)
        script += [
            "units metal", "atom_style charge", "atom_modify map yes", "boundary p p p",
            f"read_data frame{k}.data",
            f"variable potential string {potential}", 'variable elements string "Sr O"',
            "include ${potential}/pair.lmp",
            "compute pea all pe/atom", "thermo_style custom step pe", "run 0",
            f"write_dump all custom frame{k}.dump id fx fy fz c_pea modify sort id format float %.17g",
            f'print "$(pe:%.17g)" file frame{k}.pe', "clear",
        ]
    (tmp_path / "ref.in").write_text("\n".join(script) + "\n")
    proc = subprocess.run([which("lmp"), "-in", "ref.in", "-log", "ref.log"], cwd=tmp_path, env=lmp_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = []
    for k in range(len(frames)):
        d = np.loadtxt(tmp_path / f"frame{k}.dump", skiprows=9)
        out.append({"ids": d[:, 0].astype(np.int64), "forces": d[:, 1:4], "energies": d[:, 4],
                    "energy": float((tmp_path / f"frame{k}.pe").read_text())})
    return out


# --------------------------------------------------------------------------------------------------
# correctness
# --------------------------------------------------------------------------------------------------


def test_rigid_ion_equals_lammps_on_the_same_frames(tmp_path):
    frames, core = cell_frames()
    src = write(tmp_path / "frames.h5", frames, core)
    result = rescore_file(src, RIGID_ION, tmp_path / "out.h5", command="nlmd rescore ...")
    ref = lmp_reference(tmp_path, frames, RIGID_ION)

    assert (result.n_frames, result.n_atoms, result.elements) == (3, 144, ["Sr", "O"])
    with TrajectoryReader(tmp_path / "out.h5") as out, TrajectoryReader(src) as inp:
        np.testing.assert_array_equal(out.steps, inp.steps)
        np.testing.assert_array_equal(out.times, inp.times)
        for name in ("id", "species", "position", "box"):
            np.testing.assert_array_equal(out.read(name), inp.read(name))
        assert out.fixed_core.center_id == core.center_id and out.fixed_core.rfix == core.rfix
        np.testing.assert_array_equal(out.fixed_core.core_ids, core.core_ids)
        p = out.parameters
        assert (p["source"], p["input"], p["input_source"]) == ("rescore", str(src), "test")
        assert p["potential"] == str(RIGID_ION.resolve()) and p["elements"] == ["Sr", "O"]
        assert out.model == json.loads((RIGID_ION / "manifest.json").read_text())
        assert not out.has("velocity")
        forces, energies, pe = out.read("force"), out.read("energies"), out.observable("potential_energy")
        for k, r in enumerate(ref):
            np.testing.assert_array_equal(r["ids"], frames[k].ids)
            assert_close(forces[k], r["forces"], 1e-9, f"frame {k} forces (eV/A)")
            assert_close(energies[k], r["energies"], 1e-9, f"frame {k} per-atom energies (eV)")
            assert abs(pe[k] - r["energy"]) < 1e-8 * abs(r["energy"])
            assert abs(energies[k].sum() - pe[k]) < 1e-6 * abs(pe[k])
        # the species exchange of frame 2 changed the forces (charges followed the types)
        assert np.abs(forces[2] - forces[0]).max() > 1.0


def test_tiny_sevennet_equals_calculator(tiny_potential, tiny_checkpoint, tmp_path):
    from sevenn.calculator import SevenNetCalculator

    frames = sro_frames()
    src = write(tmp_path / "frames.h5", frames)
    result = rescore_file(src, tiny_potential, tmp_path / "out.h5")
    assert result.elements == ["O", "Sr"]  # the model's order, present elements only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calc = SevenNetCalculator(str(tiny_checkpoint), device="cpu")
    with TrajectoryReader(tmp_path / "out.h5") as out:
        assert out.parameters["source"] == "rescore" and out.model["kind"] == "sevenn"
        for k, fr in enumerate(frames):
            atoms = Atoms(numbers=fr.species, positions=fr.positions, cell=fr.box, pbc=True)
            atoms.calc = calc
            f, e = atoms.get_forces(), atoms.get_potential_energy()
            assert np.abs(f).max() > 0.1
            assert_close(out.read("force", k, k + 1)[0], f, FORCE_TOL, f"frame {k} forces (eV/A)")
            assert_close(out.read("energies", k, k + 1)[0], calc.results["energies"], 1e-5, f"frame {k} energies")
            assert abs(out.observable("potential_energy")[k] - e) / len(atoms) < 1e-6


def test_type_elements():
    assert type_elements({"kind": "sevenn", "elements": ["O", "Ca", "Sr"]}, {"Sr", "O"}) == ["O", "Sr"]
    assert type_elements({"kind": "classical", "elements": ["Sr", "O"]}, {"O"}) == ["Sr", "O"]


# --------------------------------------------------------------------------------------------------
# errors and the command line
# --------------------------------------------------------------------------------------------------


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_element_the_potential_lacks(tmp_path):
    frames, _ = cell_frames()
    frames[1].species = frames[1].species.copy()
    frames[1].species[3] = 20  # Ca
    src = write(tmp_path / "frames.h5", frames)
    with pytest.raises(InputError, match=r"frames\.h5: holds Ca \(step 20\), an element the potential .* does not know"):
        rescore_file(src, RIGID_ION, tmp_path / "out.h5")
    assert leftovers(tmp_path, {"frames.h5"}) == []


def test_bad_frame_midway_leaves_nothing(tmp_path):
    frames, _ = cell_frames()
    frames[2].positions = frames[2].positions.copy()
    frames[2].positions[5, 1] = np.nan
    src = write(tmp_path / "frames.h5", frames)
    with pytest.raises(InputError, match=r"step 40: the position holds NaN"):
        rescore_file(src, RIGID_ION, tmp_path / "out.h5")
    assert leftovers(tmp_path, {"frames.h5"}) == []


def test_refusals(tmp_path):
    frames, _ = cell_frames()
    src = write(tmp_path / "frames.h5", frames[:1])
    with pytest.raises(InputError, match="is the input file"):
        rescore_file(src, RIGID_ION, src, force=True)
    with pytest.raises(InputError, match="not a potential directory|no such potential directory"):
        rescore_file(src, tmp_path, tmp_path / "out.h5")
    slab = write(tmp_path / "slab.h5", frames[:1], boundary=("periodic", "periodic", "none"))
    with pytest.raises(InputError, match="periodic in all three directions or in none"):
        rescore_file(slab, RIGID_ION, tmp_path / "out.h5")
    assert leftovers(tmp_path, {"frames.h5", "slab.h5"}) == []


def test_cli_output_summary_and_force(tmp_path):
    frames, core = cell_frames()
    src = write(tmp_path / "frames.h5", frames[:2], core)
    out = tmp_path / "out.h5"
    args = ["rescore", str(src), "--potential", str(RIGID_ION), "-o", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "2 frames x 144 atoms rescored with sro-rigid-ion" in res.output
    summary = json.loads((tmp_path / "out.h5.summary.json").read_text())
    assert summary["frames"] == 2 and summary["atoms"] == 144 and summary["model"] == "sro-rigid-ion"
    assert summary["fixed_core"] == {"center_id": core.center_id, "rfix": core.rfix, "n_core": core.core_ids.size}
    with TrajectoryReader(out) as r:
        assert r.parameters["command"].startswith("nlmd rescore ")

    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "already exists; pass --force" in res.output
    res = CliRunner().invoke(main, [*args, "--force", "--quiet"])
    assert res.exit_code == 0 and res.output == ""
    assert leftovers(tmp_path, {"frames.h5", "out.h5", "out.h5.summary.json"}) == []


# --------------------------------------------------------------------------------------------------
# MPI
# --------------------------------------------------------------------------------------------------


def permuted_frames() -> tuple[list[Frame], list[np.ndarray]]:
    """Frames whose atoms swap places with others of their element: atoms jump across the whole cell."""
    cell = build_fixed_core_cell(3.68, seed=2)
    atoms = cell.atoms
    rng = np.random.default_rng(1)
    ids = np.arange(1, len(atoms) + 1)
    frames, sources = [], []
    for k in range(3):
        src = np.arange(len(atoms))
        if k:
            for z in (8, 38):
                idx = np.flatnonzero(atoms.numbers == z)
                src[idx] = rng.permutation(idx)
        sources.append(src)
        frames.append(Frame(step=k, time=0.001 * k, box=atoms.cell.array, ids=ids, species=atoms.numbers,
                            positions=atoms.positions[src]))
    return frames, sources


def mpirun_nlmd(nprocs: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [which("mpirun"), "-np", str(nprocs), str(Path(sys.executable).parent / "nlmd"), *args]
    return subprocess.run(cmd, cwd=cwd, env=lmp_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.mpi
def test_mpirun_five_ranks_equals_serial(tmp_path):
    """5 ranks (5 x 1 x 1 subdomains): atoms jumping across the cell between frames reach their new rank."""
    frames, sources = permuted_frames()
    src = write(tmp_path / "frames.h5", frames)
    rescore_file(src, RIGID_ION, tmp_path / "serial.h5")
    proc = mpirun_nlmd(5, "rescore", "frames.h5", "--potential", str(RIGID_ION), "-o", "mpi.h5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("rescored") == 1  # rank 0 speaks
    with TrajectoryReader(tmp_path / "serial.h5") as s, TrajectoryReader(tmp_path / "mpi.h5") as m:
        assert m.parameters["ranks"] == 5
        assert m.parameters["command"].startswith("mpirun -np 5 nlmd rescore")
        assert_close(m.read("force"), s.read("force"), 1e-9, "forces, 5 ranks vs 1")
        assert_close(m.observable("potential_energy"), s.observable("potential_energy"), 1e-7, "energy")
        forces = s.read("force")
    for k in (1, 2):  # the same positions, other atoms on them: the force goes with the position
        assert_close(forces[k], forces[0][sources[k]], 1e-9, f"frame {k}: force at each position")


@pytest.mark.mpi
def test_mpirun_sevennet_two_ranks_equals_one(tiny_potential, tmp_path):
    """The deployed pair.lmp switches to e3gnn/parallel on several ranks: same forces as e3gnn on one."""
    src = write(tmp_path / "frames.h5", sro_frames()[:2])
    rescore_file(src, tiny_potential, tmp_path / "serial.h5")
    proc = mpirun_nlmd(2, "rescore", "frames.h5", "--potential", str(tiny_potential), "-o", "mpi.h5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with TrajectoryReader(tmp_path / "serial.h5") as s, TrajectoryReader(tmp_path / "mpi.h5") as m:
        assert m.parameters["ranks"] == 2
        assert_close(m.read("force"), s.read("force"), 1e-5, "forces, e3gnn/parallel on 2 ranks vs e3gnn")
        assert_close(m.read("energies"), s.read("energies"), 1e-5, "per-atom energies")


@pytest.mark.mpi
def test_mpirun_serial_e3gnn_error_comes_through(tiny_potential, tmp_path):
    serial_only = tmp_path / "serial-only"
    shutil.copytree(tiny_potential, serial_only)
    (serial_only / "pair.lmp").write_text("pair_style e3gnn\npair_coeff * * ${potential}/deployed_serial.pt ${elements}\n")
    write(tmp_path / "frames.h5", sro_frames()[:1])
    proc = mpirun_nlmd(2, "rescore", "frames.h5", "--potential", str(serial_only), "-o", "out.h5", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.count("nlmd: error:") == 1, proc.stderr
    assert "e3gnn/parallel" in proc.stderr and "frames.h5: step 0" in proc.stderr
    assert leftovers(tmp_path, {"frames.h5", "serial-only"}) == []


def test_simulation_error_names_the_step(tmp_path, monkeypatch):
    """A LAMMPS error while evaluating becomes a SimulationError naming the file and the step."""
    from nlmd import evaluate

    frames, _ = cell_frames()
    src = write(tmp_path / "frames.h5", frames)
    calls = {"n": 0}
    original = evaluate.LammpsEvaluator.evaluate

    def failing(self, atoms):
        calls["n"] += 1
        if calls["n"] == 2:
            raise SimulationError("LAMMPS stopped with: ERROR: simulated")
        return original(self, atoms)

    monkeypatch.setattr(evaluate.LammpsEvaluator, "evaluate", failing)
    with pytest.raises(SimulationError, match=r"frames\.h5: step 20: LAMMPS stopped with: ERROR: simulated"):
        rescore_file(src, RIGID_ION, tmp_path / "out.h5")
    assert leftovers(tmp_path, {"frames.h5"}) == []


def test_rescore_of_nlmd_run_with_its_own_potential_gives_its_forces(tmp_path):
    """End to end: the MD file of `nlmd run` with the rigid-ion potential, rescored with the same
    potential, has the same forces, per-atom and total energies (and compare agrees)."""
    from nlmd.compare import compare_files

    run = subprocess.run(
        [str(Path(sys.executable).parent / "nlmd"), "run", str(REPO / "lammps_inputs" / "sro_rfix.in"),
         "-o", "md.h5", "-v", "potential", str(RIGID_ION), "-v", "rfix", "3.68", "-v", "time", "0.03",
         "--every", "10", "--quiet"],
        cwd=tmp_path, env=lmp_env(), capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rescore_file(tmp_path / "md.h5", RIGID_ION, tmp_path / "ref.h5")
    with TrajectoryReader(tmp_path / "md.h5") as md, TrajectoryReader(tmp_path / "ref.h5") as ref:
        assert md.n_frames == ref.n_frames == 4
        assert_close(ref.read("force"), md.read("force"), 1e-9, "forces (eV/A)")
        assert_close(ref.read("energies"), md.read("energies"), 1e-9, "per-atom energies (eV)")
        assert_close(ref.observable("potential_energy"), md.observable("potential_energy"), 1e-8, "energy (eV)")
        assert ref.fixed_core.center_id == md.fixed_core.center_id
    report = compare_files(tmp_path / "ref.h5", tmp_path / "md.h5")
    assert report["n_frames"] == 4 and report["all"]["force_rmse"] < 1e-9
