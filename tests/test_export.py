"""``nlmd export`` and the stress a run records: trajectory file -> training set that sevenn reads."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO

from nlmd.cli import main
from nlmd.errors import InputError
from nlmd.export import export_frames
from nlmd.h5md import TrajectoryReader
from nlmd.md.driver import stream_trajectory as run_input

CRYSTAL_IN = REPO / "lammps_inputs/sro_crystal_nvt.in"
RIGID = REPO / "potentials/sro-rigid-ion"


@pytest.fixture(scope="module")
def crystal_run(tmp_path_factory):
    """40 steps of the training MD of the crystal with the rigid-ion reference, a frame every 10 steps."""
    d = tmp_path_factory.mktemp("crystal")
    out = d / "crystal.h5"
    run_input(CRYSTAL_IN, out, every=10, quiet=True, log=d / "crystal.log",
              variables={"potential": str(RIGID), "time": "0.04", "temp": "1600", "prefix": str(d / "crystal")})
    return out


def _energy(atoms) -> float:
    from nlmd.evaluate import LammpsEvaluator

    with LammpsEvaluator(RIGID, ["Sr", "O"]) as ev:
        return ev.evaluate(atoms).energy


def test_run_records_the_stress_of_the_energy_under_strain(crystal_run):
    """A frame's stress is LAMMPS's virial stress of those positions, and dE/d(strain)/V.

    The finite differences of the Ewald energy are noisy at ~1 % here (the k-space set-up follows the
    strained box), enough to catch a wrong sign, unit or Voigt order, which the tolerance is set against.
    """
    from ase import Atoms

    from nlmd.evaluate import LammpsEvaluator

    with TrajectoryReader(crystal_run) as r:
        assert "stress" in r.observable_names and r.units["stress"] == "eV Angstrom-3"
        frame = r.frame(2)
    stress = np.asarray(frame.observables["stress"])
    assert stress.shape == (6,)
    atoms = Atoms(numbers=frame.species, positions=frame.positions, cell=frame.box, pbc=True)
    with LammpsEvaluator(RIGID, ["Sr", "O"]) as ev:
        full = ev.evaluate(atoms).stress
    voigt = full[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    np.testing.assert_allclose(stress, voigt, atol=1e-9)

    volume = atoms.get_volume()
    eps = 1e-4
    scale = np.max(np.abs(stress))
    for k, (i, j) in ((0, (0, 0)), (1, (1, 1)), (3, (1, 2)), (5, (0, 1))):
        e = []
        for sign in (1, -1):
            strain = np.eye(3)
            if i == j:
                strain[i, i] += sign * eps
            else:
                strain[i, j] += sign * eps / 2
                strain[j, i] += sign * eps / 2
            strained = atoms.copy()
            strained.set_cell(atoms.cell @ strain, scale_atoms=True)
            e.append(_energy(strained))
        numeric = (e[0] - e[1]) / (2 * eps) / volume
        assert abs(stress[k] - numeric) < 0.05 * scale, (k, stress[k], numeric)


def test_export_writes_what_ase_and_sevenn_read(crystal_run, tmp_path):
    out = tmp_path / "train.extxyz"
    res = export_frames(crystal_run, out)
    assert res.n_frames == 5 and res.labels == ["energy", "forces", "stress"]
    images = ase.io.read(out, index=":")
    with TrajectoryReader(crystal_run) as r:
        for i, atoms in enumerate(images):
            f = r.frame(i)
            assert atoms.info["step"] == f.step
            np.testing.assert_allclose(atoms.positions, f.positions, atol=1e-7)
            np.testing.assert_allclose(atoms.get_forces(), f.forces, atol=1e-7)
            assert abs(atoms.get_potential_energy() - f.observables["potential_energy"]) < 1e-7
            np.testing.assert_allclose(atoms.get_stress(), f.observables["stress"], atol=1e-10)
            assert list(atoms.numbers[:1]) == [38] and np.allclose(atoms.cell.array, f.box)
    from sevenn.train.dataload import ase_reader

    graphs = ase_reader(str(out))
    assert len(graphs) == 5
    np.testing.assert_allclose(graphs[1].arrays["y_force"], images[1].get_forces())


def test_export_selects_steps_and_strides(crystal_run, tmp_path):
    res = export_frames(crystal_run, tmp_path / "a.extxyz", start_step=10, stop_step=40, every=2)
    assert res.steps == [10, 30]
    with pytest.raises(InputError, match="no frame has a step"):
        export_frames(crystal_run, tmp_path / "b.extxyz", start_step=1000)


def test_export_never_writes_over_its_input_or_an_existing_file(crystal_run, tmp_path):
    out = tmp_path / "t.extxyz"
    out.write_text("keep me")
    with pytest.raises(InputError, match="exists; pass --force to overwrite it"):
        export_frames(crystal_run, out)
    assert out.read_text() == "keep me"
    with pytest.raises(InputError, match="is also an input of this command"):
        export_frames(crystal_run, crystal_run, force=True)
    r = CliRunner().invoke(main, ["export", str(crystal_run), "-o", str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert "5 frames x 64 atoms" in r.output and len(ase.io.read(out, index=":")) == 5


def test_export_refuses_frames_without_energies(tmp_path):
    out = tmp_path / "ne.h5"
    run_input(CRYSTAL_IN, out, every=10, quiet=True, energies=False, log=tmp_path / "ne.log",
              variables={"potential": str(RIGID), "time": "0.02", "prefix": str(tmp_path / "ne")})
    with pytest.raises(InputError, match="potential_energy"):
        export_frames(out, tmp_path / "x.extxyz")
    assert not (tmp_path / "x.extxyz").exists()


def test_export_of_a_file_without_stress(crystal_run, tmp_path):
    """Rescored frames carry energies and forces but no stress: exported without, or refused if asked for."""
    from nlmd.rescore import rescore_file

    rescored = tmp_path / "rescored.h5"
    rescore_file(crystal_run, RIGID, rescored)
    with pytest.raises(InputError, match="has no stress"):
        export_frames(rescored, tmp_path / "x.extxyz", stress=True)
    res = export_frames(rescored, tmp_path / "x.extxyz")
    assert res.labels == ["energy", "forces"]
    atoms = ase.io.read(tmp_path / "x.extxyz", index=0)
    assert "stress" not in atoms.calc.results and atoms.get_forces().shape == (64, 3)
