"""nlmd.importers and ``nlmd import``: DFT frames written by ASE come back identical in the H5MD file.

ASE can write extxyz and .traj but has no writer for vasprun.xml or OUTCAR
(``ase.io.formats.ioformats['vasp-xml'].can_write`` is False), so the VASP path is tested on a small
vasprun.xml generated below with exactly the elements ASE's reader uses. OUTCAR is not tested: ASE
cannot write one and a faithful hand-made OUTCAR is much larger than this test deserves.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.units import fs as ase_fs
from click.testing import CliRunner

from nlmd.cli import main
from nlmd.errors import InputError
from nlmd.h5md import TrajectoryReader
from nlmd.importers import fixed_core_of, import_files

A = 5.20  # rocksalt lattice constant of SrO


def rocksalt(reps: int = 2) -> Atoms:
    """SrO rocksalt, reps^3 conventional cells; atom 0 is Sr at the origin."""
    from ase.build import bulk

    return bulk("SrO", "rocksalt", a=A, cubic=True) * (reps, reps, reps)


def core_indices(atoms: Atoms, center: int, radius: float) -> list[int]:
    d = atoms.get_distances(center, range(len(atoms)), mic=True)
    return [int(i) for i in np.flatnonzero(d < radius)]


def md_frames(n_frames: int, *, seed: int = 0, free: bool = True, fixed: bool = True, **info) -> list[Atoms]:
    """Frames of a fake MD run: displaced rocksalt with forces and energies on a SinglePointCalculator.

    The fixed core is atom 0 (at the cell origin, so the core wraps around the periodic boundary)
    and its six nearest neighbours, at 2.6 Angstrom.
    """
    rng = np.random.default_rng(seed)
    base = rocksalt()
    core = core_indices(base, 0, 3.0)
    frames = []
    for i in range(n_frames):
        atoms = base.copy()
        mobile = np.setdiff1d(np.arange(len(atoms)), core)
        atoms.positions[mobile] += rng.normal(0, 0.1, (mobile.size, 3))
        if fixed:
            atoms.set_constraint(FixAtoms(core))
        results = {"energy": -300.0 - i, "forces": rng.normal(size=(len(atoms), 3))}
        if free:
            results["free_energy"] = -300.5 - i
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info.update(info)
        frames.append(atoms)
    return frames


def check_same(path: Path, frames: list[Atoms], start: int = 0, energy: str = "free_energy") -> None:
    """The trajectory holds exactly the frames (as ASE reads them back from the source file)."""
    with TrajectoryReader(path) as r:
        sl = slice(start, start + len(frames))
        np.testing.assert_array_equal(r.read("position")[sl], [a.positions for a in frames])
        np.testing.assert_array_equal(r.read("force")[sl], [a.calc.results["forces"] for a in frames])
        np.testing.assert_array_equal(r.read("box")[sl], [a.cell.array for a in frames])
        np.testing.assert_array_equal(r.species, frames[0].numbers)
        np.testing.assert_array_equal(r.ids, np.arange(1, len(frames[0]) + 1))
        np.testing.assert_array_equal(r.observable("potential_energy")[sl], [a.calc.results[energy] for a in frames])
        assert r.parameters["energy"] == energy


def test_extxyz_round_trip_with_fixed_core(tmp_path):
    frames = md_frames(4, timestep=2.0)
    src = tmp_path / "md.xyz"
    ase.io.write(src, frames)
    result = import_files([src], tmp_path / "dft.h5", command="nlmd import md.xyz -o dft.h5")
    assert (result.n_frames, result.n_atoms, result.source) == (4, 64, "extxyz")
    check_same(tmp_path / "dft.h5", ase.io.read(src, ":"))  # extxyz keeps 8 decimals: compare with the file
    with TrajectoryReader(tmp_path / "dft.h5") as r:
        np.testing.assert_allclose(r.read("position"), [a.positions for a in frames], atol=1e-8)
        p = r.parameters
        assert p["source"] == "extxyz" and json.loads(p["files"]) == [str(src)]
        assert p["command"] == "nlmd import md.xyz -o dft.h5" and p["units"] == "metal"
        np.testing.assert_array_equal(r.steps, [0, 1, 2, 3])
        np.testing.assert_allclose(r.times, [0.0, 0.002, 0.004, 0.006])  # 2 fs from info["timestep"]
        # the core wraps around the boundary; the centre (id 1) is the fixed atom nearest the centroid
        core = r.fixed_core
        assert core.center_id == 1
        np.testing.assert_array_equal(core.core_ids, np.array(core_indices(frames[0], 0, 3.0)) + 1)
        assert core.core_ids.size == 7
        assert core.rfix == pytest.approx(A / 2)  # lower bound of R_fix: the farthest fixed atom
        # raw forces: fixed atoms keep their DFT forces (constraints are not applied)
        assert np.abs(r.read("force")[:, 0]).sum() > 0
        assert not r.has("velocity")


def test_energy_without_free_energy(tmp_path):
    frames = md_frames(2, free=False, fixed=False)
    ase.io.write(tmp_path / "e.xyz", frames)
    result = import_files([tmp_path / "e.xyz"], tmp_path / "e.h5", dt_fs=0.5)
    assert result.energy == "energy" and result.fixed_core is None
    check_same(tmp_path / "e.h5", ase.io.read(tmp_path / "e.xyz", ":"), energy="energy")
    with TrajectoryReader(tmp_path / "e.h5") as r:
        assert r.fixed_core is None and r.parameters["timestep_source"] == "option"
        np.testing.assert_allclose(r.times, [0.0, 0.0005])


def test_ase_traj_with_velocities_and_explicit_core(tmp_path):
    frames = md_frames(3, rfix=3.68, center_id=1)
    rng = np.random.default_rng(5)
    for atoms in frames:
        atoms.set_velocities(rng.normal(size=(len(atoms), 3)) * 0.01)
    ase.io.write(tmp_path / "md.traj", frames)
    result = import_files([tmp_path / "md.traj"], tmp_path / "t.h5")
    assert result.source == "ase-traj" and result.timestep_fs is None
    check_same(tmp_path / "t.h5", frames)
    with TrajectoryReader(tmp_path / "t.h5") as r:
        assert r.parameters["source"] == "ase-traj"
        assert r.fixed_core.rfix == 3.68 and r.fixed_core.center_id == 1  # kept from the file's info
        # velocities in Angstrom/ps
        np.testing.assert_allclose(
            r.read("velocity"), [a.get_velocities() * ase_fs * 1000 for a in frames], rtol=1e-12
        )
        assert r.units["velocity"] == "Angstrom ps-1"
        assert np.isnan(r.times).all() and r.parameters["timestep_source"] == "none"  # no time step anywhere


def test_concatenation_and_index_continue_steps(tmp_path):
    first, second = md_frames(5, seed=1, timestep=1.0), md_frames(3, seed=2, timestep=1.0)
    ase.io.write(tmp_path / "a.xyz", first)
    ase.io.write(tmp_path / "b.traj", second)
    out = tmp_path / "ab.h5"
    result = import_files([tmp_path / "a.xyz", tmp_path / "b.traj"], out)
    assert result.n_frames == 8 and result.source == "ase-traj+extxyz"
    check_same(out, ase.io.read(tmp_path / "a.xyz", ":"))
    check_same(out, second, start=5)  # .traj is exact
    with TrajectoryReader(out) as r:
        np.testing.assert_array_equal(r.steps, range(8))
        np.testing.assert_allclose(r.times, np.arange(8) * 1e-3)
    # every second frame of each file keeps its original index; the second file starts after the first
    result = import_files([tmp_path / "a.xyz", tmp_path / "b.traj"], out, index="::2")
    assert result.frames_per_file == [3, 2]
    with TrajectoryReader(out) as r:
        np.testing.assert_array_equal(r.steps, [0, 2, 4, 5, 7])
        np.testing.assert_array_equal(r.read("force")[3], second[0].calc.results["forces"])
    result = import_files([tmp_path / "a.xyz"], out, index="-1")
    with TrajectoryReader(out) as r:
        assert list(r.steps) == [4]


def vasprun_xml(frames: list[Atoms], fixed: list[int], potim: float, ibrion: int = 0) -> str:
    """A minimal vasprun.xml with the elements ASE's reader uses (VASP writes many more)."""

    def varray(name: str, rows) -> str:
        body = "".join(f"<v>{' '.join(f'{x:.10f}' for x in row)}</v>" for row in rows)
        return f'<varray name="{name}">{body}</varray>'

    first = frames[0]
    species = "".join(f"<rc><c>{s}</c><c>1</c></rc>" for s in first.get_chemical_symbols())
    selective = "".join(
        '<v type="logical">' + ("F F F" if i in fixed else "T T T") + "</v>" for i in range(len(first))
    )
    calcs = []
    for atoms in frames:
        r = atoms.calc.results
        e_fr, e_0 = r["free_energy"], r["energy"]
        calcs.append(
            "<calculation>"
            f'<scstep><energy><i name="e_fr_energy">{e_fr:.8f}</i><i name="e_0_energy">{e_0:.8f}</i></energy></scstep>'
            f'<structure><crystal>{varray("basis", atoms.cell.array)}</crystal>'
            f'{varray("positions", atoms.get_scaled_positions(wrap=False))}</structure>'
            f'{varray("forces", r["forces"])}'
            f'<energy><i name="e_fr_energy">{e_fr:.8f}</i><i name="e_0_energy">{e_0:.8f}</i></energy>'
            "</calculation>"
        )
    return (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<modeling>'
        '<generator><i name="program" type="string">vasp</i></generator>'
        '<kpoints><generation param="Gamma"><v type="int" name="divisions">1 1 1</v></generation>'
        '<varray name="kpointlist"><v>0.0 0.0 0.0</v></varray><varray name="weights"><v>1.0</v></varray>'
        "</kpoints>"
        f'<parameters><separator name="ionic"><i type="int" name="IBRION">{ibrion}</i>'
        f'<i name="POTIM">{potim}</i></separator></parameters>'
        f'<atominfo><atoms>{len(first)}</atoms><array name="atoms"><set>{species}</set></array></atominfo>'
        f'<structure name="initialpos"><crystal>{varray("basis", first.cell.array)}</crystal>'
        f'{varray("positions", first.get_scaled_positions(wrap=False))}'
        f'<varray name="selective">{selective}</varray></structure>'
        + "".join(calcs)
        + "</modeling>\n"
    )


