"""Stopping a streamed run early and cleanly: the request, its agreement across ranks, the signals.

A Python exception raised in a LAMMPS callback is swallowed by ctypes, and no LAMMPS command may be issued
while a run is in progress. So a stop is a *request* (:meth:`StopRequest.request`, safe from a signal
handler) that the next LAMMPS callback turns into ``lammps_force_timeout`` once every rank agreed on it
(:meth:`StopRequest.agree`, an ``allreduce``, so no rank is left waiting): LAMMPS finishes the current step
and leaves the run as if its ``timer timeout`` had expired. :func:`stop_on_signals` makes SIGINT/SIGTERM
such a request.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["SIGNAL_EXIT", "StopRequest", "stop_on_signals"]

#: exit status of ``nlmd run`` stopped by each signal
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


class StopRequest:
    """Why a run should stop early (None: it should not), agreed by the ranks of ``comm``."""

    def __init__(self, comm) -> None:
        self.comm = comm
        self.size = comm.Get_size()
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        """Ask for a stop (the first reason is kept; safe from a signal handler)."""
        if self.reason is None:
            self.reason = reason

    def agree(self, failed: bool = False) -> bool:
        """Whether to stop now: this rank's request or failure (``failed``), or any other rank's.

        Collective with several ranks: every rank calls it at the same point (the same callback).
        """
        stop = self.reason is not None or failed
        if self.size > 1:
            from mpi4py import MPI

            stop = bool(self.comm.allreduce(int(stop), op=MPI.MAX))
            if stop and self.reason is None and not failed:
                self.reason = "stopped on another rank"
        return stop


class _Stoppable(Protocol):
    stop_reason: str | None

    def request_stop(self, reason: str = ...) -> None: ...


@contextmanager
def stop_on_signals(run: _Stoppable, echo: Callable[[str], None] | None = None) -> Iterator[None]:
    """While inside: SIGINT/SIGTERM ask ``run`` to stop cleanly; a second one ends the process at once.

    Python runs signal handlers only between bytecodes, i.e. here at the next LAMMPS callback (within
    one MD step, in the final run and in the runs and minimisations before it) or between two commands
    of the input. Only in the main thread (elsewhere this does nothing).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if run.stop_reason is not None:  # second signal: no more waiting
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        run.request_stop(name)
        if echo is not None:
            echo(f"\nnlmd run: {name}: stopping at the end of the current step (again to quit at once, without closing the file)")

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
