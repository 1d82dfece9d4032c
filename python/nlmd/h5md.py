"""The trajectory file: the one writer and the one reader of nlmd's H5MD 1.1 layout.

Every trajectory nlmd writes or reads (MD from ``nlmd run``, DFT from ``nlmd import``, forces from
``nlmd rescore``) goes through this module; the layout is specified in ``docs/h5md.md``.

Writing::

    with TrajectoryWriter("traj.h5", parameters={"source": "lammps"}, fixed_core=core) as w:
        for frame in frames:
            w.write(frame)

Reading::

    with TrajectoryReader("traj.h5") as r:
        for start, block in r.iter_blocks(("position", "force")):
            ...

Crash safety: the writer buffers frames and writes them in blocks, each followed by ``File.flush()``.
Within a block every value dataset and ``time`` are written and flushed first, and the shared ``step``
dataset is extended last and flushed again, so a file killed at any moment (SIGKILL) opens with every
flushed frame intact; the reader takes the shortest consistent length over all datasets and drops
trailing frames whose step still holds the fill value, so it never returns a torn frame.
"""

from __future__ import annotations

import getpass
import json
import os
import time as _time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nlmd import __version__
from nlmd.errors import DiskFullError, InputError
from nlmd.fixed_core import FixedCore  # the record this file stores; its home is the fixed-core module

__all__ = [
    "FixedCore",
    "Frame",
    "TrajectoryWriter",
    "TrajectoryReader",
    "open_mdanalysis",
    "to_atoms",
    "SERIES",
    "OBSERVABLE_UNITS",
]

#: Name of the one particles group.
GROUP = "trajectory"
#: Fill value of the shared ``step`` dataset: a trailing step with this value is a torn frame.
STEP_FILL = np.iinfo(np.int64).min
#: Bytes per block in :meth:`TrajectoryReader.iter_blocks` when no block size is given.
BLOCK_BYTES = 32 * 1024 * 1024
#: HDF5 metadata cache per open reader: a sequential pass over per-frame chunks needs only the current
#: path through each chunk index, and HDF5's adaptive cache would otherwise keep every node it touched.
READER_METADATA_CACHE_BYTES = 1 << 18
#: HDF5 chunk cache (rdcc_nbytes) per dataset of an open reader. nlmd's per-atom series have one-frame
#: chunks that a pass reads once each, so a cache only costs memory and copies (compare's bench: peak RSS
#: 123 -> 65 MB, CPU -25 %); uncompressed multi-frame chunks are read straight into the caller's array.
READER_CHUNK_CACHE_BYTES = 0
#: Chunk cache of a *compressed* dataset with multi-frame chunks (other writers' files): without one,
#: every read of a part of such a chunk decompresses the whole chunk again (10-20x slower).
_FILTERED_CHUNK_CACHE_BYTES = 1 << 20
#: Rows per chunk of the small per-frame datasets (step, time, box, observables).
_SMALL_CHUNK_ROWS = 256
#: Free bytes the writer keeps on the file system beyond what the next block of frames needs: HDF5's
#: metadata (chunk indexes, the superblock) and the close. An HDF5 write that fails for lack of space
#: leaves the file unreadable or crashes the process, so the writer checks before each block instead.
DISK_RESERVE_BYTES = 128 * 1024


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes an unprivileged user may still write on the file system of ``path`` (None: unknown)."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return int(st.f_bavail) * int(st.f_frsize)


def disk_full_instead(exc: DiskFullError, output: str | os.PathLike) -> DiskFullError:
    """``exc``, raised while writing a temporary file, said of ``output`` (which was left as it was)."""
    free = getattr(exc, "free", None)
    room = f" ({free / 1e6:.2f} MB free)" if free is not None else ""
    return DiskFullError(
        f"disk full writing {output}: no room for frame {getattr(exc, 'frames', 0) + 1}{room}; nothing was "
        f"written ({output} is as it was)"
    )


def _no_space(exc: BaseException) -> bool:
    """Whether an h5py/OS error is a full file system (ENOSPC, or EDQUOT: over quota)."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "errno = 28" in text or "No space left on device" in text or "Disk quota exceeded" in text


@dataclass(frozen=True)
class _Series:
    """How one particles element is stored: its Frame attribute, per-frame shape, dtype and unit."""

    attr: str
    path: str  # element path under /particles/trajectory
    per_atom: bool
    tail: tuple[int, ...]  # per-frame shape after the atom axis (per-atom) or the full shape (box)
    dtype: type
    unit: str | None
    required: bool


#: The particles elements nlmd knows, keyed by the series name used in the reader's API.
SERIES: dict[str, _Series] = {
    "position": _Series("positions", "position", True, (3,), np.float64, "Angstrom", True),
    "velocity": _Series("velocities", "velocity", True, (3,), np.float64, "Angstrom ps-1", False),
    "force": _Series("forces", "force", True, (3,), np.float64, "eV Angstrom-1", False),
    "species": _Series("species", "species", True, (), np.int32, None, True),
    "energies": _Series("energies", "energies", True, (), np.float64, "eV", False),
    "id": _Series("ids", "id", True, (), np.int64, None, True),
    "box": _Series("box", "box/edges", False, (3, 3), np.float64, "Angstrom", True),
}

#: Units of the observables nlmd knows (LAMMPS metal units); others may be given to the writer.
OBSERVABLE_UNITS: dict[str, str] = {
    "potential_energy": "eV",
    "kinetic_energy": "eV",
    "total_energy": "eV",
    "temperature": "K",
    "pressure": "bar",
    "volume": "Angstrom3",
    "f_center": "eV Angstrom-1",
    "stress": "eV Angstrom-3",  # Voigt xx yy zz yz xz xy, ASE's sign (tension positive), potential part only
}

_BOUNDARIES = ("periodic", "none")


@dataclass
class Frame:
    """One frame in metal units; rows of every per-atom array are ordered by ascending id."""

    step: int
    time: float  # ps
    box: np.ndarray  # (3,3) rows are cell vectors, Angstrom
    ids: np.ndarray  # (N,) int64 ascending
    species: np.ndarray  # (N,) int32 atomic numbers
    positions: np.ndarray  # (N,3) Angstrom
    forces: np.ndarray | None = None  # (N,3) eV/Angstrom
    velocities: np.ndarray | None = None  # (N,3) Angstrom/ps
    energies: np.ndarray | None = None  # (N,) eV, per-atom potential energy
    observables: dict[str, float | np.ndarray] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# attributes
# --------------------------------------------------------------------------------------------------


def _attr_value(path: Path, key: str, value: Any) -> Any:
    """Check that ``value`` can be an HDF5 attribute of /parameters and return it in storable form."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.dtype.kind in "iufb":
            return arr
        if arr.dtype.kind == "U" or (arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.flat)):
            return np.array([str(v) for v in arr.flat], dtype=h5py.string_dtype()).reshape(arr.shape)
    raise InputError(
        f"{path}: parameter {key!r} has type {type(value).__name__}; parameters must be str, int, float "
        "or a list of them (store structured values as JSON text)"
    )