def test_vasprun_free_energy_potim_and_selective_dynamics(tmp_path):
    frames = md_frames(3, fixed=False)
    fixed = core_indices(frames[0], 0, 3.0)
    src = tmp_path / "vasprun.xml"
    src.write_text(vasprun_xml(frames, fixed, potim=2.0))
    result = import_files([src], tmp_path / "v.h5")
    assert (result.source, result.energy, result.timestep_fs) == ("vasp", "free_energy", 2.0)
    with TrajectoryReader(tmp_path / "v.h5") as r:
        np.testing.assert_allclose(r.read("position"), [a.positions for a in frames], atol=1e-8)
        np.testing.assert_allclose(r.read("force"), [a.calc.results["forces"] for a in frames], atol=1e-9)
        np.testing.assert_allclose(r.observable("potential_energy"), [a.calc.results["free_energy"] for a in frames])
        assert r.parameters["energy"] == "free_energy" and r.parameters["source"] == "vasp"
        np.testing.assert_allclose(r.times, [0.0, 0.002, 0.004])
        np.testing.assert_array_equal(r.fixed_core.core_ids, np.array(fixed) + 1)
        assert r.fixed_core.center_id == 1 and r.fixed_core.rfix == pytest.approx(A / 2)
    # POTIM is no time step in a relaxation (IBRION != 0)
    src.write_text(vasprun_xml(frames, fixed, potim=0.5, ibrion=2))
    assert import_files([src], tmp_path / "v.h5").timestep_fs is None
    # --dt must agree with the file's time step
    src.write_text(vasprun_xml(frames, fixed, potim=2.0))
    with pytest.raises(InputError, match=r"vasprun\.xml: the file's time step is 2\.0 fs but --dt is 1\.0 fs"):
        import_files([src], tmp_path / "v.h5", dt_fs=1.0)


