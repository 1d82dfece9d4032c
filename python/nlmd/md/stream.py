"""The trajectory stream: frames of a run written to an H5MD file as they come (an observer).

:class:`TrajectoryStream` is the observer ``nlmd run`` attaches to write its file through a
:class:`~nlmd.h5md.TrajectoryWriter`, on the MD thread or from a writer thread of its own;
:func:`close_after_failure` is what a failed run does with its file. The file's crash-safe write order
(value datasets first, the shared ``step`` last, each block flushed) is the writer's, in :mod:`nlmd.h5md`:
this module decides only *when* frames are handed over and flushed.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import TYPE_CHECKING

from nlmd.h5md import Frame, TrajectoryWriter
from nlmd.md.loop import Observer

if TYPE_CHECKING:  # pragma: no cover
    from nlmd.md.loop import StreamedRun

__all__ = ["TrajectoryStream", "close_after_failure"]


class TrajectoryStream(Observer):
    """Write frames to a :class:`~nlmd.h5md.TrajectoryWriter`; flush at least every ``flush_seconds``.

    The writer flushes when ``flush_every`` frames are buffered or when a frame arrives
    ``flush_seconds`` after its last flush. Frames may come rarely (a slow model, a large ``every``),
    so buffered frames that have waited ``flush_seconds`` are also flushed without a new frame: a
    killed run loses at most that much.

    ``background=False``: the writer runs on the MD thread, in the frame hook (and the clock is checked
    at every MD step). ``background=True``: a writer thread takes the frames from a queue of at most
    ``queue_frames`` and does all of the file's work (h5py calls, flushes); the MD thread only queues
    each frame (waiting when the writer is that far behind). Frames are flushed in the same blocks as
    without the thread. :meth:`finish` (or :meth:`stop`) drains the queue and joins the thread; the
    caller then closes the writer, which flushes the last block: a frame counts as written
    (``writer.n_flushed``) only once it is flushed. An error in the writer thread stops the run at the
    next step and is raised by ``run()``. h5py holds the GIL during its calls, so while the thread runs
    the interpreter's switch interval is lowered to ``switch_interval`` seconds (then restored), or the
    MD thread could wait up to 5 ms for each step's callback.
    """

    _STOP = object()
    _FLUSH = object()

    def __init__(
        self, writer: TrajectoryWriter, *, background: bool = False, queue_frames: int = 8,
        switch_interval: float = 2e-4,
    ) -> None:
        if int(queue_frames) < 1:
            raise ValueError(f"queue_frames must be at least 1, got {queue_frames}")
        self.writer = writer
        self.background = bool(background)
        self.queue_frames = int(queue_frames)
        self.switch_interval = float(switch_interval)
        self._oldest_unflushed: float | None = None
        self._next_check = 0.0
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None  # set by the writer thread, never cleared
        self._failure_raised = False
        self._saved_switch: float | None = None

    # --- writing (the MD thread, or the writer thread) ---------------------------------------------
    def _write(self, frame: Frame) -> None:
        w = self.writer
        w.write(frame, copy=False)  # a Run's frames are read-only: no copy needed
        if w.n_written == w.n_flushed:
            self._oldest_unflushed = None
        elif self._oldest_unflushed is None:
            self._oldest_unflushed = time.monotonic()

    def _flush_if_old(self, now: float) -> None:
        if self._oldest_unflushed is not None and now - self._oldest_unflushed >= self.writer.flush_seconds:
            self.writer.flush()
            self._oldest_unflushed = None

    def _work(self) -> None:
        """The writer thread: write queued frames until _STOP; after an error, only drain the queue."""
        q = self._queue
        while True:
            timeout = None
            if self._oldest_unflushed is not None and self._failure is None:
                timeout = max(0.0, self._oldest_unflushed + self.writer.flush_seconds - time.monotonic())
            try:
                item = q.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is self._STOP:
                return
            if isinstance(item, tuple) and item[0] is self._FLUSH:  # from save(): close, then say so
                try:
                    if self._failure is None:
                        self.writer.close()
                        self._oldest_unflushed = None
                except BaseException as exc:  # noqa: BLE001 - handed to the MD thread
                    self._failure = exc
                item[1].set()
                continue
            if self._failure is not None:
                continue
            try:
                if item is not None:
                    self._write(item)
                self._flush_if_old(time.monotonic())
            except BaseException as exc:  # noqa: BLE001 - handed to the MD thread
                self._failure = exc

    def _raise_failure(self) -> None:
        """Raise the writer thread's error in the MD thread (once; the thread keeps only draining)."""
        if self._failure is not None and not self._failure_raised:
            self._failure_raised = True
            raise self._failure

    # --- observer hooks (the MD thread) -----------------------------------------------------------
    def start(self, run: StreamedRun) -> None:
        if self.background and self._thread is None:
            self._queue = queue.Queue(maxsize=self.queue_frames)
            self._failure, self._failure_raised = None, False
            self._saved_switch = sys.getswitchinterval()
            sys.setswitchinterval(min(self._saved_switch, self.switch_interval))
            self._thread = threading.Thread(target=self._work, name="nlmd-writer", daemon=True)
            self._thread.start()

    def frame(self, frame: Frame) -> None:
        if self._thread is None:
            self._write(frame)
            return
        self._raise_failure()
        self._queue.put(frame)

    def step(self, step: int) -> None:
        if self._thread is not None:
            self._raise_failure()
            return
        if self._oldest_unflushed is None:
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + 1.0
        self._flush_if_old(now)

    def finish(self, run: StreamedRun) -> None:
        self.stop()

    def save(self, timeout: float) -> tuple[int, str]:
        """From a thread other than the MD thread: write every frame queued so far and close the file (its
        lock too); return the frames on disk and the file.

        Used when another MPI rank failed and the MD thread waits inside LAMMPS for a rank that will never
        answer (see :class:`nlmd.md.failures.RankFailures`). Only with the writer thread: without it the
        writer belongs to the MD thread, and the frames flushed so far are what is kept.
        """
        q = self._queue
        if self._thread is not None and q is not None:
            done = threading.Event()
            try:
                q.put((self._FLUSH, done), timeout=timeout)
                done.wait(timeout)
            except queue.Full:
                pass
        return self.writer.n_flushed, str(self.writer.path)

    def stop(self) -> None:
        """Write every queued frame, end the writer thread and raise its error, if any (no-op without one)."""
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(self._STOP)  # the thread drains the queue even after an error: never blocks for good
            thread.join()
        finally:
            self._thread = None
            if self._saved_switch is not None:
                sys.setswitchinterval(self._saved_switch)
                self._saved_switch = None
        self._raise_failure()


def close_after_failure(writer: TrajectoryWriter | None, stream: TrajectoryStream | None = None) -> int:
    """Close (or discard, with no frame) the writer of a failed run; return the frames kept."""
    if stream is not None:
        try:
            stream.stop()  # normally done by the run's finish; the file is the thread's until it ends
        except BaseException:  # noqa: BLE001 - the original error matters more
            pass
    if writer is None or writer.closed:
        return 0
    try:
        if writer.n_written == 0:
            writer.discard()
            return 0
        writer.close()
        return writer.n_flushed
    except Exception:  # noqa: BLE001 - the original error matters more
        return 0