def _decode_attr(value: Any) -> Any:
    """Turn an h5py attribute value into plain Python (str for strings, int/float for scalars)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OS":
            return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value.tolist()]
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------------


def _without_chunk_cache(group: h5py.Group, ds: h5py.Dataset) -> h5py.Dataset:
    """``group["value"]`` opened again without a chunk cache (for the writer's per-atom series).

    Their chunks are whole frames and are always written whole: without a cache HDF5 writes them
    straight to the file, instead of copying them into the cache and writing them out at the next
    flush (measured at 11,000 atoms: 0.25 ms less per frame). The creation property ``rdcc_nbytes``
    of h5py's ``create_dataset`` does not reach HDF5 2.0's open dataset, hence the explicit open.
    """
    ds.id.close()
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_chunk_cache(0, 0, 0.75)
    return h5py.Dataset(h5py.h5d.open(group.id, b"value", dapl=dapl))


class TrajectoryWriter:
    """Stream frames to an H5MD trajectory file (see ``docs/h5md.md``).

    The file is created (truncated) at ``path`` when the writer is constructed. The first frame fixes
    the number of atoms, which optional series (force, velocity, energies) exist and the observable
    names and shapes; every later frame must match. Frames are buffered and written in blocks, with an
    HDF5 flush after each, when ``flush_every`` frames are waiting or ``flush_seconds`` have passed
    since the last flush (checked at each :meth:`write`), and at :meth:`close`.

    ``parameters`` become attributes of ``/parameters`` (str, int, float or lists of them); ``model``
    (a potential manifest) is stored there as JSON text; ``fixed_core`` as ``/parameters/fixed_core``.
    ``observable_units`` adds units for observables not in :data:`OBSERVABLE_UNITS`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        parameters: Mapping[str, Any] | None = None,
        fixed_core: FixedCore | None = None,
        model: Mapping[str, Any] | None = None,
        boundary: Sequence[str] = ("periodic", "periodic", "periodic"),
        author: str | None = None,
        flush_every: int = 10,
        flush_seconds: float = 30.0,
        observable_units: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        boundary = tuple(str(b) for b in boundary)
        if len(boundary) != 3 or any(b not in _BOUNDARIES for b in boundary):
            raise InputError(f"{self.path}: boundary must be three of {_BOUNDARIES}, got {boundary}")
        if int(flush_every) < 1:
            raise InputError(f"{self.path}: flush_every must be at least 1, got {flush_every}")
        self.flush_every = int(flush_every)
        self.flush_seconds = float(flush_seconds)
        self.observable_units = {**OBSERVABLE_UNITS, **(observable_units or {})}
        params = dict(parameters or {})
        for reserved in ("units", "model"):
            if reserved in params:
                raise InputError(f"{self.path}: parameter {reserved!r} is set by the writer itself")
        checked = {key: _attr_value(self.path, key, value) for key, value in params.items()}
        model_text = None
        if model is not None:
            try:
                model_text = json.dumps(model, sort_keys=True, default=str)
            except (TypeError, ValueError) as exc:
                raise InputError(f"{self.path}: model manifest cannot be stored as JSON ({exc})") from exc

        self.n_flushed = 0  # frames on disk; n_written (a property) adds the buffered ones
        self._buffer: list[dict[str, np.ndarray]] = []  # checked copies of the frames not yet written
        self._layout: dict[str, Any] | None = None
        self._dsets: dict[str, h5py.Dataset] = {}
        self._closed = False
        self._last_flush = _time.monotonic()
        self._checked_ids: np.ndarray | None = None  # the last ids array found ascending (the same object: no re-check)
        self._last_step: int | None = None  # step of the last frame on disk
        self._broken = False  # a write failed for lack of space: close without writing again

        self._check_space(DISK_RESERVE_BYTES, "(no room to create it)")
        try:
            self._file = h5py.File(self.path, "w")
        except OSError as exc:
            if _no_space(exc):
                self.path.unlink(missing_ok=True)
                raise self._disk_full("(no room to create it)") from exc
            raise InputError(f"{self.path}: cannot create the trajectory file ({exc})") from exc
        try:
            self._create_layout(author, checked, model_text, fixed_core, boundary)
        except (OSError, RuntimeError) as exc:
            if not _no_space(exc):
                raise
            self._broken = True
            self.discard()
            raise self._disk_full("(no room to create it)") from exc

    def _create_layout(self, author, checked, model_text, fixed_core, boundary) -> None:
        f = self._file
        h5 = f.create_group("h5md")
        h5.attrs.create("version", np.array([1, 1], dtype=np.int32))
        if author is None:
            try:
                author = getpass.getuser()
            except Exception:  # noqa: BLE001 - no user name in some containers
                author = "unknown"
        author_group = h5.create_group("author")
        author_group.attrs["name"] = str(author)
        # optional in H5MD, but readers such as znh5md expect it (they drop author and creator without it):
        # NLMD_AUTHOR_EMAIL, else empty (unknown)
        author_group.attrs["email"] = os.environ.get("NLMD_AUTHOR_EMAIL", "")
        creator = h5.create_group("creator")
        creator.attrs["name"] = "nlmd"
        creator.attrs["version"] = __version__

        p = f.create_group("parameters")
        p.attrs["units"] = "metal"
        for key, value in checked.items():
            p.attrs[key] = value
        if model_text is not None:
            p.attrs["model"] = model_text
        if fixed_core is not None:
            fc = p.create_group("fixed_core")
            fc.attrs["center_id"] = np.int64(fixed_core.center_id)
            fc.attrs["rfix"] = np.float64(fixed_core.rfix)
            fc.create_dataset("core_ids", data=np.asarray(fixed_core.core_ids, dtype=np.int64))

        box = f.create_group(f"particles/{GROUP}/box")
        box.attrs.create("dimension", np.int32(3))
        box.attrs.create("boundary", np.array(boundary, dtype=h5py.string_dtype()))
        f.flush()

    # ---------------------------------------------------------------------------------------------
    def _disk_full(self, what: str, free: int | None = None, need: int | None = None) -> DiskFullError:
        """The one sentence for a full file system (``what``: what could not be written)."""
        room = ""
        if free is not None and need is not None:
            room = f" ({free / 1e6:.2f} MB free, {need / 1e6:.2f} MB needed)"
        if self.n_flushed == 0:
            held = "no frame was written"
        else:
            held = f"{self.path} holds its first {self.n_flushed} frames, up to step {self._last_step}"
        exc = DiskFullError(f"disk full writing {self.path} {what}{room}; {held}")
        exc.path, exc.frames, exc.last_step, exc.free = self.path, self.n_flushed, self._last_step, free
        return exc

    def _check_space(self, need: int, what: str) -> None:
        free = free_bytes(self.path.parent)
        if free is not None and free < need:
            raise self._disk_full(what, free, need)

    # ---------------------------------------------------------------------------------------------
    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"TrajectoryWriter({str(self.path)!r}, {state}, written={self.n_written}, flushed={self.n_flushed})"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` (or :meth:`discard`) was called."""
        return self._closed

    @property
    def n_written(self) -> int:
        """Frames accepted by :meth:`write` (flushed or still buffered)."""
        return self.n_flushed + len(self._buffer)

    # ---------------------------------------------------------------------------------------------
    def _check_frame(self, frame: Frame, copy: bool = True) -> dict[str, np.ndarray]:
        """Validate one frame against the layout (or set the layout) and return its arrays (copies if ``copy``)."""
        where = f"{self.path}: frame {self.n_written} (step {frame.step})"
        out: dict[str, np.ndarray] = {}
        ids = np.asarray(frame.ids)
        if ids.ndim != 1 or ids.size == 0:
            raise InputError(f"{where}: ids must be a non-empty 1-d array, got shape {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise InputError(f"{where}: ids must be integers, got dtype {ids.dtype}")
        n = ids.shape[0]
        # a producer that passes the same read-only ids array every frame (nlmd run) is checked once
        if not (ids is self._checked_ids and not ids.flags.writeable):
            if n > 1 and not np.all(np.diff(ids) > 0):
                raise InputError(f"{where}: ids must be strictly ascending (rows ordered by atom id)")
            self._checked_ids = ids
        layout = self._layout
        if layout is not None and n != layout["n_atoms"]:
            raise InputError(f"{where}: has {n} atoms but the file was started with {layout['n_atoms']}")

        for name, s in SERIES.items():
            value = getattr(frame, s.attr)
            if value is None:
                if s.required:
                    raise InputError(f"{where}: {s.attr} is missing")
                if layout is not None and name in layout["series"]:
                    raise InputError(f"{where}: {s.attr} is missing but the first frame had them")
                continue
            if layout is not None and name not in layout["series"]:
                raise InputError(f"{where}: has {s.attr} but the first frame had none")
            arr = np.asarray(value)
            shape = ((n,) + s.tail) if s.per_atom else s.tail
            if arr.shape != shape:
                raise InputError(f"{where}: {s.attr} has shape {arr.shape}, expected {shape}")
            if np.dtype(s.dtype).kind in "iu" and arr.dtype.kind not in "iu":
                raise InputError(f"{where}: {s.attr} must be integers, got dtype {arr.dtype}")
            out[name] = np.array(arr, dtype=s.dtype, copy=True) if copy else np.asarray(arr, dtype=s.dtype)

        obs: dict[str, np.ndarray] = {}
        for key, value in frame.observables.items():
            if not isinstance(key, str) or not key or "/" in key or key in (".", ".."):
                raise InputError(f"{where}: observable name {key!r} must be a non-empty string without '/'")
            arr = np.asarray(value)
            if arr.dtype.kind not in "iufb":
                raise InputError(f"{where}: observable {key!r} is not numeric (dtype {arr.dtype})")
            obs[key] = np.array(arr, dtype=np.int64 if arr.dtype.kind in "iub" else np.float64)
        if layout is not None:
            if set(obs) != set(layout["observables"]):
                raise InputError(
                    f"{where}: observables {sorted(obs)} differ from those of the first frame "
                    f"{sorted(layout['observables'])}"
                )
            for key, arr in obs.items():
                shape, dtype = layout["observables"][key]
                if arr.shape != shape:
                    raise InputError(f"{where}: observable {key!r} has shape {arr.shape}, expected {shape}")
                obs[key] = arr.astype(dtype, copy=False)
        for key, arr in obs.items():
            out["obs/" + key] = arr
        try:
            out["step"] = np.int64(frame.step)
            out["time"] = np.float64(frame.time)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"{where}: step must be an integer and time a number ({exc})") from exc
        if out["step"] == STEP_FILL:
            raise InputError(f"{where}: step {frame.step} is reserved as the fill value")
        return out

    def _create_datasets(self, first: dict[str, np.ndarray]) -> None:
        """Create every dataset of the layout, sized zero frames, from the first frame's arrays."""
        f = self._file
        n = first["id"].shape[0]
        root = f[f"particles/{GROUP}"]
        pos = root.create_group("position")
        step = pos.create_dataset(
            "step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(_SMALL_CHUNK_ROWS,),
            fillvalue=STEP_FILL,
        )
        tds = pos.create_dataset(
            "time", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(_SMALL_CHUNK_ROWS,),
            fillvalue=np.nan,
        )
        tds.attrs["unit"] = "ps"
        self._dsets["step"] = step
        self._dsets["time"] = tds
        for name, s in SERIES.items():
            if name not in first:
                continue
            grp = pos if name == "position" else root.require_group(s.path)
            if name != "position":
                grp["step"] = step  # hard links
                grp["time"] = tds
            if s.per_atom:
                shape = (n,) + s.tail
                chunks = (1,) + shape
            else:
                shape = s.tail
                chunks = (_SMALL_CHUNK_ROWS,) + shape
            fill = np.nan if np.dtype(s.dtype).kind == "f" else 0
            ds = grp.create_dataset(
                "value", shape=(0,) + shape, maxshape=(None,) + shape, dtype=s.dtype, chunks=chunks,
                fillvalue=fill,
            )
            if s.per_atom:
                ds = _without_chunk_cache(grp, ds)
            if s.unit:
                ds.attrs["unit"] = s.unit
            self._dsets[name] = ds
        obs_layout: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for key in sorted(k for k in first if k.startswith("obs/")):
            name = key[4:]
            arr = first[key]
            grp = f.require_group(f"observables/{GROUP}").create_group(name)
            grp["step"] = step
            grp["time"] = tds
            rows = max(1, min(_SMALL_CHUNK_ROWS, 65536 // max(1, arr.nbytes)))
            ds = grp.create_dataset(
                "value", shape=(0,) + arr.shape, maxshape=(None,) + arr.shape, dtype=arr.dtype,
                chunks=(rows,) + arr.shape,
            )
            unit = self.observable_units.get(name)
            if unit:
                ds.attrs["unit"] = unit
            self._dsets[key] = ds
            obs_layout[name] = (arr.shape, arr.dtype)
        self._layout = {
            "n_atoms": n,
            "series": {name for name in SERIES if name in first},
            "observables": obs_layout,
        }
        f.flush()  # the complete, empty layout is on disk before any frame

    # ---------------------------------------------------------------------------------------------
    def write(self, frame: Frame, *, copy: bool = True) -> None:
        """Accept one frame; it reaches the disk at the next flush (see the class docstring).

        The frame's arrays are copied, unless ``copy=False``: then the writer keeps references until
        the frame is flushed, and the caller must not modify them (nlmd run's frames are read-only).
        """
        if self._closed:
            raise ValueError(f"{self.path}: write() on a closed TrajectoryWriter")
        arrays = self._check_frame(frame, copy=copy)
        if self._layout is None:
            self._check_space(DISK_RESERVE_BYTES, "(its first frame did not fit)")
            try:
                self._create_datasets(arrays)
            except (OSError, RuntimeError) as exc:
                if not _no_space(exc):
                    raise
                self._broken = True
                raise self._disk_full("(its first frame did not fit)") from exc
        self._buffer.append(arrays)  # n_written follows: a KeyboardInterrupt never leaves it off by one
        if (
            len(self._buffer) >= self.flush_every
            or _time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Write the buffered frames as one block and flush the file (no-op on a closed writer)."""
        if self._closed or self._broken:
            return
        buf = self._buffer
        if buf:
            k = len(buf)
            start = self.n_flushed
            stop = start + k
            # each new frame of a per-atom series is a chunk of its own; a small series may start a chunk
            need = sum(b[key].nbytes for b in buf for key in b) + DISK_RESERVE_BYTES
            need += sum(int(np.prod(ds.chunks)) * ds.dtype.itemsize for key, ds in self._dsets.items()
                        if ds.chunks is not None and ds.chunks[0] > 1)
            free = free_bytes(self.path.parent)
            if free is not None and free < need:
                self._buffer = []  # they cannot be written: close() must not try again
                raise self._disk_full(f"after {start} frames (the next {k} did not fit)", free, need)
            try:
                self._write_block(buf, start, stop)
            except (OSError, RuntimeError) as exc:
                if not _no_space(exc):
                    raise
                self._broken, self._buffer = True, []
                raise self._disk_full(f"after {start} frames (HDF5 could not write the next {k})") from exc
            self._buffer, self.n_flushed = [], stop  # one step: a retry after an interrupt rewrites the block
            self._last_step = int(buf[-1]["step"])
        else:
            try:
                self._file.flush()
            except (OSError, RuntimeError) as exc:
                if not _no_space(exc):
                    raise
                self._broken = True
                raise self._disk_full(f"after {self.n_flushed} frames") from exc
        self._last_flush = _time.monotonic()

    def _write_block(self, buf: list[dict[str, np.ndarray]], start: int, stop: int) -> None:
        # Every dataset but step (values, time, observables), then a flush; the shared step dataset
        # last, then a flush again. A reader takes the shortest length and drops trailing fill-value
        # steps, so no frame becomes visible before all of its data is on disk.
        for key, ds in self._dsets.items():
            if key == "step":
                continue
            block = np.stack([b[key] for b in buf])
            ds.resize(stop, axis=0)
            ds[start:stop] = block
        self._file.flush()
        step = self._dsets["step"]
        step.resize(stop, axis=0)
        step[start:stop] = np.array([b["step"] for b in buf], dtype=np.int64)
        self._file.flush()

    def close(self) -> None:
        """Flush the buffered frames and close the file; calling it again does nothing."""
        if self._closed:
            return
        try:
            if self._file.id.valid and not self._broken:
                self.flush()
        finally:
            self._closed = True
            if self._file.id.valid:
                try:
                    self._file.close()
                except (OSError, RuntimeError):
                    if not self._broken:  # after a failed write HDF5 may fail to close: the frames are on disk
                        raise

    def discard(self) -> None:
        """Close the file without writing buffered frames and delete it (for a run that failed early)."""
        self._buffer = []
        self._closed = True
        try:
            if self._file.id.valid:
                try:
                    self._file.close()
                except (OSError, RuntimeError):
                    if not self._broken:
                        raise
        finally:
            self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------------


def _open_value(group: h5py.Group) -> h5py.Dataset:
    """``group["value"]``; when it is compressed with multi-frame chunks, with a chunk cache of its own
    (at least two chunks) whatever the file's."""
    ds = group["value"]
    if ds.chunks is None or ds.chunks[0] <= 1 or ds.id.get_create_plist().get_nfilters() == 0:
        return ds
    nbytes = max(_FILTERED_CHUNK_CACHE_BYTES, 2 * int(np.prod(ds.chunks)) * ds.dtype.itemsize)
    del ds  # HDF5 shares one cache between opens of a dataset: close it before opening it again
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_chunk_cache(521, nbytes, 0.75)
    return h5py.Dataset(h5py.h5d.open(group.id, b"value", dapl=dapl))


def _cap_metadata_cache(f: h5py.File, nbytes: int) -> None:
    """Limit the HDF5 metadata cache of an open file to ``nbytes``."""
    fid = f.id
    cfg = fid.get_mdc_config()
    cfg.set_initial_size = True
    cfg.initial_size = cfg.max_size = nbytes
    cfg.min_size = min(cfg.min_size, nbytes // 2)
    fid.set_mdc_config(cfg)


def _interval_series(ds: h5py.Dataset, t: int, dtype) -> np.ndarray:
    """The first ``t`` values of a step or time dataset: an array, or a scalar interval (H5MD 1.1)."""
    if ds.ndim == 0:
        offset = ds.attrs.get("offset", 0)
        return (np.asarray(offset, dtype=dtype) + np.arange(t, dtype=dtype) * np.asarray(ds[()], dtype=dtype))
    return np.asarray(ds[:t], dtype=dtype)


class TrajectoryReader:
    """Read an H5MD trajectory file written by :class:`TrajectoryWriter` (or any file of the layout).

    Opening validates the layout and raises :class:`~nlmd.errors.InputError` naming the file and the
    missing or malformed field. ``n_frames`` is the number of complete frames: the shortest length
    over all datasets, less any trailing frames torn by a crash. ``ids`` and ``species`` are those of
    frame 0. Data are read lazily, per series and per block of frames.

    ``metadata_cache_bytes`` caps HDF5's metadata cache for this file (memory stays flat over long
    trajectories); None keeps HDF5's default. ``chunk_cache_bytes`` is the chunk cache per dataset
    (default none: see :data:`READER_CHUNK_CACHE_BYTES`; compressed multi-frame chunks always get one);
    None keeps h5py's default.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        metadata_cache_bytes: int | None = READER_METADATA_CACHE_BYTES,
        chunk_cache_bytes: int | None = READER_CHUNK_CACHE_BYTES,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file")
        cache = {} if chunk_cache_bytes is None else {"rdcc_nbytes": int(chunk_cache_bytes)}
        try:
            self._file = h5py.File(self.path, "r", **cache)
        except OSError as exc:
            if "unable to lock file" in str(exc):
                raise InputError(
                    f"{self.path}: is open for writing by another process (HDF5 file lock); read it when "
                    "the writer has closed it, or read a copy"
                ) from exc
            raise InputError(f"{self.path}: cannot be opened as an HDF5 file ({exc})") from exc
        try:
            if metadata_cache_bytes is not None:
                _cap_metadata_cache(self._file, int(metadata_cache_bytes))
            self._open()
        except BaseException:
            self._file.close()
            raise

    def _bad(self, what: str) -> InputError:
        return InputError(f"{self.path}: {what} (not an nlmd H5MD trajectory; see docs/h5md.md)")

    def _open(self) -> None:
        f = self._file
        if "h5md" not in f or "version" not in f["h5md"].attrs:
            raise self._bad("missing /h5md group with its version attribute")
        if "particles" not in f:
            raise self._bad("missing /particles group")
        if GROUP not in f["particles"]:
            names = list(f["particles"].keys())
            raise self._bad(f"missing particles group '{GROUP}' (found {names})")
        root = f[f"particles/{GROUP}"]
        if "position" not in root:
            raise InputError(
                f"{self.path}: holds no frames (no particles/{GROUP}/position: the writer wrote none)"
            )
        self._root = root
        for ds in ("step", "time", "value"):
            if ds not in root["position"]:
                raise self._bad(f"missing particles/{GROUP}/position/{ds}")
        self._values: dict[str, h5py.Dataset] = {}
        for name, s in SERIES.items():
            if s.path in root and "value" in root[s.path]:
                self._values[name] = _open_value(root[s.path])
            elif s.required:
                raise self._bad(f"missing particles/{GROUP}/{s.path}/value")
        pos = self._values["position"]
        if pos.ndim != 3 or pos.shape[2] != 3:
            raise self._bad(f"position/value has shape {pos.shape}, expected (T, N, 3)")
        n = pos.shape[1]
        for name, ds in self._values.items():
            s = SERIES[name]
            expected = ((n,) + s.tail) if s.per_atom else s.tail
            if ds.shape[1:] != expected:
                raise self._bad(f"{s.path}/value has shape {ds.shape}, expected (T, {', '.join(map(str, expected))})")
        self._step_ds = root["position/step"]
        self._time_ds = root["position/time"]

        self._obs: dict[str, h5py.Dataset] = {}
        obs_root = f.get(f"observables/{GROUP}")
        if obs_root is not None:
            for name, grp in obs_root.items():
                if isinstance(grp, h5py.Group) and "value" in grp:
                    self._obs[name] = _open_value(grp)
                elif isinstance(grp, h5py.Dataset):  # H5MD allows a bare time-independent dataset
                    continue

        # H5MD 1.1 also allows a fixed interval: scalar step/time (frame i at offset + i * value; znh5md
        # writes them so)
        lengths = [ds.shape[0] for ds in (self._step_ds, self._time_ds) if ds.ndim == 1]
        lengths += [ds.shape[0] for ds in self._values.values()]
        lengths += [ds.shape[0] for ds in self._obs.values()]
        t = min(lengths)
        steps = _interval_series(self._step_ds, t, np.int64)
        while t > 0 and steps[t - 1] == STEP_FILL:  # torn by a crash: step extent on disk, data not
            t -= 1
        self.n_frames: int = int(t)
        self.n_atoms: int = int(n)
        self.steps: np.ndarray = steps[:t]
        self.times: np.ndarray = _interval_series(self._time_ds, t, np.float64)

        if t > 0:
            self.ids: np.ndarray = np.asarray(self._values["id"][0], dtype=np.int64)
            self.species: np.ndarray = np.asarray(self._values["species"][0], dtype=np.int32)
        else:
            self.ids = np.zeros(0, dtype=np.int64)
            self.species = np.zeros(0, dtype=np.int32)

        self.units: dict[str, str] = {"time": "ps"}
        for name, ds in self._values.items():
            if "unit" in ds.attrs:
                self.units[name] = _decode_attr(ds.attrs["unit"])
        if "unit" in self._time_ds.attrs:
            self.units["time"] = _decode_attr(self._time_ds.attrs["unit"])
        for name, ds in self._obs.items():
            if "unit" in ds.attrs:
                self.units[name] = _decode_attr(ds.attrs["unit"])

        self.parameters: dict[str, Any] = {}
        self.model: dict | None = None
        self.fixed_core: FixedCore | None = None
        params = f.get("parameters")
        if params is not None:
            self.parameters = {k: _decode_attr(v) for k, v in params.attrs.items()}
            if "model" in self.parameters:
                try:
                    self.model = json.loads(self.parameters["model"])
                except (TypeError, ValueError) as exc:
                    raise self._bad(f"/parameters attribute 'model' is not JSON text ({exc})") from exc
            if "fixed_core" in params:
                fc = params["fixed_core"]
                try:
                    self.fixed_core = FixedCore(
                        center_id=int(fc.attrs["center_id"]),
                        rfix=float(fc.attrs["rfix"]),
                        core_ids=np.asarray(fc["core_ids"][()], dtype=np.int64),
                    )
                except KeyError as exc:
                    raise self._bad(f"/parameters/fixed_core lacks {exc.args[0]!r}") from exc
        self.boundary: tuple[str, ...] = tuple(
            _decode_attr(root["box"].attrs.get("boundary", np.array(["periodic"] * 3, dtype=object)))
        )
        self.observable_names: list[str] = sorted(self._obs)

    # ---------------------------------------------------------------------------------------------
    def __enter__(self) -> TrajectoryReader:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n_frames

    def __repr__(self) -> str:
        return f"TrajectoryReader({str(self.path)!r}, frames={self.n_frames}, atoms={self.n_atoms})"

    def close(self) -> None:
        """Close the file; calling it again does nothing."""
        if self._file.id.valid:
            self._file.close()

    @property
    def file(self) -> h5py.File:
        """The open :class:`h5py.File` (for fields this API does not cover)."""
        return self._file

    @property
    def without_energies(self) -> bool:
        """Whether the producer left the energies out on purpose (``nlmd run --no-energies``)."""
        return self.parameters.get("energies", True) in (False, 0)

    def _why_missing(self, name: str) -> str:
        if name in ("energies", "potential_energy", "temperature") and self.without_energies:
            return ": it was written by `nlmd run --no-energies` (positions, velocities, forces only); " \
                   "rerun without --no-energies, or get energies with `nlmd rescore`"
        return ""

    def has(self, series: str) -> bool:
        """Whether the file holds a particles series ("position", "force", "velocity", ...)."""
        return series in self._values

    @property
    def series(self) -> list[str]:
        """The particles series present in the file."""
        return list(self._values)

    def _range(self, start: int, stop: int | None) -> tuple[int, int]:
        start, stop, _ = slice(start, stop).indices(self.n_frames)
        return start, max(start, stop)

    def read(self, series: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``[start:stop]`` of one series: (T,N,3), (T,N), or (T,3,3) for "box".

        "step" and "time" are accepted too. Raises InputError if the file lacks the series.
        """
        start, stop = self._range(start, stop)
        if series == "step":
            return self.steps[start:stop].copy()
        if series == "time":
            return self.times[start:stop].copy()
        if series not in SERIES:
            raise ValueError(f"unknown series {series!r}; one of {', '.join(SERIES)}, step, time")
        if series not in self._values:
            raise InputError(f"{self.path}: has no {series!r} series{self._why_missing(series)}")
        return np.asarray(self._values[series][start:stop])

    def observable(self, name: str) -> np.ndarray:
        """All frames of one observable, shape (T, ...)."""
        if name not in self._obs:
            raise InputError(
                f"{self.path}: has no observable {name!r} (it has {', '.join(self.observable_names) or 'none'})"
                f"{self._why_missing(name)}"
            )
        return np.asarray(self._obs[name][: self.n_frames])

    def _frame_from(self, i: int, block: dict[str, np.ndarray], j: int, obs: dict[str, np.ndarray]) -> Frame:
        return Frame(
            step=int(self.steps[i]),
            time=float(self.times[i]),
            box=block["box"][j],
            ids=block["id"][j],
            species=block["species"][j],
            positions=block["position"][j],
            forces=block["force"][j] if "force" in block else None,
            velocities=block["velocity"][j] if "velocity" in block else None,
            energies=block["energies"][j] if "energies" in block else None,
            observables={k: (v[i].item() if v.ndim == 1 else v[i]) for k, v in obs.items()},
        )

    def frame(self, i: int) -> Frame:
        """Frame ``i`` (negative counts from the end) with every series the file holds."""
        if not -self.n_frames <= i < self.n_frames:
            raise IndexError(f"{self.path}: frame {i} out of range ({self.n_frames} frames)")
        i %= self.n_frames
        block = {name: np.asarray(ds[i : i + 1]) for name, ds in self._values.items()}
        obs = {name: np.asarray(ds[i : i + 1]) for name, ds in self._obs.items()}
        fr = self._frame_from(i, block, 0, {})
        fr.observables = {k: (v[0].item() if v.ndim == 1 else v[0]) for k, v in obs.items()}
        return fr

    def __iter__(self) -> Iterator[Frame]:
        obs = {name: self.observable(name) for name in self._obs}
        for start, block in self.iter_blocks(tuple(self._values)):
            for j in range(next(iter(block.values())).shape[0]):
                yield self._frame_from(start + j, block, j, obs)

    def frame_bytes(self, series: Sequence[str]) -> int:
        """Bytes one frame of ``series`` takes in memory."""
        total = 0
        for name in series:
            if name in ("step", "time"):
                total += 8
                continue
            ds = self._values.get(name)
            if ds is None:
                raise InputError(f"{self.path}: has no {name!r} series{self._why_missing(name)}")
            total += int(np.prod(ds.shape[1:])) * ds.dtype.itemsize
        return max(total, 1)

    def iter_blocks(
        self, series: Sequence[str], block_frames: int | None = None
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield ``(start, {series: array[start:start+k]})`` covering every frame exactly once.

        Without ``block_frames`` the block holds about 32 MB of the requested series, so memory stays
        bounded however long the trajectory is.
        """
        series = tuple(series)
        for name in series:
            if name not in ("step", "time") and name not in SERIES:
                raise ValueError(f"unknown series {name!r}; one of {', '.join(SERIES)}, step, time")
        if block_frames is None:
            block_frames = max(1, BLOCK_BYTES // self.frame_bytes(series))
        block_frames = int(block_frames)
        if block_frames < 1:
            raise ValueError(f"block_frames must be at least 1, got {block_frames}")
        for start in range(0, self.n_frames, block_frames):
            stop = min(start + block_frames, self.n_frames)
            yield start, {name: self.read(name, start, stop) for name in series}


# --------------------------------------------------------------------------------------------------
# ASE and MDAnalysis
# --------------------------------------------------------------------------------------------------


def to_atoms(frame: Frame, boundary: Sequence[str] = ("periodic", "periodic", "periodic")):
    """An :class:`ase.Atoms` for one frame, forces and energy on a SinglePointCalculator.

    Velocities are converted from Angstrom/ps to ASE units; the atom ids go to the ``"id"`` array;
    ``observables`` go to ``atoms.info`` (``potential_energy`` also becomes the calculator's energy).
    """
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.units import fs as ase_fs

    atoms = Atoms(
        numbers=frame.species, positions=frame.positions, cell=frame.box,
        pbc=[b == "periodic" for b in boundary],
    )
    atoms.set_array("id", np.asarray(frame.ids, dtype=np.int64))
    if frame.velocities is not None:
        atoms.set_velocities(np.asarray(frame.velocities) / (ase_fs * 1000.0))
    atoms.info.update({"step": frame.step, "time_ps": frame.time, **frame.observables})
    results: dict[str, Any] = {}
    if frame.forces is not None:
        results["forces"] = np.asarray(frame.forces)
    if "potential_energy" in frame.observables:
        results["energy"] = float(frame.observables["potential_energy"])
    if "stress" in frame.observables and np.shape(frame.observables["stress"]) == (6,):
        results["stress"] = np.asarray(frame.observables["stress"], dtype=np.float64)
    if frame.energies is not None:
        results["energies"] = np.asarray(frame.energies)
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def register_mdanalysis_units() -> None:
    """Teach MDAnalysis the force unit "eV/Angstrom" through its public unit tables
    (:data:`MDAnalysis.units.conversion_factor`; 1 kJ/(mol Angstrom) = 0.01036 eV/Angstrom), so that its
    readers convert eV-based forces. Calling it again does nothing.
    """
    from MDAnalysis import units

    per_kj_mol = units.energyUnit_factor["eV"]  # eV per kJ/mol
    for name in ("eV/Angstrom", "eV/A"):
        units.forceUnit_factor.setdefault(name, per_kj_mol)
        units.unit_types.setdefault(name, "force")


_mdanalysis_reader: Any = None


def mdanalysis_reader():
    """MDAnalysis's H5MD reader for nlmd's files: a subclass whose own unit table also knows the H5MD force
    unit "eV Angstrom-1" (MDAnalysis's reader does not, and raises on our files). MDAnalysis's reader and
    its table stay as they are; the subclass has no ``format``, so it is registered for no file type and
    :func:`open_mdanalysis` hands it to ``Universe.load_new`` as the reader class."""
    global _mdanalysis_reader
    if _mdanalysis_reader is None:
        from MDAnalysis.coordinates.H5MD import H5MDReader

        register_mdanalysis_units()
        table = {kind: dict(names) for kind, names in H5MDReader._unit_translation.items()}
        table["force"].update({"eV Angstrom-1": "eV/Angstrom", "eV A-1": "eV/Angstrom"})
        _mdanalysis_reader = type("NlmdH5MDReader", (H5MDReader,), {"_unit_translation": table,
                                                                   "__module__": __name__})
    return _mdanalysis_reader


def open_mdanalysis(path: str | os.PathLike, *, convert_units: bool = True, **kwargs: Any):
    """An :class:`MDAnalysis.Universe` for a trajectory file, with elements, types and ids set.

    The file has no topology MDAnalysis can parse, so the Universe is built from the atoms of frame 0
    (atomic numbers -> ``elements`` and ``types``, atom ids -> ``ids``) and the trajectory is loaded
    with MDAnalysis's H5MD reader. With ``convert_units=True`` (MDAnalysis's default) forces come in
    MDAnalysis base units, kJ/(mol Angstrom); pass ``convert_units=False`` to keep eV/Angstrom.
    Extra keyword arguments go to the H5MD reader.

    The reader is given the file's time between frames as ``dt`` (MDAnalysis would assume 1 ps).
    MDAnalysis keeps only the lengths and angles of a cell and rebuilds it with a along x and b in the
    xy plane (rows lower-triangular); a frame whose cell is oriented otherwise (an imported VASP cell,
    say) has its positions, velocities and forces rotated with it on the fly, so that periodic distances
    stay right. A left-handed cell cannot be rotated so: it is refused.
    """
    import MDAnalysis as mda
    from ase.data import chemical_symbols

    with TrajectoryReader(path) as r:
        n, ids, species = r.n_atoms, r.ids, r.species
        times = r.times
        boxes = r.read("box")
    u = mda.Universe.empty(n, trajectory=False)
    symbols = np.array([chemical_symbols[int(z)] for z in species], dtype=object)
    u.add_TopologyAttr("elements", symbols)
    u.add_TopologyAttr("types", symbols)
    u.add_TopologyAttr("ids", ids)
    steps = np.diff(times)
    if steps.size and np.all(np.isfinite(steps)) and np.all(steps > 0):
        kwargs.setdefault("dt", float(np.median(steps)))
    rotations = _canonical_rotations(Path(path), boxes)
    u.load_new(str(path), format=mdanalysis_reader(), convert_units=convert_units, **kwargs)
    if rotations is not None:
        u.trajectory.add_transformations(_Rotate(rotations))
    return u


def _canonical_rotations(path: Path, boxes: np.ndarray) -> np.ndarray | None:
    """Per frame, the rotation Q with ``box @ Q`` lower-triangular with a positive diagonal (MDAnalysis's
    orientation of a cell); None when every cell is already so."""
    upper = np.abs(boxes[:, [0, 0, 1], [1, 2, 2]])
    if boxes.shape[0] == 0 or np.all(upper <= 1e-12 * np.abs(boxes).max()):
        return None
    rotations = np.empty_like(boxes)
    for i, box in enumerate(boxes):
        if np.linalg.det(box) <= 0:
            raise InputError(f"{path}: frame {i}: the cell is left-handed (or flat); MDAnalysis cannot hold it")
        q, r = np.linalg.qr(box.T)  # box = r.T @ q.T, so box @ q = r.T (lower-triangular)
        rotations[i] = q * np.sign(np.diag(r))  # flip columns so that the diagonal is positive
    return rotations


class _Rotate:
    """MDAnalysis transformation: rotate positions, velocities and forces of frame i by ``rotations[i]``."""

    def __init__(self, rotations: np.ndarray) -> None:
        self.rotations = rotations
        self.parallelizable = True

    def __call__(self, ts):
        q = self.rotations[ts.frame]
        ts.positions = ts.positions @ q
        if ts.has_velocities:
            ts.velocities = ts.velocities @ q
        if ts.has_forces:
            ts.forces = ts.forces @ q
        return ts