@pytest.mark.parametrize(
    "reps, centre, radius, n_core, rfix",
    [
        (2, 9, 3.8, 19, A / math.sqrt(2)),  # 1st + 2nd shells: the core spans more than half the box
        (3, 0, 5.9, 57, A * math.sqrt(5) / 2),  # the paper's R_fix = 5.82, centred on a box corner
        (3, 40, 2.7, 7, A / 2),
    ],
)
def test_fixed_core_centre_is_nearest_the_centroid(reps, centre, radius, n_core, rfix):
    atoms = rocksalt(reps)
    atoms.positions += np.random.default_rng(0).normal(0, 1e-3, atoms.positions.shape)  # break exact symmetry
    core = core_indices(atoms, centre, radius)
    atoms.set_constraint(FixAtoms(core))
    fc = fixed_core_of(atoms)
    assert fc.center_id == centre + 1 and fc.core_ids.size == n_core
    assert fc.rfix == pytest.approx(rfix, abs=0.01)
    assert fixed_core_of(rocksalt()) is None


def test_errors_name_file_and_frame(tmp_path):
    good = md_frames(3)
    ase.io.write(tmp_path / "good.xyz", good)

    no_forces = md_frames(3)
    no_forces[2].calc = SinglePointCalculator(no_forces[2], energy=1.0)
    ase.io.write(tmp_path / "noforce.xyz", no_forces)
    with pytest.raises(InputError, match=r"noforce\.xyz: frame 2 has no forces; nlmd import needs forces"):
        import_files([tmp_path / "noforce.xyz"], tmp_path / "o.h5")

    small = [a[:10] for a in md_frames(2)]
    for a, b in zip(small, md_frames(2)):
        a.calc = SinglePointCalculator(a, energy=1.0, forces=b.calc.results["forces"][:10])
    ase.io.write(tmp_path / "small.xyz", small)
    with pytest.raises(InputError, match=r"small\.xyz: frame 0 has 10 atoms but .*good\.xyz frame 0 has 64"):
        import_files([tmp_path / "good.xyz", tmp_path / "small.xyz"], tmp_path / "o.h5")

    swapped = md_frames(2)
    swapped[1].numbers[[0, 1]] = swapped[1].numbers[[1, 0]]
    ase.io.write(tmp_path / "swap.xyz", swapped)
    with pytest.raises(InputError, match=r"swap\.xyz: frame 1: atom 1 is O but was Sr .*species must not change"):
        import_files([tmp_path / "swap.xyz"], tmp_path / "o.h5")

    unknown = tmp_path / "notes.txt"
    unknown.write_text("these are not frames\n")
    with pytest.raises(InputError, match=r"notes\.txt: frame 0: (cannot tell the file format|format .* is not)"):
        import_files([unknown], tmp_path / "o.h5")
    ase.io.write(tmp_path / "cell.cif", good[0])
    with pytest.raises(InputError, match=r"cell\.cif: frame 0: format 'cif' is not a DFT output"):
        import_files([tmp_path / "cell.cif"], tmp_path / "o.h5")
    with pytest.raises(InputError, match=r"notes\.txt: frame 0: ASE cannot read it as extxyz"):
        import_files([unknown], tmp_path / "o.h5", format="extxyz")
    with pytest.raises(InputError, match=r"good\.xyz: index '7' is out of range \(3 frames\)"):
        import_files([tmp_path / "good.xyz"], tmp_path / "o.h5", index="7")
    assert not (tmp_path / "o.h5").exists()
    assert not list(tmp_path.glob(".o.h5*")), "a temporary file was left behind"


