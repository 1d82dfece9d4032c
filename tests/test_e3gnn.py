"""pair_style e3gnn (nlmd's serial SevenNet style) against SevenNetCalculator, with the AOTInductor package
`nlmd deploy` compiles and with the TorchScript file; e3gnn/sevenn (SevenNet's own style) likewise."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from conftest import assert_close
from nlmd.errors import SimulationError
from nlmd.evaluate import LammpsEvaluator

FORCE_TOL = 1e-5  # eV/A


def reference(checkpoint, atoms):
    from sevenn.calculator import SevenNetCalculator

    atoms = atoms.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms.calc = SevenNetCalculator(str(checkpoint), device="cpu")
        return (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False),
                atoms.calc.results["energies"])


def check_against_calculator(potential, checkpoint, atoms, elements=None):
    with LammpsEvaluator(potential, elements) as ev:
        got = ev.evaluate(atoms)
    e, f, s, ea = reference(checkpoint, atoms)
    n = len(atoms)
    assert abs(got.energy - e) / n <= 1e-6, (got.energy, e)
    assert_close(got.forces, f, FORCE_TOL, "forces (eV/A)")
    assert_close(got.stress, s, 1e-6, "stress (eV/A^3)")
    assert_close(got.energies, ea, 1e-5, "per-atom energies (eV)")
    assert np.abs(f).max() > 0.1, "the test structure must have sizeable forces"
    return got


@pytest.fixture(params=["aot", "torchscript"])
def serial_potential(request, tiny_potential, tiny_torchscript_potential):
    """The tiny deployment through pair_style e3gnn: deployed_serial.pt2 (default) or deployed_serial.pt."""
    return tiny_potential if request.param == "aot" else tiny_torchscript_potential


def test_sro_displaced(serial_potential, tiny_checkpoint, sro_atoms):
    check_against_calculator(serial_potential, tiny_checkpoint, sro_atoms)


def test_triclinic_cell(serial_potential, tiny_checkpoint):
    atoms = bulk("SrO", "rocksalt", a=5.2).repeat((3, 2, 2))  # primitive fcc vectors: a skewed cell
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.3, -0.2], [0.25, 0.0, 0.1], [0.0, -0.15, 0.0]]),
                   scale_atoms=True)
    atoms.rattle(0.1, seed=5)
    assert not atoms.cell.orthorhombic
    check_against_calculator(serial_potential, tiny_checkpoint, atoms)


def test_cell_smaller_than_twice_the_cutoff(serial_potential, tiny_checkpoint):
    # 2-atom primitive rocksalt cell: |a_i| = 3.68 A < 2 x 4 A cutoff, so atoms see several images of each other
    atoms = bulk("SrO", "rocksalt", a=5.2)
    atoms.positions[1] += [0.35, -0.2, 0.25]
    assert min(atoms.cell.lengths()) < 2 * 4.0
    check_against_calculator(serial_potential, tiny_checkpoint, atoms)


def test_element_order_differs_from_model(serial_potential, tiny_checkpoint, sro_atoms):
    # the model orders O before Sr (by atomic number); give LAMMPS type 1 = Sr, type 2 = O and the reverse
    a = check_against_calculator(serial_potential, tiny_checkpoint, sro_atoms, ["Sr", "O"])
    b = check_against_calculator(serial_potential, tiny_checkpoint, sro_atoms, ["O", "Sr"])
    assert_close(a.forces, b.forces, 1e-6, "forces with swapped type order")


def test_element_the_model_lacks_fails_clearly(serial_potential):
    atoms = Atoms("SrOCa", positions=[[0, 0, 0], [2.6, 0, 0], [0, 2.6, 0]], cell=[8, 8, 8], pbc=True)
    with pytest.raises(SimulationError, match=r"element 'Ca' \(atom type 3\) is not in the model"):
        with LammpsEvaluator(serial_potential, ["Sr", "O", "Ca"]) as ev:
            ev.evaluate(atoms)


def test_rescoring_many_structures_reuses_the_instance(serial_potential, tiny_checkpoint, sro_atoms):
    with LammpsEvaluator(serial_potential) as ev:
        for seed in (1, 2):
            atoms = sro_atoms.copy()
            atoms.rattle(0.05, seed=seed)
            atoms.set_cell(atoms.cell * (1 + 0.01 * seed), scale_atoms=True)
            got = ev.evaluate(atoms)
            e, f, s, ea = reference(tiny_checkpoint, atoms)
            assert_close(got.forces, f, FORCE_TOL, f"forces, structure {seed}")
            assert abs(got.energy - e) / len(atoms) < 1e-6


@pytest.mark.slow
def test_sevennet0_sro(sro_atoms, tmp_path):
    """SevenNet-0 deployed by nlmd deploy: LAMMPS forces equal SevenNetCalculator's."""
    from nlmd.deploy import deploy, resolve_checkpoint

    pot = deploy("7net-0", tmp_path / "7net-0", parallel=False, aot=False, verify=False, echo=lambda s: None)
    checkpoint, _ = resolve_checkpoint("7net-0")
    check_against_calculator(pot, checkpoint, sro_atoms, ["Sr", "O"])


