"""Au₂ on MgO(001) / Al-doped MgO (nlmd.au2mgo, `nlmd au2mgo`): the geometry, and what a model that cannot
see the dopant must give: exactly the same E_wetting − E_non-wetting on both supports."""

from __future__ import annotations

import json
import math
import subprocess
import warnings

import numpy as np
import pytest

from conftest import REPO, lmp_env, which

from nlmd import au2mgo as M
from nlmd.errors import InputError

#: cutoff of the tiny 1-layer model. Its energy reach is r_c and its force reach 2·r_c = 8 Å; the Al sits
#: ~12.3 Å from the nearer Au (10.5 Å below the surface; checked below), so neither the energies near the
#: cluster nor the forces on it depend on the Al, and the relaxations are the same on both supports.
RC = 4.0


# ------------------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("doped", [False, True])
def test_support_geometry(doped):
    a = 4.21
    sup = M.build_support(doped, a=a, lateral=2, layers=7, dopant_layer=5, vacuum=15.0)
    atoms = sup.atoms
    z = atoms.positions[:, 2]
    layers = np.unique(np.round(z, 8))
    # 7 layers a/2 apart, 16 atoms each, the cell 2a x 2a with 15 Å above the top layer
    assert len(layers) == 7 and np.allclose(np.diff(layers), a / 2)
    assert all(np.count_nonzero(np.isclose(z, zl)) == 16 for zl in layers)
    assert np.allclose(atoms.cell.lengths(), [2 * a, 2 * a, 6 * a / 2 + 15.0])
    # rocksalt: every atom's nearest neighbours (6 in the bulk) are of the other element at a/2
    sym = np.array(atoms.get_chemical_symbols())
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    mid = np.flatnonzero(np.isclose(z, layers[3]))
    for i in mid:
        nn = np.flatnonzero(np.isclose(d[i], a / 2))
        assert len(nn) == 6
        cation = sym[i] in ("Mg", "Al")
        assert all((sym[j] == "O") == cation for j in nn)
    # the site is a top-layer O; the dopant site five layers (10.525 Å) below it, directly under it
    assert sym[sup.site_index] == "O" and np.isclose(z[sup.site_index], layers[-1])
    assert np.isclose(z[sup.site_index] - z[sup.dopant_index], 5 * a / 2)
    assert np.allclose(atoms.positions[sup.dopant_index, :2], atoms.positions[sup.site_index, :2])
    assert sym[sup.dopant_index] == ("Al" if doped else "Mg")
    assert np.count_nonzero(sym == "Al") == int(doped)
    assert np.count_nonzero(sym == "O") == 56 and np.count_nonzero(sym == "Mg") == 56 - int(doped)
    # the support is fixed
    (fix,) = atoms.constraints
    assert sorted(fix.get_indices()) == list(range(len(atoms)))


def test_supports_differ_in_the_dopant_only():
    u, d = M.build_support(False), M.build_support(True)
    assert np.array_equal(u.atoms.positions, d.atoms.positions)
    diff = np.flatnonzero(np.array(u.atoms.get_chemical_symbols()) != np.array(d.atoms.get_chemical_symbols()))
    assert diff.tolist() == [d.dopant_index]


def test_clusters():
    sup = M.build_support(True)
    nw = M.with_cluster(sup, M.cluster_positions(sup, "non-wetting", bond=2.5, height=2.3))
    w = M.with_cluster(sup, M.cluster_positions(sup, "wetting", bond=2.5, height=2.3))
    n = len(sup.atoms)
    for atoms in (nw, w):
        assert atoms.get_chemical_symbols()[n:] == ["Au", "Au"] and len(atoms) == n + 2
        (fix,) = atoms.constraints
        assert sorted(fix.get_indices()) == list(range(n))  # the support fixed, Au free
        assert atoms.get_distance(n, n + 1) == pytest.approx(2.5)
    # upright over the site O; flat 2.3 Å above the surface, over the site O and its [110] O neighbour
    assert np.allclose(nw.positions[n:, :2], sup.site[:2]) and nw.positions[n, 2] - sup.surface_z == pytest.approx(2.3)
    assert np.allclose(w.positions[n:, 2], sup.surface_z + 2.3)
    o_top = [i for i in range(n) if sup.atoms[i].symbol == "O" and np.isclose(sup.atoms.positions[i, 2], sup.surface_z)]
    for k in (n, n + 1):
        dxy = [np.linalg.norm(w.positions[k, :2] - sup.atoms.positions[i, :2]) for i in o_top]
        assert min(dxy) == pytest.approx((4.21 / math.sqrt(2) - 2.5) / 2, abs=1e-9)  # near the top of an O
    with pytest.raises(InputError, match="config='lying' must be one of"):
        M.cluster_positions(sup, "lying")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"dopant_layer": 7}, "dopant_layer=7 is deeper than the slab"), ({"a": -1}, "a=-1 must be"),
     ({"layers": 1}, "layers=1 must be an integer >= 2")],
)
def test_bad_support(kwargs, message):
    with pytest.raises(InputError, match=message):
        M.build_support(True, **kwargs)


# ------------------------------------------------------------------------------------------ the model


