"""Taking frames: the fixes LAMMPS samples with, and the frame assembled from them on rank 0.

How a frame is taken (the interval N is ``every``)::

    compute nlmd_pe     all pe/atom
    fix     nlmd_atoms  all ave/atom 1 1 N x y z vx vy vz fx fy fz c_nlmd_pe
    fix     nlmd_thermo all ave/time 1 1 N c_<temperature> c_thermo_pe v_nlmd_lx ... v_nlmd_yz
    fix     nlmd_stream all external pf/callback 1 1000000000

LAMMPS samples, Python collects. ``ave/atom`` and ``ave/time`` with ``1 1 N`` hold one sample of step n
(n a multiple of N) taken at the end of that step -- after the final velocity update and the thermostat
-- so a frame holds exactly what ``dump custom ... x y z vx vy vz fx fy fz c_pe`` and the thermo line
print at step n: positions, velocities, forces and per-atom energies all of step n. They also schedule
the energy computes for those steps (a ``compute pe/atom`` read on any other step is not tallied). The
first step of the run is sampled during the run's setup, like a dump's first frame.

Without energies (``energies=False``, ``nlmd run --no-energies``) the averaging fixes are not used at all:
in this LAMMPS (22 Jul 2025) any ``ave/atom`` or ``ave/time`` fix that samples a step makes LAMMPS tally
energy and virial on that step -- as ``thermo 1`` would -- even when it samples no energy (measured:
callgrind counts of ``Pair::ev_tally``). The frame is then sampled by fixes that schedule nothing::

    fix     nlmd_atoms  all        store/state N x y z vx vy vz fx fy fz
    group   nlmd_probe  id <lowest atom id>
    variable nlmd_lx atom lx  (ly lz xy xz yz likewise: thermo keywords, no compute involved)
    fix     nlmd_box    nlmd_probe store/state N v_nlmd_lx ... v_nlmd_yz

both at the end of step n (after the thermostats, like ``ave/atom``), and such a frame has no per-atom
energies, potential energy or temperature (a temperature compute read outside LAMMPS's averaging fixes
is not re-invoked reliably: it can return the value of an earlier step). The first frame, at the run's
set-up, is read from the atom arrays themselves (``store/state`` holds the values of its definition
until its first end-of-step).

``fix external pf/callback`` is the only way back into Python during a run (:mod:`nlmd.md.loop` owns
it). Its callback runs in ``post_force`` of every step, i.e. *before* that step's velocities are final,
which is why it does not read the atoms itself: in the callback of step n+1 the loop asks the sampler
for the sample of step n (at the setup callback, the sample of the first step), which
:meth:`FrameSampler.collect` gathers to rank 0 with mpi4py. The fix adds no force (its force array stays
zero and ``fix_modify energy no virial no``).

Two parts, so that the order of atoms is testable without LAMMPS: :class:`AtomOrder` puts the rows of a
gathered sample in id order (plain numpy, with the caches that make it cheap); :class:`FrameSampler`
owns the fixes and builds the :class:`~nlmd.h5md.Frame`. Observables that belong to an experiment, not
to every run (the fixed core's ``f_center``), come from *extensions*: objects with
``observables(frame) -> mapping`` (:class:`nlmd.fixed_core.FixedCoreRules`).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from nlmd.errors import SimulationError
from nlmd.h5md import Frame
from nlmd.md.failures import lammps_message
from nlmd.md.inspect import RunSetup
from nlmd.md.stopping import NEVER

if TYPE_CHECKING:  # pragma: no cover
    import lammps

__all__ = ["AtomOrder", "FrameSampler", "SamplerExtension", "virial_stress"]

#: ids of everything the driver adds to the LAMMPS instance
FIX_ATOMS, FIX_THERMO, FIX_STREAM, COMPUTE_PE = "nlmd_atoms", "nlmd_thermo", "nlmd_stream", "nlmd_pe"
#: the virial-only pressure tensor sampled with the global values (the frame's ``stress``)
COMPUTE_VIRIAL = "nlmd_virial"
#: per-atom columns of the ave/atom fix, in order
ATOM_COLUMNS = ("x", "y", "z", "vx", "vy", "vz", "fx", "fy", "fz", f"c_{COMPUTE_PE}")
#: per-atom columns of the store/state fix of a run without energies, in order
STATE_COLUMNS = ATOM_COLUMNS[:9]
#: the box fix and the one-atom group it samples, in a run without energies
FIX_BOX, GROUP_PROBE = "nlmd_box", "nlmd_probe"
#: box thermo keywords sampled with the global values (restricted triclinic: a=(lx,0,0), b=(xy,ly,0), c=(xz,yz,lz))
BOX_KEYWORDS = ("lx", "ly", "lz", "xy", "xz", "yz")


def virial_stress(pressure: Sequence[float]) -> np.ndarray:
    """ASE's stress (Voigt xx yy zz yz xz xy, eV/Angstrom^3, tension positive) from LAMMPS's virial pressure.

    ``pressure`` is ``compute pressure NULL virial``'s vector (pxx pyy pzz pxy pxz pyz, bar, compression
    positive): the potential's part only, as ``ase.Atoms.get_stress()`` and SevenNet's training labels.
    """
    from nlmd.evaluate import BAR_TO_EV_A3

    pxx, pyy, pzz, pxy, pxz, pyz = (float(v) for v in pressure)
    return -BAR_TO_EV_A3 * np.array([pxx, pyy, pzz, pyz, pxz, pxy])


class SamplerExtension(Protocol):
    """Adds observables of its own to each frame (after the generic ones)."""

    def observables(self, frame: Frame) -> Mapping[str, float]: ...


class AtomOrder:
    """The rows of a gathered sample in ascending id order, for a fixed set of atoms.

    ``ids`` are the atoms of the run, ascending. :meth:`rows` maps the ids of a sample (in whatever order
    the ranks hold them) to rows and checks that they are exactly those atoms; :meth:`columns` takes
    columns of the sample in id order. LAMMPS reorders its atoms only when it re-neighbours, so both keep
    what they computed for the last sample's ids and reuse it while the ids stay the same (an argsort per
    frame would cost more at 10^4 atoms).
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self._row_of_id = np.full(int(ids[-1]) + 1, -1, dtype=np.int64)  # -1: no such atom
        self._row_of_id[ids] = np.arange(ids.size)
        self._seen_ids: np.ndarray | None = None
        self._seen_rows: np.ndarray | None = None
        self._seen_take: dict[tuple[int, int, int], np.ndarray] = {}  # (ncol, first, last column) -> flat indices

    def rows(self, local_ids: np.ndarray, step: int) -> np.ndarray:
        """The row (by id) of each atom of a sample; raises SimulationError unless they are the run's atoms."""
        seen = self._seen_ids
        if seen is not None and seen.shape == local_ids.shape and np.array_equal(seen, local_ids):
            return self._seen_rows
        self._seen_take = {}
        local_ids = np.asarray(local_ids, dtype=np.int64)
        row_of_id = self._row_of_id
        rows = row_of_id[np.clip(local_ids, 0, row_of_id.size - 1)]
        if (local_ids.size != self.ids.size or np.any(rows < 0) or np.any(local_ids >= row_of_id.size)
                or np.any(np.bincount(rows, minlength=rows.size) != 1)):
            raise SimulationError(
                f"nlmd run: step {step}: the atoms are not those the run started with ({local_ids.size} "
                f"atoms now, {self.ids.size} then: atoms lost or created; a trajectory keeps a fixed set of atoms)"
            )
        self._seen_ids, self._seen_rows = local_ids.copy(), rows
        return rows

    def columns(self, flat: np.ndarray, ncol: int, first: int, last: int) -> np.ndarray:
        """Columns ``first:last`` of the sample last given to :meth:`rows` (``flat``: its ``ncol`` columns
        raveled), rows by id; read-only.

        One ``take`` through flat indices cached with the rows: a contiguous (N, last-first) array (or (N,)
        for one column) in one pass, which numpy does several times faster than indexing rows of a 2-d
        array, and which the writer then copies as one block.
        """
        key = (ncol, first, last)
        index = self._seen_take.get(key)
        if index is None:
            local_of_row = np.empty_like(self._seen_rows)
            local_of_row[self._seen_rows] = np.arange(self._seen_rows.size)
            index = (local_of_row[:, None] * ncol + np.arange(first, last)).reshape(-1)
            self._seen_take[key] = index
        out = np.take(flat, index)
        out = out.reshape(-1, last - first) if last - first > 1 else out
        out.flags.writeable = False  # the frame's, possibly kept by a writer thread
        return out


