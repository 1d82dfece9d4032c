"""Fixed-core cells of any crystal (nlmd.structures.build_crystal_core_cell) and `nlmd build fixed-core`:
the paper's Sr metal (fcc, 96 Sr in a 17.29 Å cube) and the rules shared with the rocksalt builder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nlmd import structures as S
from nlmd.errors import InputError

SR_A, SR_BOX, SR_N = 5.99, 17.29, 96


def fcc_shells(a: float, n_shells: int) -> list[tuple[float, int]]:
    """(radius, number of sites) of the first fcc shells, by brute force over the conventional cubic
    lattice (4-atom basis): independent of the builder's primitive-cell enumeration."""
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    r = np.arange(-4, 5)
    cells = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    sites = (cells[:, None, :] + basis[None]).reshape(-1, 3) * a
    d = np.linalg.norm(sites, axis=1)
    d = np.round(d[d > 0], 6)
    radii, counts = np.unique(d, return_counts=True)
    return list(zip(radii[:n_shells].tolist(), counts[:n_shells].tolist()))


def mic_min_distance(atoms) -> float:
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def test_fcc_shells_are_the_textbook_ones():
    """The test's own enumeration against the fcc coordination shells a·sqrt(n/2), n = 1..6."""
    shells = fcc_shells(SR_A, 6)
    assert [n for _, n in shells] == [12, 6, 24, 12, 24, 8]
    assert np.allclose([r for r, _ in shells], [SR_A * math.sqrt(n / 2) for n in range(1, 7)], atol=1e-6)


@pytest.mark.parametrize("shell", [0, 1, 2])
def test_fcc_core_holds_the_shells_below_rfix(shell):
    """R_fix just above a shell radius keeps that shell; R_fix exactly on the next one leaves it out."""
    shells = fcc_shells(SR_A, 4)
    radius = shells[shell][0]
    expected = 1 + sum(n for _, n in shells[: shell + 1])
    cell = S.build_crystal_core_cell(radius + 0.01, crystal="fcc", elements=["Sr"], a=SR_A, box=SR_BOX,
                                     natoms=SR_N, seed=shell)
    assert cell.n_core == expected
    if shell + 1 < len(shells) and 2 * shells[shell + 1][0] + 1.5 <= SR_BOX:
        on = S.build_crystal_core_cell(shells[shell + 1][0], crystal="fcc", elements=["Sr"], a=SR_A,
                                       box=SR_BOX, natoms=SR_N)
        assert on.n_core == expected  # a site on the sphere is outside
    atoms = cell.atoms
    pos = atoms.positions
    # the core is a piece of the crystal: every core atom's offset from the centre is a lattice vector
    # (half-integer multiples of a in each coordinate with an even sum)
    u = (pos[: cell.n_core] - SR_BOX / 2) / (SR_A / 2)
    assert np.allclose(u, np.round(u), atol=1e-9)
    assert np.all(np.round(u).sum(axis=1) % 2 == 0)
    r = np.linalg.norm(pos[: cell.n_core] - SR_BOX / 2, axis=1)
    assert r.max() < radius + 0.01 and np.all(np.diff(r) >= -1e-9)
    # composition, density, the 1.5 Å rule with images, random atoms outside the sphere
    assert len(atoms) == SR_N and set(atoms.get_chemical_symbols()) == {"Sr"}
    assert atoms.get_volume() / len(atoms) == pytest.approx(53.8, abs=0.1)
    assert mic_min_distance(atoms) >= 1.5
    dc = pos[cell.n_core :] - SR_BOX / 2
    dc -= SR_BOX * np.round(dc / SR_BOX)
    assert np.linalg.norm(dc, axis=1).min() >= radius + 0.01
    assert np.array_equal(np.flatnonzero(atoms.arrays["core"]), np.arange(cell.n_core))
    (fix,) = atoms.constraints
    assert np.array_equal(np.sort(fix.get_indices()), np.arange(cell.n_core))


def test_paper_density_gives_a():
    """96 atoms at 4 per cube in 17.29^3: a = 17.29 / 24^(1/3)."""
    assert SR_BOX / (SR_N / 4) ** (1 / 3) == pytest.approx(SR_A, abs=0.005)


def test_hcp_core_against_ase_neighbours():
    """Another crystal: the hcp core is every site of ASE's hcp Mg crystal closer than R_fix."""
    from ase.build import bulk

    rfix = 5.0
    cell = S.build_crystal_core_cell(rfix, crystal="hcp", elements=["Mg"], a=3.21, box=16.0, natoms=100, seed=3)
    crystal = bulk("Mg", "hcp", a=3.21).repeat((7, 7, 5))
    mid = crystal.cell.sum(axis=0) / 2
    c = int(np.argmin(np.linalg.norm(crystal.positions - mid, axis=1)))
    d = np.linalg.norm(crystal.positions - crystal.positions[c], axis=1)
    assert cell.n_core == int(np.count_nonzero(d < rfix - 1e-6))
    ref = np.sort(np.round(d[d < rfix - 1e-6], 5))
    got = np.sort(np.round(np.linalg.norm(cell.atoms.positions[: cell.n_core] - 8.0, axis=1), 5))
    assert np.array_equal(ref, got)
    assert mic_min_distance(cell.atoms) >= 1.5


