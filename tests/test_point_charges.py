"""The point-charge toy model (Kang 2024, Methods 5.1): the generator's rules, types I/II/III, the exact
Coulomb reference against a direct numpy sum, non-periodic evaluation and rescoring, and the experiment's
steps on a test budget (training with sevenn, the probe, a model's reach)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from nlmd.errors import InputError
from nlmd.point_charges import SPECIES, build_point_charges

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "potentials/point-charges-coulomb"
K = 14.399645  # eV A / e^2, written out here independently of the package


def nlmd(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nlmd", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO)


def coulomb_numpy(atoms) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy, forces and per-atom energies (half of each pair) of the bare Coulomb sum, by numpy."""
    q = np.array([{"Rf": 1.0, "Db": -1.0, "Sg": 0.5, "Bh": -0.5}[s] for s in atoms.get_chemical_symbols()])
    x = atoms.positions
    r = x[:, None, :] - x[None, :, :]
    dist = np.linalg.norm(r, axis=-1)
    np.fill_diagonal(dist, np.inf)
    pair = K * q[:, None] * q[None, :] / dist
    forces = ((pair / dist ** 2)[..., None] * r).sum(axis=1)
    return 0.5 * pair.sum(), forces, 0.5 * pair.sum(axis=1)


# ------------------------------------------------------------------------------------------ generator


@pytest.mark.parametrize("d", [4.0, 9.0, 24.0])
def test_generator_follows_the_papers_rules(d):
    cell = build_point_charges(d, seed=5)
    I = cell.types["I"]
    n = 120 + 5 * d
    symbols = I.get_chemical_symbols()
    assert symbols.count("Rf") == 1 and symbols.count("Db") == 1
    assert symbols.count("Sg") == n and symbols.count("Bh") == n
    assert not I.pbc.any()
    region = np.array([10.0, 10.0, 24.0 + d])
    np.testing.assert_allclose(np.diag(I.cell), region + 12.0)
    assert np.allclose(I.cell, np.diag(np.diag(I.cell)))
    x = I.positions - 6.0  # region coordinates
    np.testing.assert_allclose(x[symbols.index("Rf")], [5, 5, 12])
    np.testing.assert_allclose(x[symbols.index("Db")], [5, 5, 12 + d])
    assert (x >= 0).all() and (x <= region).all(), "a particle outside the region"
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert dist.min() >= 1.5
    # vacuum: at least 6 A between every particle and every face of the cell
    assert I.positions.min() >= 6.0 and (np.diag(I.cell) - I.positions).min() >= 6.0


def test_types_share_their_random_particles():
    cell = build_point_charges(6.0, seed=11)
    I, II, III = (cell.types[t] for t in ("I", "II", "III"))
    sym = np.array(I.get_chemical_symbols())
    minus, plus = int(np.flatnonzero(sym == "Db")[0]), int(np.flatnonzero(sym == "Rf")[0])
    keep_ii = np.delete(np.arange(len(I)), minus)
    keep_iii = np.delete(np.arange(len(I)), plus)
    np.testing.assert_array_equal(II.positions, I.positions[keep_ii])
    np.testing.assert_array_equal(III.positions, I.positions[keep_iii])
    assert II.get_chemical_symbols() == sym[keep_ii].tolist()
    assert III.get_chemical_symbols() == sym[keep_iii].tolist()
    assert II.get_chemical_symbols()[cell.plus_index] == "Rf"


