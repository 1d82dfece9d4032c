"""The progress line of ``nlmd run`` (an observer): step, percentage, steps/s, time left, frames.

The line itself is :class:`nlmd.outputs.Progress`, the one progress mechanism of every command; this
module only feeds it from the run's hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nlmd.h5md import Frame
from nlmd.md.loop import Observer
from nlmd.outputs import Progress

if TYPE_CHECKING:  # pragma: no cover
    from nlmd.md.loop import StreamedRun

__all__ = ["ProgressBar"]


class ProgressBar(Observer):
    """One status line on ``stream`` (stderr), redrawn in place at most every ``refresh`` seconds.

    Steps/s counts from the first MD step, so the set-up (and a model's warm-up) does not dilute it.
    """

    def __init__(self, stream=None, refresh: float = 0.5) -> None:
        self.line = Progress("nlmd run: step", unit="steps", stream=stream, live=True, refresh=refresh)
        self.frames = 0
        self._first = self._last = 0

    def start(self, run: StreamedRun) -> None:
        self._first, self._last = run.first_step, run.last_step

    def frame(self, frame: Frame) -> None:
        self.frames += 1

    def step(self, step: int) -> None:
        self.line.update(step, self._first, self._last, f"{self.frames} frames")

    def finish(self, run: StreamedRun) -> None:
        self.line.update(run.step, self._first, self._last, f"{self.frames} frames")
        self.line.close()