def test_cli_success_writes_file_and_summary(tmp_path):
    ase.io.write(tmp_path / "md.xyz", md_frames(3, timestep=1.5))
    out = tmp_path / "dft.h5"
    res = CliRunner().invoke(main, ["import", str(tmp_path / "md.xyz"), "-o", str(out), "--index", "1:"])
    assert res.exit_code == 0, res.output
    assert res.output.count("\n") == 1 and "2 frames x 64 atoms" in res.output and "dt 1.5 fs" in res.output
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # usual permissions, not a temp file's 0600
    summary = json.loads((tmp_path / "dft.h5.summary.json").read_text())
    assert summary["frames"] == 2 and summary["atoms"] == 64 and summary["files"] == [str(tmp_path / "md.xyz")]
    assert summary["fixed_core"]["center_id"] == 1
    with TrajectoryReader(out) as r:
        assert list(r.steps) == [1, 2] and "--index 1:" in r.parameters["command"]


def test_cli_bad_input_exits_1_with_one_line(tmp_path):
    frames = md_frames(2)
    frames[1].calc = None
    ase.io.write(tmp_path / "bad.xyz", frames)
    out = tmp_path / "dft.h5"
    res = CliRunner().invoke(main, ["import", str(tmp_path / "bad.xyz"), "-o", str(out)])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nlmd: error: ") and "bad.xyz: frame 1 has no forces" in lines[0]
    assert not out.exists() and not (tmp_path / "dft.h5.summary.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.xyz"]


# --------------------------------------------------------------------------------------------------
# --ids-from: DFT frames of an exported cell come back with the cell's ids
# --------------------------------------------------------------------------------------------------


