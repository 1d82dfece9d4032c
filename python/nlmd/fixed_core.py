"""The fixed-core experiment: its record (:class:`FixedCore`) and its rules in a streamed run.

A fixed-core run holds every atom within R_fix of a centre atom as a crystal and records the force on
the centre (design.md). Two things follow from that, and they live here together:

- :class:`FixedCore`, the record of the core (centre id, R_fix, core ids) that a trajectory file carries
  under ``/parameters/fixed_core`` and that ``nlmd import``, ``rescore`` and ``compare`` read;
- :class:`FixedCoreRules`, what ``nlmd run`` does with an input that follows this project's fixed-core
  conventions (groups ``core`` and ``center``, variables ``center_id`` and ``rfix``, as
  lammps_inputs/sro_rfix.in): it reads the core when the final run starts and adds the centre-force
  observable ``f_center`` to every frame. It is an extension of :class:`nlmd.md.sampler.FrameSampler`,
  so the generic frame assembler knows nothing of centres and cores.

Why a top-level module and not one inside ``nlmd.md``: :mod:`nlmd.h5md` stores :class:`FixedCore`, and
the MD package imports :mod:`nlmd.h5md`; a record in the MD package would make the file layer import the
driver that imports it back. This module imports neither: it reads LAMMPS only through the small
accessor the driver hands it (:class:`nlmd.md.inspect.InputState`), and frames only by their fields.
(The cell *builder*, ``structures.FixedCoreCell``, makes such cells; this module describes and observes
them.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FixedCore", "FixedCoreRules", "CORE_GROUP", "CENTER_GROUP", "F_CENTER"]

#: the input's groups and variables that make a fixed-core run (lammps_inputs/sro_rfix.in)
CORE_GROUP, CENTER_GROUP = "core", "center"
CENTER_ID_VARIABLE, RFIX_VARIABLE = "center_id", "rfix"
#: the per-frame observable: |F| of the centre atom (eV/Angstrom)
F_CENTER = "f_center"


@dataclass
class FixedCore:
    """The frozen crystalline core of a fixed-core run.

    ``center_id`` is the id of the centre atom, ``rfix`` the radius (Angstrom) inside which atoms are
    frozen, ``core_ids`` the sorted ids of the frozen atoms (the centre included).
    """

    center_id: int
    rfix: float
    core_ids: np.ndarray

    def __post_init__(self) -> None:
        self.center_id = int(self.center_id)
        self.rfix = float(self.rfix)
        self.core_ids = np.sort(np.asarray(self.core_ids, dtype=np.int64).reshape(-1))

    def summary(self) -> dict:
        """The JSON-ready description used in run/import/rescore summaries."""
        return {"center_id": self.center_id, "rfix": self.rfix, "n_core": int(self.core_ids.size)}


class FixedCoreRules:
    """The fixed-core conventions of an input, as a frame-sampler extension.

    :meth:`from_input` returns None for an input without them. ``core`` is the :class:`FixedCore` on
    rank 0 (None on the other ranks, which never write it); :meth:`observables` gives each frame its
    ``f_center``.
    """

    def __init__(self, core: FixedCore | None) -> None:
        self.core = core

    @classmethod
    def from_input(cls, state: Any) -> FixedCoreRules | None:
        """The rules of the input behind ``state`` (an :class:`~nlmd.md.inspect.InputState`), or None.

        Collective on several ranks (the core's ids are gathered to rank 0).
        """
        if not (state.has("group", CORE_GROUP) and state.has("group", CENTER_GROUP)):
            return None
        center_id, rfix = state.variable(CENTER_ID_VARIABLE), state.variable(RFIX_VARIABLE)
        try:
            center_id, rfix = int(float(center_id)), float(rfix)
        except (TypeError, ValueError):
            return None
        core_ids = state.group_ids(CORE_GROUP)  # None on ranks other than 0
        return cls(FixedCore(center_id=center_id, rfix=rfix, core_ids=core_ids) if core_ids is not None else None)

    def observables(self, frame: Any) -> Mapping[str, float]:
        """``f_center``: |F| of the centre atom in ``frame`` (an :class:`nlmd.h5md.Frame`; nothing when the
        frame lacks the centre or forces)."""
        core, ids, forces = self.core, frame.ids, frame.forces
        if core is None or forces is None:
            return {}
        i = int(np.searchsorted(ids, core.center_id))
        if i < ids.size and ids[i] == core.center_id:
            return {F_CENTER: float(np.linalg.norm(forces[i]))}
        return {}