@pytest.mark.slow
def test_sevennet0_package_sro(sro_atoms, tmp_path):
    """SevenNet-0 compiled by nlmd deploy (AOTInductor): LAMMPS forces equal SevenNetCalculator's. Uses the
    repository's potentials/7net-0 when .ci/setup has deployed it, else compiles it here (~6 min)."""
    import json
    from pathlib import Path

    from nlmd.deploy import deploy, resolve_checkpoint

    pot = Path(__file__).resolve().parents[1] / "potentials" / "7net-0"
    if not (pot / "manifest.json").is_file() or not json.loads((pot / "manifest.json").read_text()).get("aot"):
        pot = deploy("7net-0", tmp_path / "7net-0", parallel=False, aot=True, verify=False, echo=lambda s: None)
    assert "deployed_serial.pt2" in (pot / "pair.lmp").read_text()
    checkpoint, _ = resolve_checkpoint("7net-0")
    check_against_calculator(pot, checkpoint, sro_atoms, ["Sr", "O"])


@pytest.fixture(scope="module")
def sevenn_style_potential(tiny_potential, tmp_path_factory):
    """The tiny deployment driven by e3gnn/sevenn: SevenNet's own pair_e3gnn.cpp compiled into the plugin."""
    import shutil

    d = tmp_path_factory.mktemp("sevenn-style") / "tiny"
    shutil.copytree(tiny_potential, d)
    (d / "pair.lmp").write_text("pair_style e3gnn/sevenn\npair_coeff * * ${potential}/deployed_serial.pt ${elements}\n")
    return d


def test_sevenn_compiled_style_matches_calculator_and_ours(sevenn_style_potential, tiny_potential, tiny_checkpoint,
                                                           sro_atoms):
    theirs = check_against_calculator(sevenn_style_potential, tiny_checkpoint, sro_atoms)
    with LammpsEvaluator(tiny_potential) as ev:
        ours = ev.evaluate(sro_atoms)
    assert_close(ours.forces, theirs.forces, 1e-5, "forces, e3gnn vs e3gnn/sevenn")


def test_sevenn_compiled_style_small_cell_and_bad_element(sevenn_style_potential, tiny_checkpoint):
    atoms = bulk("SrO", "rocksalt", a=5.2)
    atoms.positions[1] += [0.35, -0.2, 0.25]
    check_against_calculator(sevenn_style_potential, tiny_checkpoint, atoms)
    bad = Atoms("SrOCa", positions=[[0, 0, 0], [2.6, 0, 0], [0, 2.6, 0]], cell=[8, 8, 8], pbc=True)
    with pytest.raises(SimulationError, match=r"e3gnn/sevenn: element 'Ca' \(atom type 3\) is not in the model"):
        with LammpsEvaluator(sevenn_style_potential, ["Sr", "O", "Ca"]) as ev:
            ev.evaluate(bad)