def dft_of(atoms: Atoms, seed: int, shift: float = 0.0) -> Atoms:
    """A fake DFT result for ``atoms`` (same row order): random forces and energies."""
    rng = np.random.default_rng(seed)
    out = atoms.copy()
    out.positions += shift
    out.calc = SinglePointCalculator(out, energy=-500.0 - seed, free_energy=-500.5 - seed,
                                     forces=rng.normal(size=(len(atoms), 3)))
    return out


def built_cell(tmp_path: Path) -> dict:
    """`nlmd build sro-rfix --rfix 3.68 -o cell`: the four files and the summary."""
    res = CliRunner().invoke(main, ["build", "sro-rfix", "--rfix", "3.68", "-o", str(tmp_path / "cell")])
    assert res.exit_code == 0, res.output
    return json.loads((tmp_path / "cell.json").read_text())


def test_ids_from_build_files_maps_poscar_rows_to_builder_ids(tmp_path):
    summary = built_cell(tmp_path)
    poscar_ids = np.array(summary["poscar_ids"])
    cell = ase.io.read(tmp_path / "cell.extxyz")  # id order: row k is id k+1
    poscar = ase.io.read(tmp_path / "cell.POSCAR")  # grouped by element, core rows F F F
    fixed_rows = [int(i) for i in poscar.constraints[0].get_indices()]
    frames = [dft_of(poscar, seed=s, shift=0.01 * s) for s in range(2)]
    src = tmp_path / "vasprun.xml"
    src.write_text(vasprun_xml(frames, fixed_rows, potim=1.0))

    plain = import_files([src], tmp_path / "plain.h5")  # without --ids-from: POSCAR rows are ids 1..N
    # the same core, numbered by POSCAR row: the F F F rows, and the row the builder put its centre on
    assert plain.fixed_core.core_ids.tolist() == sorted(r + 1 for r in fixed_rows)
    assert plain.fixed_core.center_id == int(np.flatnonzero(poscar_ids == summary["center_id"])[0]) + 1

    for ref in ("cell.json", "cell.extxyz", "cell.data"):
        out = tmp_path / f"dft_{ref}.h5"
        result = import_files([src], out, ids_from=tmp_path / ref)
        assert result.ids_from == tmp_path / ref
        with TrajectoryReader(out) as r:
            np.testing.assert_array_equal(r.ids, np.arange(1, 145))
            np.testing.assert_array_equal(r.species, cell.numbers)
            np.testing.assert_allclose(r.read("position")[0], cell.positions, atol=1e-8)
            np.testing.assert_allclose(r.read("position")[1], cell.positions + 0.01, atol=1e-8)
            for k, fr in enumerate(frames):  # POSCAR row j is id poscar_ids[j]
                np.testing.assert_allclose(r.read("force")[k][poscar_ids - 1], fr.calc.results["forces"], atol=1e-9)
            assert r.fixed_core.center_id == 1
            np.testing.assert_array_equal(r.fixed_core.core_ids, summary["core_ids"])
            if ref != "cell.data":  # the data file carries no core: R_fix is then the lower bound
                assert r.fixed_core.rfix == 3.68
            assert r.parameters["ids_from"] == str(tmp_path / ref)


