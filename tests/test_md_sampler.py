"""The frame sampler's pieces that need no LAMMPS: the id order of a gathered sample (nlmd.md.sampler.AtomOrder)
and the fixed-core extension's centre force (nlmd.fixed_core.FixedCoreRules)."""

from __future__ import annotations

import numpy as np
import pytest

from nlmd.errors import SimulationError
from nlmd.fixed_core import FixedCore, FixedCoreRules
from nlmd.h5md import Frame
from nlmd.md.sampler import AtomOrder


def sample(local_ids: np.ndarray, ncol: int = 10, seed: int = 0) -> np.ndarray:
    """Per-atom rows whose every value encodes its atom id and column (id * 100 + column + noise)."""
    rng = np.random.default_rng(seed)
    return local_ids[:, None] * 100.0 + np.arange(ncol)[None, :] + rng.uniform(0, 0.5, (local_ids.size, ncol))


def by_id(local_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The expected answer, computed the slow obvious way: rows sorted by id."""
    return values[np.argsort(local_ids, kind="stable")]


@pytest.mark.parametrize("ncol, first, last", [(10, 0, 3), (10, 3, 6), (10, 9, 10), (9, 6, 9)])
def test_columns_are_the_rows_in_id_order(ncol, first, last):
    ids = np.array([2, 3, 7, 11, 12, 40])
    order = AtomOrder(ids)
    rng = np.random.default_rng(1)
    for _ in range(3):  # several reorders, as LAMMPS's re-neighbouring does
        local = rng.permutation(ids)
        values = sample(local, ncol)
        order.rows(local, step=5)
        got = order.columns(values.reshape(-1), ncol, first, last)
        expected = by_id(local, values)[:, first:last]
        assert np.array_equal(got, expected if last - first > 1 else expected[:, 0])
        assert not got.flags.writeable


def test_same_ids_reuse_the_rows_and_new_ids_recompute_them():
    ids = np.arange(1, 6)
    order = AtomOrder(ids)
    local = np.array([5, 1, 4, 2, 3])
    rows = order.rows(local, step=0)
    assert order.rows(local.copy(), step=1) is rows  # same order: nothing recomputed
    swapped = np.array([1, 5, 4, 2, 3])
    values = sample(swapped, 3)
    order.rows(swapped, step=2)
    assert np.array_equal(order.columns(values.reshape(-1), 3, 0, 3), by_id(swapped, values))


@pytest.mark.parametrize(
    "local",
    [np.array([1, 2, 3]), np.array([1, 2, 3, 4, 4]), np.array([1, 2, 3, 4, 6]), np.array([1, 2, 3, 4, 99]),
     np.array([0, 1, 2, 3, 4])],
    ids=["lost", "duplicated", "unknown id", "beyond the last id", "id 0"],
)
def test_a_sample_of_other_atoms_is_refused(local):
    order = AtomOrder(np.arange(1, 6))
    with pytest.raises(SimulationError, match="step 7: the atoms are not those the run started with"):
        order.rows(local, step=7)


def frame(ids: np.ndarray, forces: np.ndarray | None) -> Frame:
    n = ids.size
    return Frame(step=0, time=0.0, box=np.eye(3), ids=ids, species=np.full(n, 38), positions=np.zeros((n, 3)),
                 forces=forces)


def test_fixed_core_rules_give_the_centre_force():
    ids = np.array([1, 4, 9, 16])
    forces = np.array([[0.0, 0.0, 1.0], [3.0, 4.0, 0.0], [1.0, 2.0, 2.0], [9.0, 9.0, 9.0]])
    rules = FixedCoreRules(FixedCore(center_id=9, rfix=3.68, core_ids=[9, 1]))
    assert rules.observables(frame(ids, forces)) == {"f_center": 3.0}
    assert FixedCoreRules(FixedCore(center_id=4, rfix=3.68, core_ids=[4])).observables(frame(ids, forces)) == {
        "f_center": 5.0}
    assert FixedCoreRules(FixedCore(center_id=5, rfix=3.68, core_ids=[5])).observables(frame(ids, forces)) == {}
    assert rules.observables(frame(ids, None)) == {}
    assert FixedCoreRules(None).observables(frame(ids, forces)) == {}  # ranks other than 0


class FakeInput:
    """What FixedCoreRules.from_input reads, without LAMMPS."""

    def __init__(self, groups, variables, core_ids):
        self.groups, self.variables, self.core_ids = groups, variables, core_ids

    def has(self, kind, name):
        return kind == "group" and name in self.groups

    def variable(self, name):
        return self.variables.get(name)

    def group_ids(self, group):
        return self.core_ids


def test_fixed_core_rules_read_the_input_conventions():
    rules = FixedCoreRules.from_input(FakeInput({"core", "center"}, {"center_id": "1.0", "rfix": 3.68},
                                                np.array([3, 1, 2])))
    assert rules.core.center_id == 1 and rules.core.rfix == 3.68 and list(rules.core.core_ids) == [1, 2, 3]
    assert FixedCoreRules.from_input(FakeInput({"core"}, {"center_id": 1, "rfix": 3.68}, None)) is None
    assert FixedCoreRules.from_input(FakeInput({"core", "center"}, {"rfix": 3.68}, None)) is None
    assert FixedCoreRules.from_input(FakeInput({"core", "center"}, {"center_id": 1, "rfix": 2.0}, None)).core is None
