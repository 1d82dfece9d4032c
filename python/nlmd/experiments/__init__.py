"""The paper's experiments, end to end, from nlmd's own commands.

- :mod:`nlmd.experiments.training` — training sets from reference MD and SevenNet models trained on them
  with SevenNet's own trainer (``sevenn``), shipped as checkpoints beside their recipe.
- :mod:`nlmd.experiments.sro_rfix` — the fixed-core SrO experiment (Kang 2024, Fig. 5): reference MD at
  4000 K for each R_fix, every model rescored on exactly those frames, compared, tabulated and plotted.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run_nlmd(args: Sequence[object], *, log: Path | None = None) -> None:
    """Run ``nlmd ARGS`` in a child process from the repository root; its output to ``log`` (if given).

    Raises :class:`~nlmd.errors.NlmdError` with the child's last lines when it fails.
    """
    from nlmd.errors import NlmdError

    args = [str(a) for a in args]
    proc = subprocess.run([sys.executable, "-m", "nlmd", *args], cwd=REPO, capture_output=True, text=True)
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise NlmdError(f"`nlmd {' '.join(args[:2])} ...` failed (exit {proc.returncode}): {' / '.join(tail)}")