def test_ids_from_model_trajectory_then_compare(tmp_path):
    """Model MD -> frames exported as POSCAR -> DFT single points -> import --ids-from md.h5 -> compare."""
    from nlmd.compare import compare_files
    from nlmd.h5md import FixedCore, Frame, TrajectoryWriter, to_atoms
    from nlmd.structures import build_fixed_core_cell, write_poscar

    cell = build_fixed_core_cell(3.68, seed=1)
    n = len(cell.atoms)
    ids = 100 + 3 * np.arange(n)  # LAMMPS ids need not be 1..N
    core = FixedCore(center_id=int(ids[0]), rfix=3.68, core_ids=ids[cell.core_ids - 1])
    rng = np.random.default_rng(0)
    md = tmp_path / "md.h5"
    with TrajectoryWriter(md, fixed_core=core) as w:
        pos = cell.atoms.positions.copy()
        for step in range(0, 60, 10):  # MD time step 0.5 fs, a frame every 10 steps
            pos[~cell.core_mask] += rng.normal(0, 0.05, (int((~cell.core_mask).sum()), 3))
            w.write(Frame(step=step, time=step * 0.0005, box=cell.atoms.cell.array, ids=ids,
                          species=cell.atoms.numbers, positions=pos, forces=rng.normal(size=(n, 3)),
                          observables={"potential_energy": -400.0}))
    # every second frame -> POSCAR (with the core F F F) -> "DFT"
    dft_files = []
    with TrajectoryReader(md) as r:
        for i in range(0, r.n_frames, 2):
            fr = r.frame(i)
            atoms = to_atoms(fr)
            atoms.set_constraint(FixAtoms(mask=np.isin(fr.ids, core.core_ids)))
            d = tmp_path / f"sp{i}"
            d.mkdir()
            write_poscar(atoms, d / "POSCAR")
            poscar = ase.io.read(d / "POSCAR")
            (d / "vasprun.xml").write_text(
                vasprun_xml([dft_of(poscar, seed=i)], [int(j) for j in poscar.constraints[0].get_indices()],
                            potim=0.5, ibrion=-1))
            dft_files.append(d / "vasprun.xml")
    res = CliRunner().invoke(main, ["import", *map(str, dft_files), "-o", str(tmp_path / "dft.h5"),
                                    "--ids-from", str(md), "--dt", "10"])
    assert res.exit_code == 0, res.output
    assert f"ids from {md}" in res.output
    with TrajectoryReader(tmp_path / "dft.h5") as r:
        np.testing.assert_array_equal(r.ids, ids)
        assert r.fixed_core.center_id == core.center_id and r.fixed_core.rfix == 3.68
        np.testing.assert_array_equal(r.fixed_core.core_ids, core.core_ids)
    summary = json.loads((tmp_path / "dft.h5.summary.json").read_text())
    assert summary["ids_from"] == str(md)

    report = compare_files(md, tmp_path / "dft.h5", by="time")
    assert report["n_frames"] == 3 and report["center"]["id"] == core.center_id
    # without --ids-from the same import does not match the model's atoms
    import_files(dft_files, tmp_path / "plain.h5", dt_fs=10)
    from nlmd.errors import DataMismatchError

    with pytest.raises(DataMismatchError):
        compare_files(md, tmp_path / "plain.h5", by="time")


def test_ids_from_errors(tmp_path):
    summary = built_cell(tmp_path)
    poscar = ase.io.read(tmp_path / "cell.POSCAR")
    fixed_rows = [int(i) for i in poscar.constraints[0].get_indices()]
    src = tmp_path / "vasprun.xml"
    src.write_text(vasprun_xml([dft_of(poscar, 0)], fixed_rows, potim=1.0))
    out = tmp_path / "o.h5"

    with pytest.raises(InputError, match=r"--ids-from .*cell\.POSCAR: a POSCAR lists atoms element by element"):
        import_files([src], out, ids_from=tmp_path / "cell.POSCAR")
    (tmp_path / "other.json").write_text(json.dumps({"frames": 3}))
    with pytest.raises(InputError, match=r"other\.json: not the JSON summary of `nlmd build`"):
        import_files([src], out, ids_from=tmp_path / "other.json")
    ase.io.write(tmp_path / "small.extxyz", rocksalt())
    with pytest.raises(InputError, match=r"vasprun\.xml: frame 0 has 144 atoms but .*small\.extxyz \(extxyz\) describes 64"):
        import_files([src], out, ids_from=tmp_path / "small.extxyz")
    other = ase.io.read(tmp_path / "cell.extxyz")
    other.numbers[-1] = 38  # 73 Sr + 71 O
    ase.io.write(tmp_path / "other.extxyz", other)
    with pytest.raises(InputError, match=r"frame 0 has 72 O atoms but .*other\.extxyz \(extxyz\) has 71"):
        import_files([src], out, ids_from=tmp_path / "other.extxyz")
    # rows not in the order --ids-from assumes: two Sr rows swapped, one of them fixed
    swapped = poscar.copy()
    mobile_sr = next(j for j in range(72) if j not in fixed_rows)
    order = np.arange(len(poscar))
    order[[0, mobile_sr]] = order[[mobile_sr, 0]]
    swapped = swapped[order]
    swapped.set_constraint(FixAtoms([int(np.flatnonzero(order == j)[0]) for j in fixed_rows]))
    src.write_text(vasprun_xml([dft_of(swapped, 0)], [int(i) for i in swapped.constraints[0].get_indices()], potim=1.0))
    with pytest.raises(InputError, match=r"vasprun\.xml: with the ids of .*cell\.json the fixed atoms \(19\) are not its fixed core"):
        import_files([src], out, ids_from=tmp_path / "cell.json")
    assert summary["n_core"] == 19
    assert not out.exists() and not list(tmp_path.glob(".o.h5*"))