class FrameSampler:
    """The sampling fixes of one final run and the frames assembled from them.

    :meth:`add` before the run (with the callback :mod:`nlmd.md.loop` gives LAMMPS), :meth:`remove`
    after a run that completed; :meth:`collect` (collective) in the callbacks. ``setup`` is the run's
    :class:`~nlmd.md.inspect.RunSetup`; ``extensions`` add observables to each frame.
    """

    def __init__(self, lmp: lammps.lammps, comm, setup: RunSetup, *, every: int, energies: bool,
                 extensions: Sequence[SamplerExtension] = ()) -> None:
        self.lmp = lmp
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.setup = setup
        self.every = every
        self.energies = energies
        self.extensions = list(extensions)
        self.order = AtomOrder(setup.ids) if self.rank == 0 else None
        self._probe_local: int | None = None  # the probe atom's local index at the last frame (this rank)
        self._views: dict[tuple[str, str], tuple[int, np.ndarray]] = {}  # see _lammps_array

    # --- the fixes ---------------------------------------------------------------------------------
    def _probe_keywords(self) -> tuple[str, ...]:
        """The box keywords sampled on the probe atom (a run without energies)."""
        return BOX_KEYWORDS if self.setup.triclinic else BOX_KEYWORDS[:3]

    def add(self, callback: Callable) -> None:
        """Add the sampling fixes and ``fix external`` with ``callback`` (called at every step, every rank)."""
        n = self.every
        box_vars = " ".join(f"v_nlmd_{k}" for k in BOX_KEYWORDS)
        if self.energies:
            lines = [f"variable nlmd_{k} equal {k}" for k in BOX_KEYWORDS]
            lines += [
                f"compute {COMPUTE_PE} all pe/atom",
                f"compute {COMPUTE_VIRIAL} all pressure NULL virial",
                f"fix {FIX_ATOMS} all ave/atom 1 1 {n} {' '.join(ATOM_COLUMNS)}",
                f"fix {FIX_THERMO} all ave/time 1 1 {n} c_{self.setup.temperature_compute} c_thermo_pe {box_vars} "
                f"c_{COMPUTE_VIRIAL}[*]",
            ]
        else:  # nothing that schedules the energy computes (module docstring)
            # atom-style variables loop over every atom, even for the one-atom group: only the box's
            # lengths unless it is triclinic (3 of them cost 0.5 % of a step of 11,000 Lennard-Jones atoms)
            keys = self._probe_keywords()
            box_vars = " ".join(f"v_nlmd_{k}" for k in keys)
            lines = [f"variable nlmd_{k} atom {k}" for k in keys]
            lines += [
                f"group {GROUP_PROBE} id {self.setup.probe_id}",
                f"fix {FIX_ATOMS} all store/state {n} {' '.join(STATE_COLUMNS)}",
                f"fix {FIX_BOX} {GROUP_PROBE} store/state {n} {box_vars}",
            ]
        lines += [
            f"fix {FIX_STREAM} all external pf/callback 1 {NEVER}",
            f"fix_modify {FIX_STREAM} energy no virial no",
        ]
        from nlmd.runtime import commands

        commands(self.lmp, lines, where="nlmd run: adding the sampling fixes")
        self.lmp.set_fix_external_callback(FIX_STREAM, callback)

    def remove(self) -> None:
        """Remove everything :meth:`add` added (before the commands after the final run)."""
        if self.energies:
            lines = [f"unfix {FIX_STREAM}", f"unfix {FIX_THERMO}", f"unfix {FIX_ATOMS}", f"uncompute {COMPUTE_PE}",
                     f"uncompute {COMPUTE_VIRIAL}"]
        else:
            lines = [f"unfix {FIX_STREAM}", f"unfix {FIX_BOX}", f"unfix {FIX_ATOMS}", f"group {GROUP_PROBE} delete"]
        lines += [f"variable nlmd_{k} delete" for k in (BOX_KEYWORDS if self.energies else self._probe_keywords())]
        try:
            self.lmp.commands_string("\n".join(lines))
        except Exception as exc:  # noqa: BLE001 - the tail would then fail with LAMMPS's own message
            raise SimulationError(f"nlmd run: could not remove its sampling fixes ({lammps_message(exc)})") from exc

    # --- one sample --------------------------------------------------------------------------------
    def _lammps_array(self, kind: str, name: str, nlocal: int) -> np.ndarray:
        """A numpy view of the first ``nlocal`` rows of a LAMMPS per-atom array ("atom" property or "fix" array).

        The view is kept while LAMMPS keeps the array where it was and as long (the raw pointer, a few us
        to get, is compared at every call; an array grown in place keeps its address but not its length),
        since the lammps module's numpy wrapper costs ~50 us per call in the middle of an MD step.
        """
        from lammps import LMP_STYLE_ATOM, LMP_TYPE_ARRAY

        lmp = self.lmp
        if kind == "atom":
            raw = lmp.extract_atom(name)
        else:
            raw = lmp.extract_fix(name, LMP_STYLE_ATOM, LMP_TYPE_ARRAY)
        if not raw:
            raise SimulationError(f"nlmd run: LAMMPS has no per-atom {kind} {name!r}")
        two_d = isinstance(raw[0], ctypes._Pointer)  # double** (rows) or a flat vector
        address = ctypes.cast(raw[0] if two_d else raw, ctypes.c_void_p).value
        cached = self._views.get((kind, name))
        if cached is not None and cached[0] == address and cached[1].shape[0] >= nlocal:
            return cached[1][:nlocal]
        view = lmp.numpy.extract_atom(name) if kind == "atom" else lmp.numpy.extract_fix(
            name, LMP_STYLE_ATOM, LMP_TYPE_ARRAY)
        if view.shape[0] < nlocal:
            raise SimulationError(f"nlmd run: LAMMPS's per-atom {kind} {name!r} has {view.shape[0]} rows, "
                                  f"fewer than its {nlocal} atoms")
        self._views[(kind, name)] = (address, view)
        return view[:nlocal]

    def _local_sample(self, at_setup: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """This rank's atoms of the sample the fixes hold: (ids, values, box).

        ``at_setup``: the sample of the run's first step, taken in its setup. ``values`` has the columns
        of ATOM_COLUMNS (STATE_COLUMNS without energies). With one rank the arrays are views of LAMMPS's
        memory, valid until LAMMPS continues (the caller copies them once, ordered by id); with several
        they are copies (they are sent to rank 0). ``box`` is the row (lx, ly, lz, xy, xz, yz) of the probe
        atom in a run without energies, on the rank that has it (None elsewhere, and with energies, where
        the box comes from the thermo fix).
        """
        lmp = self.lmp
        ncol = len(ATOM_COLUMNS) if self.energies else len(STATE_COLUMNS)
        nlocal = int(lmp.extract_setting("nlocal"))
        if nlocal == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, ncol)), None
        ids = self._lammps_array("atom", "id", nlocal)
        box = None
        if self.energies:
            values = self._lammps_array("fix", FIX_ATOMS, nlocal)
        else:
            if at_setup:  # store/state still holds the values of its definition
                x, v, f = (lmp.numpy.extract_atom(name)[:nlocal] for name in ("x", "v", "f"))
                values = np.concatenate([x, v, f], axis=1)
            else:
                values = self._lammps_array("fix", FIX_ATOMS, nlocal)
            probe_id = self.setup.probe_id
            if self._probe_local is None or not (self._probe_local < nlocal and ids[self._probe_local] == probe_id):
                where = np.flatnonzero(ids == probe_id)
                self._probe_local = int(where[0]) if where.size else None
            if self._probe_local is not None:
                if at_setup:
                    lo, hi, xy, yz, xz, _, _ = lmp.extract_box()  # tilts in LAMMPS's order: xy, yz, xz
                    box = np.array([hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2], xy, xz, yz], dtype=np.float64)
                else:
                    box = np.zeros(6)
                    row = self._lammps_array("fix", FIX_BOX, nlocal)[self._probe_local]
                    box[: len(self._probe_keywords())] = row  # tilts stay 0 in an orthogonal box
        if self.size > 1:
            return np.array(ids, dtype=np.int64), np.array(values, dtype=np.float64), box
        return ids, values, box

    def collect(self, sample_step: int, *, at_setup: bool) -> Frame | None:
        """The frame of ``sample_step`` from the sample the fixes hold, on rank 0 (None elsewhere).

        Collective on several ranks: every rank takes part in the gather even when it could not read its
        atoms (then rank 0 raises SimulationError, and the other ranks raise their own error).
        """
        failure: BaseException | None = None
        try:
            local = self._local_sample(at_setup)
        except Exception as exc:  # noqa: BLE001 - still take part in the gather below
            local, failure = None, exc
        parts = self.comm.gather(local, root=0) if self.size > 1 else [local]
        if failure is not None:
            raise failure
        if self.rank != 0:
            return None
        if any(p is None for p in parts):
            raise SimulationError(f"nlmd run: step {sample_step}: a rank could not read its atoms")
        return self._assemble(sample_step, parts)

    def _assemble(self, sample_step: int, parts: list) -> Frame:
        """Rank 0: the frame from every rank's (ids, values, box)."""
        local_ids = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        local_values = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        order = self.order
        order.rows(local_ids, sample_step)
        # the one copy of the frame: from LAMMPS's arrays (one rank) straight into per-series arrays by id
        ncol = local_values.shape[1]
        flat = np.ascontiguousarray(local_values, dtype=np.float64).reshape(-1)
        positions, velocities, forces = (order.columns(flat, ncol, c, c + 3) for c in (0, 3, 6))
        energies = order.columns(flat, ncol, 9, 10) if self.energies else None
        observables: dict[str, float] = {}
        if self.energies:
            from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

            g = [float(self.lmp.extract_fix(FIX_THERMO, LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR, k)) for k in range(14)]
            observables["potential_energy"], observables["temperature"] = g[1], g[0]
            lx, ly, lz, xy, xz, yz = g[2:8]
            observables["stress"] = virial_stress(g[8:14])
        else:
            boxes = [p[2] for p in parts if p[2] is not None]
            if not boxes:
                raise SimulationError(
                    f"nlmd run: step {sample_step}: no rank has atom {self.setup.probe_id} (the box probe)")
            lx, ly, lz, xy, xz, yz = (float(v) for v in boxes[0])
        frame = Frame(
            step=sample_step,
            time=self.setup.time_of(sample_step),
            box=np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]]),
            ids=order.ids,
            species=self.setup.species,
            positions=positions,
            velocities=velocities,
            forces=forces,
            energies=energies,
            observables=observables,
        )
        for extension in self.extensions:
            observables.update(extension.observables(frame))
        return frame