def test_two_element_crystal_composition_and_order():
    cell = S.build_crystal_core_cell(5.0, crystal="zincblende", elements=["Ga", "As"], a=5.65, box=16.0,
                                     natoms=[60, 60], center="As", seed=2)
    symbols = cell.atoms.get_chemical_symbols()
    assert symbols[0] == "As" and symbols.count("Ga") == 60 and symbols.count("As") == 60
    mobile = symbols[cell.n_core :]
    # mobile atoms by type order: Ga first, then As
    n_ga = mobile.count("Ga")
    assert mobile == ["Ga"] * n_ga + ["As"] * (len(mobile) - n_ga)
    # zincblende: the As centre's 4 nearest neighbours are Ga at a*sqrt(3)/4
    r = np.linalg.norm(cell.atoms.positions[1:5] - 8.0, axis=1)
    assert np.allclose(r, 5.65 * math.sqrt(3) / 4) and symbols[1:5] == ["Ga"] * 4


def test_rocksalt_through_the_generic_builder_is_the_sro_cell():
    a = S.build_crystal_core_cell(3.68, crystal="rocksalt", elements=["Sr", "O"], a=5.2, box=13.63,
                                  natoms=[72, 72], seed=4)
    b = S.build_fixed_core_cell(3.68, seed=4)
    assert np.array_equal(a.atoms.positions, b.atoms.positions)
    assert a.parameters() == b.parameters()


def test_parameters_rebuild_the_cell():
    cell = S.build_crystal_core_cell(6.0, crystal="fcc", elements=["Sr"], a=SR_A, box=SR_BOX, natoms=SR_N, seed=9)
    again = S.build_crystal_core_cell(**cell.parameters())
    assert np.array_equal(again.atoms.positions, cell.atoms.positions)
    other = S.build_crystal_core_cell(6.0, crystal="fcc", elements=["Sr"], a=SR_A, box=SR_BOX, natoms=SR_N, seed=10)
    assert np.array_equal(other.atoms.positions[:19], cell.atoms.positions[:19])
    assert not np.allclose(other.atoms.positions[19:], cell.atoms.positions[19:])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crystal": "perovskite"}, "crystal='perovskite' is not one of"),
        ({"elements": ["Sr", "O"]}, "crystal='fcc' is made of 1 element but"),
        ({"natoms": [96, 3]}, "must give one count per element"),
        ({"natoms": 10}, "holds 19 Sr atoms but natoms=10"),
        ({"min_dist": 4.3}, "exceeds the nearest-neighbour distance 4.23557 Å of the fcc core"),
        ({"rfix": 8.0}, "rfix=8.0 Å is too large for box=17.29 Å"),
        ({"center": "O"}, "center='O' must be one of"),
        ({"elements": ["Xx"]}, "is not a chemical element symbol"),
        ({"natoms": 1200}, "exceeds the random-packing limit"),
    ],
)
def test_bad_requests_fail_with_one_sentence(kwargs, message):
    params = {"rfix": 6.0, "crystal": "fcc", "elements": ["Sr"], "a": SR_A, "box": SR_BOX, "natoms": SR_N, **kwargs}
    with pytest.raises(InputError) as info:
        S.build_crystal_core_cell(params.pop("rfix"), **params)
    assert message in str(info.value)


def test_poscar_of_an_fcc_cell(tmp_path):
    import ase.io

    cell = S.build_crystal_core_cell(6.0, crystal="fcc", elements=["Sr"], a=SR_A, box=SR_BOX, natoms=SR_N, seed=1)
    back = ase.io.read(S.write_poscar(cell, tmp_path / "POSCAR"), format="vasp")
    assert np.allclose(back.positions, cell.atoms.positions, atol=1e-8)
    (fix,) = back.constraints
    assert np.array_equal(np.sort(fix.get_indices()), np.arange(19))


# -------------------------------------------------------------------------------------------- CLI


def test_cli_fixed_core_defaults_are_the_paper_sr_cell(tmp_path):
    from click.testing import CliRunner

    from nlmd.cli import main

    stem = tmp_path / "sr"
    result = CliRunner().invoke(main, ["build", "fixed-core", "--rfix", "4.3", "--seed", "2", "-o", str(stem)])
    assert result.exit_code == 0, result.output
    assert "core: 13 atoms (13 Sr)" in result.output
    summary = json.loads((tmp_path / "sr.json").read_text())
    assert summary["kind"] == "fixed-core fcc cell" and summary["n_atoms"] == 96 and summary["n_core"] == 13
    assert summary["parameters"]["a"] == SR_A and summary["parameters"]["box"] == SR_BOX
    # the recorded command rebuilds the same cell
    args = summary["command"].split()[1:]
    out2 = tmp_path / "again"
    args[args.index("-o") + 1] = str(out2)
    assert CliRunner().invoke(main, args).exit_code == 0
    import ase.io

    assert np.allclose(ase.io.read(tmp_path / "sr.extxyz").positions, ase.io.read(tmp_path / "again.extxyz").positions)
    data = (tmp_path / "sr.data").read_text()
    assert "96 atoms" in data and "1 atom types" in data and "1 Sr" in data


def test_cli_fixed_core_error_writes_nothing(tmp_path):
    from click.testing import CliRunner

    from nlmd.cli import main

    result = CliRunner().invoke(main, ["build", "fixed-core", "--natoms", "96,4", "-o", str(tmp_path / "c")])
    assert result.exit_code == 1
    assert result.output.strip().startswith("nlmd: error: natoms=[96, 4] must give one count per element")
    assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
