"""When a streamed run fails: LAMMPS's message made ours, and an error on one of several ranks.

- :func:`lammps_message` turns a LAMMPS exception into one line (without LAMMPS's source location);
  :func:`input_failure` prefers the input's own ``ERROR:`` line (the inputs' convention: print the
  reason, then call an unknown command to stop).
- :class:`RankFailures`: most errors happen on every rank at once, and each rank raises as usual; an error
  of one rank only leaves the others waiting inside LAMMPS, so that rank has rank 0 save its frames and
  ends every rank (:meth:`RankFailures.end_together`).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nlmd.errors import InputError, NlmdError, SimulationError

__all__ = ["AGREE_SECONDS", "SAVE_SECONDS", "RankFailures", "abort_every_rank", "input_failure", "lammps_message"]

#: on several ranks, after an error: seconds a rank waits for the others to fail too (an error every rank
#: sees, such as LAMMPS's ``error->all``) before it ends them all (``error->one``: the others wait in LAMMPS)
AGREE_SECONDS = 5.0
#: seconds a failed rank other than 0 waits for rank 0 to flush the frames it holds before ending every rank
SAVE_SECONDS = 20.0
#: seconds a rank that ends every rank waits after closing its output, for the launcher to forward it
HAND_OVER_SECONDS = 1.0
_FAIL_TAG, _SAVED_TAG = 1501, 1502


def lammps_message(exc: BaseException) -> str:
    """The first line of a LAMMPS exception, without the source location LAMMPS appends.

    An error of one rank (LAMMPS's ``error->one``, ``ERROR on proc N: ...``) reads ``... (on rank N)``.
    """
    message = getattr(exc, "message", None)  # MPIAbortException's str() is the repr of its message
    text = (message if isinstance(message, str) else str(exc)).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if line.startswith("ERROR: "):
        line = line[len("ERROR: "):]
    if line.endswith(")") and " (src/" in line:
        line = line[: line.rindex(" (src/")]
    proc = re.match(r"ERROR on proc (\d+): (.*)", line)
    if proc:
        line = f"{proc.group(2)} (on rank {proc.group(1)})"
    from nlmd.runtime import plugin_hint

    return plugin_hint(line)


def input_failure(exc: BaseException, where: str, input_path: Path, own_error: Callable[[], str | None]) -> NlmdError:
    """The error for a LAMMPS failure while executing the input: the input's own ``ERROR:`` line if any.

    ``own_error`` returns that line (rank 0, from the log) or None.
    """
    message = lammps_message(exc)
    if message.startswith("Unknown command"):  # the inputs' convention: print 'ERROR: ...', then this
        own = own_error()
        if own:
            return InputError(own)
        if message.startswith("Unknown command: nlmd_input_error"):
            return InputError(f"{input_path}: {message.split()[-1].replace('_', ' ')}")
    return SimulationError(f"{input_path}: {where}: LAMMPS stopped with: {message}")


def own_error_line(log_text: str) -> str | None:
    """The last line ``ERROR: <text>`` of a LAMMPS log that the input printed itself, or None."""
    for line in reversed(log_text.splitlines()):
        s = line.strip()
        if s.startswith("ERROR: ") and "(src/" not in s and not s.startswith("ERROR: Unknown command"):
            return s[len("ERROR: "):]
    return None


def abort_every_rank(comm, line: str) -> None:
    """Print ``line`` on stderr and end every rank of ``comm`` with ``MPI_Abort`` (exit status 1); never returns.

    MPICH's launcher kills every rank when one aborts and can drop what that rank wrote just before (seen
    under load: the error line and MPICH's own "Abort(1)" line both lost, 2 runs in 80). So this rank
    flushes and closes its stdout and stderr, which hands the launcher an end of file after the last line,
    and waits :data:`HAND_OVER_SECONDS` for it to forward them before aborting (0 lost in 140 runs).
    """
    print(line, file=sys.stderr, flush=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    for fd in (1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    time.sleep(HAND_OVER_SECONDS)
    try:
        comm.Abort(1)
    finally:  # MPICH's abort can return to the caller: never let this rank go on
        os._exit(1)


def wait_request(request, seconds: float, *, result: bool = False):
    """Poll an MPI request for up to ``seconds``: whether it completed (or its object, with ``result``)."""
    t_end = time.monotonic() + seconds
    while True:
        if result:
            done, value = request.test()
            if done:
                return value
        elif request.Test():
            return True
        if time.monotonic() > t_end:
            return None if result else False
        time.sleep(0.01)


class RankFailures:
    """How the ranks of one run learn of an error on one of them (a no-op with one rank).

    ``comm`` is the run's communicator; a duplicate of it carries these messages, never mixed with
    LAMMPS's. ``save`` (rank 0) is called from a thread of its own when another rank failed alone: it
    writes out the frames held and returns ``(frames on disk, file)``.
    """

    def __init__(self, comm, save: Callable[[], tuple[int, str | None]]) -> None:
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._save = save
        self._comm = None
        self._watch: threading.Thread | None = None
        self._watch_stop = threading.Event()

    def start(self) -> None:
        """Duplicate the communicator and, on rank 0, start the thread that answers a failed rank."""
        if self.size == 1 or self._comm is not None:
            return
        self._comm = self.comm.Dup()  # LAMMPS communicates on self.comm: never mix with its messages
        if self.rank == 0:
            self._watch = threading.Thread(target=self._watch_failures, name="nlmd-rank-failures", daemon=True)
            self._watch.start()

    def close(self) -> None:
        if self._watch is not None:
            self._watch_stop.set()
            self._watch.join()
            self._watch = None

    def end_together(self, error: BaseException) -> None:
        """After ``error`` on this rank: return if every rank failed too, else report it and end every rank.

        Most errors happen on every rank at once (LAMMPS's ``error->all``, a bad input): the ranks meet in
        a barrier of their own within :data:`AGREE_SECONDS` and each raises as usual (rank 0 reports). An
        error of one rank only (``error->one``, e.g. "Out of range atoms" under PPPM, or rank 0's writer)
        leaves the others waiting inside LAMMPS for a message that never comes: this rank then asks rank 0
        to flush the frames it holds (rank 0's watcher thread does it while its MD thread waits), prints
        the error with the frames kept, and calls ``MPI_Abort``, which ends every rank (exit status 1).
        """
        comm = self._comm
        if self.size == 1 or comm is None:
            return
        if wait_request(comm.Ibarrier(), AGREE_SECONDS):
            return
        message = str(error) if isinstance(error, NlmdError) else f"{type(error).__name__}: {error}"
        if self.rank != 0:
            sent = comm.isend(message, dest=0, tag=_FAIL_TAG)  # noqa: F841 - kept alive until the abort
            reply = comm.irecv(source=0, tag=_SAVED_TAG)
            saved = wait_request(reply, SAVE_SECONDS, result=True)
            if saved:
                count, path = saved
                message += f"; {count} frames were written to {path}" if path else ""
        abort_every_rank(self.comm, f"nlmd: error: {message}; rank {self.rank} ends all {self.size} ranks")

    @contextmanager
    def ending_together(self) -> Iterator[None]:
        """An error inside ends every rank, not only this one (:meth:`end_together`)."""
        try:
            yield
        except (Exception, KeyboardInterrupt) as exc:
            self.end_together(exc)
            raise

    def _watch_failures(self) -> None:
        """Rank 0's thread: when another rank failed alone, flush the frames and tell it how many are kept."""
        from mpi4py import MPI

        comm, status = self._comm, MPI.Status()
        while not self._watch_stop.wait(0.05):
            if not comm.Iprobe(source=MPI.ANY_SOURCE, tag=_FAIL_TAG, status=status):
                continue
            source = status.Get_source()
            comm.recv(source=source, tag=_FAIL_TAG)
            comm.send(self._save(), dest=source, tag=_SAVED_TAG)