@pytest.fixture(scope="module")
def one_layer_potential(tmp_path_factory):
    """A random 1-layer SevenNet for Mg, O, Al, Au with cutoff RC, deployed (TorchScript, serial + parallel)."""
    from nlmd.deploy import deploy
    from nlmd.testing import make_tiny_checkpoint

    d = tmp_path_factory.mktemp("au2mgo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt = make_tiny_checkpoint(d / "one.pth", ("Mg", "O", "Al", "Au"), cutoff=RC, num_layers=1, seed=1)
        return deploy(ckpt, d / "one", parallel=True, aot=False, verify=False, echo=lambda s: None)


RUN = {"steps": 6, "fmax": 0.01, "scan": (2.0, 3.0, 3)}


@pytest.fixture(scope="module")
def far(one_layer_potential):
    return M.run_au2mgo(one_layer_potential, **RUN)


def test_one_layer_model_cannot_see_the_dopant(far):
    """Energy reach r_c, force reach 2 r_c < the Al–Au distance: the same numbers, to the last bit."""
    assert far["reach"] == {"kind": "sevenn", "cutoff": RC, "layers": 1, "energy_reach": RC, "force_reach": 2 * RC}
    assert far["dopant_au_distance"] > 2 * RC + 3  # the relaxation moved Au by less than 3 Å
    assert far["sees_dopant"] == {"energy": False, "force": False}
    u, d = far["supports"]["MgO"], far["supports"]["Al-MgO"]
    for config in M.CONFIGS:  # the relaxations are identical
        assert u[config]["au_positions"] == d[config]["au_positions"]
        assert u[config]["bfgs_steps"] == d[config]["bfgs_steps"]
    assert u["dE_atoms"] == d["dE_atoms"]
    assert far["doping_shift"] == 0.0
    assert u["scan"]["sum_f_au"] == d["scan"]["sum_f_au"]
    # yet the supports' energies differ: the model does see the Al, only not from the cluster
    assert u["wetting"]["energy"] != d["wetting"]["energy"]
    # and the relaxation did something (the random model's forces are not zero)
    start = M.cluster_positions(M.build_support(False), "wetting")
    assert not np.allclose(np.array(u["wetting"]["au_positions"]), start, atol=1e-3)


def test_dopant_within_reach_changes_the_answer(one_layer_potential):
    """The control: Al one layer below the site O (4.4 Å from the lower Au, within r_c of that O)."""
    near = M.run_au2mgo(one_layer_potential, dopant_layer=1, **RUN)
    assert near["sees_dopant"]["energy"] and near["sees_dopant"]["force"]
    assert abs(near["doping_shift"]) > 1e-4
    assert near["supports"]["MgO"]["dE_atoms"] != near["supports"]["Al-MgO"]["dE_atoms"]
    # (the scan's forces on Au come out the same here: the Al is 4.1-5.1 Å from the lower Au, beyond r_c,
    # and this 1-layer model's Au forces did not change with it; the energy of the O between them did)


# ------------------------------------------------------------------------------------------ the command


def test_command_writes_json_figures_poscars(one_layer_potential, tmp_path, far):
    from click.testing import CliRunner

    from nlmd.cli import main

    out = tmp_path / "run"
    args = ["au2mgo", "--potential", str(one_layer_potential), "-o", str(out), "--steps", "6", "--fmax", "0.01",
            "--scan", "2.0", "3.0", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    assert data["supports"]["MgO"]["dE_atoms"] == far["supports"]["MgO"]["dE_atoms"]
    assert data["command"].startswith("nlmd au2mgo --potential")
    assert (out / "fig6b.png").stat().st_size > 0 and (out / "fig6c.png").stat().st_size > 0
    import ase.io

    for sup in M.SUPPORTS:
        for config in M.CONFIGS:
            p = ase.io.read(out / "structures" / f"{sup}_{config}.POSCAR", format="vasp")
            (fix,) = p.constraints
            assert len(fix.get_indices()) == len(p) - 2  # support F F F, Au T T T
            assert p.get_chemical_symbols()[-2:] == ["Au", "Au"]
            data = (out / "structures" / f"{sup}_{config}.data").read_text()
            assert "4 atom types" in data and f"{len(p)} atoms" in data
    # a second run refuses to overwrite, and says why in one line
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "exists" in again.output and len(again.output.strip().splitlines()) == 1


def test_command_refuses_a_potential_without_gold(tmp_path):
    from click.testing import CliRunner

    from nlmd.cli import main

    result = CliRunner().invoke(main, ["au2mgo", "--potential", str(REPO / "potentials" / "sro-rigid-ion"),
                                       "-o", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "does not know Mg, Al, Au" in result.output
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())


@pytest.mark.mpi
def test_two_ranks_give_the_one_rank_numbers(one_layer_potential, tmp_path, far):
    """mpirun -np 2 nlmd au2mgo (e3gnn/parallel) against the in-process 1-rank run (e3gnn)."""
    out = tmp_path / "np2"
    cmd = [which("mpirun"), "-np", "2", which("nlmd"), "au2mgo", "--potential", str(one_layer_potential),
           "-o", str(out), "--steps", "6", "--fmax", "0.01", "--scan", "2.0", "3.0", "3"]
    proc = subprocess.run(cmd, cwd=REPO, env=lmp_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((out / "result.json").read_text())
    assert data["ranks"] == 2
    for sup in M.SUPPORTS:
        assert data["supports"][sup]["dE_atoms"] == pytest.approx(far["supports"][sup]["dE_atoms"], abs=1e-5)
        assert np.allclose(data["supports"][sup]["scan"]["sum_fz_au"], far["supports"][sup]["scan"]["sum_fz_au"],
                           atol=1e-5)