def test_generator_is_seeded():
    a, b, c = (build_point_charges(5.0, seed=s).types["I"].positions for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_impossible_requests_fail_with_one_sentence():
    with pytest.raises(InputError, match="at least 1.5 A apart"):
        build_point_charges(1.2, seed=0)
    with pytest.raises(InputError, match="could not place particle"):
        build_point_charges(4.0, seed=0, n_half=2000)  # 4000 particles cannot be 1.5 A apart in 2800 A^3


def test_species_are_no_element_of_a_real_material():
    from ase.data import atomic_numbers

    assert [atomic_numbers[s] for s in SPECIES] == [104, 105, 106, 107]
    assert list(SPECIES.values()) == [1.0, -1.0, 0.5, -0.5]


# ------------------------------------------------------------------------------------------ reference


def test_reference_is_the_exact_coulomb_sum():
    from nlmd.evaluate import LammpsEvaluator

    for d, t in ((4.0, "I"), (24.0, "I"), (9.0, "II"), (9.0, "III")):
        atoms = build_point_charges(d, seed=7).types[t]
        energy, forces, per_atom = coulomb_numpy(atoms)
        with LammpsEvaluator(REFERENCE, list(SPECIES)) as ev:
            res = ev.evaluate(atoms)
        assert abs(res.energy - energy) <= 1e-6 * abs(energy)
        assert np.abs(res.forces - forces).max() <= 1e-6 * np.abs(forces).max()
        assert np.abs(res.energies - per_atom).max() <= 1e-6 * np.abs(per_atom).max()
        assert np.isnan(res.stress).all()  # no cell, no stress


def test_reference_difference_is_k_over_d_squared():
    """I - II on the +1e particle is the -1e particle's force alone, k/d² along +z (the probe's ideal)."""
    from nlmd.evaluate import LammpsEvaluator

    cell = build_point_charges(13.0, seed=2)
    with LammpsEvaluator(REFERENCE, list(SPECIES)) as ev_i, LammpsEvaluator(REFERENCE, list(SPECIES)) as ev_ii:
        a, b = ev_i.evaluate(cell.types["I"]), ev_ii.evaluate(cell.types["II"])
    df = a.forces[0] - b.forces[0]
    np.testing.assert_allclose(df, [0, 0, K / 13.0 ** 2], atol=1e-9)
    assert a.energies[0] - b.energies[0] == pytest.approx(-K / 13.0 / 2, rel=1e-9)


def test_one_evaluator_takes_structures_anywhere():
    """Non-periodic structures of one size at different places: the box follows them, nothing is lost."""
    from nlmd.evaluate import LammpsEvaluator

    atoms = build_point_charges(6.0, seed=1).types["I"]
    moved = atoms.copy()
    moved.positions += [40.0, -25.0, 100.0]
    flipped = atoms.copy()
    flipped.positions = flipped.positions[::-1] * [1, 1, -1]
    flipped.set_chemical_symbols(atoms.get_chemical_symbols()[::-1])
    with LammpsEvaluator(REFERENCE, list(SPECIES)) as ev:
        results = [ev.evaluate(a) for a in (atoms, moved, flipped, atoms)]
    for a, res in zip((atoms, moved, flipped, atoms), results):
        energy, forces, _ = coulomb_numpy(a)
        assert abs(res.energy - energy) <= 1e-6 * abs(energy)
        assert np.abs(res.forces - forces).max() <= 1e-6 * np.abs(forces).max()


def test_reference_refuses_what_it_cannot_sum_exactly():
    from nlmd.evaluate import LammpsEvaluator

    atoms = build_point_charges(5.0, seed=1).types["I"]
    periodic = atoms.copy()
    periodic.pbc = True
    with LammpsEvaluator(REFERENCE, list(SPECIES)) as ev, pytest.raises(InputError, match="periodic images"):
        ev.evaluate(periodic)
    far = atoms.copy()
    far.positions[-1] += [0, 0, 200.0]
    with LammpsEvaluator(REFERENCE, list(SPECIES)) as ev, pytest.raises(InputError, match="max_extent_A"):
        ev.evaluate(far)
    slab = atoms.copy()
    slab.pbc = [True, True, False]
    with LammpsEvaluator(REFERENCE, list(SPECIES)) as ev, pytest.raises(InputError, match="in all three directions"):
        ev.evaluate(slab)


def test_rescore_labels_a_non_periodic_file(tmp_path):
    """extxyz -> nlmd import -> nlmd rescore with the reference: the numpy sum's forces and energy."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for seed in (1, 2):
        atoms = build_point_charges(5.0, seed=seed).types["I"]
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
        frames.append(atoms)
    ase.io.write(tmp_path / "pc.extxyz", frames, format="extxyz")
    r = nlmd("import", tmp_path / "pc.extxyz", "-o", tmp_path / "pc.h5")
    assert r.returncode == 0, r.stderr
    r = nlmd("rescore", tmp_path / "pc.h5", "--potential", REFERENCE, "-o", tmp_path / "ref.h5")
    assert r.returncode == 0, r.stderr
    from nlmd.h5md import TrajectoryReader

    with TrajectoryReader(tmp_path / "ref.h5") as r:
        assert r.boundary == ("none", "none", "none")
        out = [r.frame(k) for k in range(r.n_frames)]
    assert len(out) == 2
    for frame, atoms in zip(out, frames):
        e, fr, _ = coulomb_numpy(atoms)
        np.testing.assert_allclose(frame.positions, atoms.positions, atol=1e-9)  # rows in the file's order
        assert abs(frame.observables["potential_energy"] - e) <= 1e-6 * abs(e)
        assert np.abs(frame.forces - fr).max() <= 1e-6 * np.abs(fr).max()


def test_build_command_writes_three_types(tmp_path):
    import ase.io

    r = nlmd("build", "point-charges", "--d", "8", "--seed", "4", "-o", tmp_path / "pc")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "pc.json").read_text())
    assert summary["atoms"] == {"I": 322, "II": 321, "III": 321}
    I = ase.io.read(tmp_path / "pc-I.extxyz")
    np.testing.assert_allclose(I.positions, build_point_charges(8.0, seed=4).types["I"].positions, atol=1e-6)
    assert not I.pbc.any()
    r = nlmd("build", "point-charges", "--d", "8", "--seed", "4", "-o", tmp_path / "pc")
    assert r.returncode != 0 and "exists" in r.stderr
    r = nlmd("build", "point-charges", "--d", "0.5", "-o", tmp_path / "bad")
    assert r.returncode != 0 and "1.5 A apart" in r.stderr and not (tmp_path / "bad-I.extxyz").exists()


# ----------------------------------------------------------------------------------------- experiment


@pytest.fixture(scope="module")
def short_model(tmp_path_factory) -> Path:
    """A random 1-layer SevenNet for the four species with a 2.7 A cutoff: its forces reach 2·r_c = 5.4 A."""
    from nlmd.testing import make_tiny_checkpoint

    d = tmp_path_factory.mktemp("pc-short")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cp = make_tiny_checkpoint(d / "short.pth", tuple(SPECIES), cutoff=2.7, num_layers=1, seed=5)
    r = nlmd("deploy", cp, "-o", d / "short", "--no-parallel", "--no-aot")
    assert r.returncode == 0, r.stderr
    return d / "short"


def test_probe_reference_exact_and_model_reach(short_model, tmp_path):
    """The probe: the reference gives k/d² to round-off; a model whose forces reach 5.4 A gives exactly zero
    for d = 6 and 12 A (the -1e particle is out of its sight), and the results and figures are written."""
    from nlmd.experiments import point_charges as X
    from nlmd.experiments.sro_rfix import Model

    budget = X.Budget(distances=(3.0, 6.0, 12.0), pairs=2, seed=3)
    res = X.probe([Model.from_directory("short", short_model)], budget, tmp_path, echo=lambda s: None)
    rows = {(r["potential"], r["d"]): r for r in res["rows"]}
    for d in budget.distances:
        ref = rows[("reference", d)]
        assert ref["mean_deviation"] < 1e-8 and ref["dF_std"] < 1e-8 * ref["k_over_d2"]
        assert ref["dE_mean"] == pytest.approx(-K / d / 2, rel=1e-8)
    raw = res["raw"]["short"]
    assert all(v == 0.0 for d in ("6", "12") for v in raw[d]["dF"]), raw
    assert any(v != 0.0 for v in raw["3"]["dF"])
    assert res["summary"]["reference"]["reproduces_up_to_A"] == 12.0
    assert res["summary"]["short"]["first_miss_A"] == 3.0
    for name in ("fig2b", "fig3", "fig4"):
        assert Path(res["figures"][name]).stat().st_size > 10_000
    assert json.loads((tmp_path / "results.json").read_text())["budget"]["pairs"] == 2
    tests = __import__("ase.io").io.read(tmp_path / "test-set" / "d12.extxyz", index=":")
    assert len(tests) == 4 and not tests[0].pbc.any()
    assert tests[0].get_forces()[0] == pytest.approx(coulomb_numpy(tests[0])[1][0], rel=1e-6)


def test_training_recipe_runs_sevenn(tmp_path):
    """The recipe's data set (split by configuration) and two sevenn runs, shipped with their recipe."""
    import ase.io

    r = nlmd("experiment", "point-charges-train", "--budget", "tiny", "-o", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    train = ase.io.read(tmp_path / "run/data/train.extxyz", index=":")
    valid = ase.io.read(tmp_path / "run/data/valid.extxyz", index=":")
    assert len(train) + len(valid) == 5 * 2 * 3 and len(valid) == 3
    key = lambda a: (a.info["d"], a.info["seed"])  # noqa: E731
    assert not {key(a) for a in train} & {key(a) for a in valid}, "a configuration on both sides of the split"
    assert sorted(a.info["point_charges_type"] for a in valid) == ["I", "II", "III"]
    e, f, _ = coulomb_numpy(valid[0])
    assert valid[0].get_potential_energy() == pytest.approx(e, rel=1e-6)
    for L in (3, 5):
        info = json.loads((tmp_path / f"run/models/point-charges-{L}layer/training.json").read_text())
        assert info["layers"] == L and info["recipe"]["configs"] == 2
        assert info["data"]["split"].startswith("by configuration")
        assert (tmp_path / f"run/models/point-charges-{L}layer/checkpoint.pth").is_file()
        yaml = (tmp_path / f"run/models/point-charges-{L}layer/sevenn.yaml").read_text()
        assert "chemical_species: ['Rf', 'Db', 'Sg', 'Bh']" in yaml
