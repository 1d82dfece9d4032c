"""Per-frame cost of ``nlmd rescore`` beyond the force evaluation (target: <= 10 ms for 144 atoms).

Writes FRAMES frames of the 144-atom fixed-core SrO cell (R_fix = 3.68 A, atoms displaced by 0.05 A
per frame) and, in this one process:

1. rescores them with :func:`nlmd.rescore.rescore_file` (read, broadcast, scatter positions,
   change_box, ``run 0``, gather forces and per-atom energies, write), timing each frame through the
   progress callback;
2. in the same LAMMPS set-up (a :class:`nlmd.evaluate.LammpsEvaluator` on the same potential and
   types, after its first structure) times a bare loop of ``run 0 post no`` — the force evaluation
   alone, neighbour lists and k-space set-up included, as rescore does it.

The two are alternated ``--repeat`` times and the per-frame medians are taken (the machine may be
shared). Prints both, their difference (the overhead) and, last, the ratio rescore / bare ``run 0``.

    python bench/rescore_overhead.py [--frames 200] [--repeat 3] [--potential DIR] [--tiny-sevenn]

The default potential is potentials/sro-rigid-ion (Buckingham + Ewald, a cheap force field, so the
overhead shows); ``--tiny-sevenn`` deploys a tiny random SevenNet (about a minute) and uses that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))  # a checkout, not installed

TARGET_MS = 10.0


def write_frames(path: Path, frames: int) -> None:
    import numpy as np

    from nlmd.h5md import FixedCore, Frame, TrajectoryWriter
    from nlmd.structures import build_fixed_core_cell

    cell = build_fixed_core_cell(3.68, seed=0)
    atoms = cell.atoms
    rng = np.random.default_rng(0)
    ids = np.arange(1, len(atoms) + 1)
    core = FixedCore(cell.center_id, cell.rfix, cell.core_ids)
    with TrajectoryWriter(path, parameters={"source": "bench"}, fixed_core=core) as w:
        pos = atoms.positions.copy()
        mobile = ~cell.core_mask
        for k in range(frames):
            pos[mobile] += rng.normal(0.0, 0.05, (int(mobile.sum()), 3))
            w.write(Frame(step=k, time=0.001 * k, box=atoms.cell.array, ids=ids, species=atoms.numbers,
                          positions=pos))


def time_rescore(frames_path: Path, potential: Path, out: Path) -> list[float]:
    """Seconds per frame of rescore_file, frames 2..F (the first one sets LAMMPS up)."""
    from nlmd.rescore import rescore_file

    stamps: list[float] = []
    rescore_file(frames_path, potential, out, force=True, progress=lambda done, total: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def time_bare_run0(frames_path: Path, potential: Path, n: int) -> list[float]:
    """Seconds per ``run 0 post no`` in an evaluator set up on the first frame, n times."""
    from ase import Atoms

    from nlmd.evaluate import LammpsEvaluator
    from nlmd.h5md import TrajectoryReader
    from nlmd.potentials import PotentialDirectory
    from nlmd.rescore import type_elements
    from nlmd.runtime import commands

    pot = PotentialDirectory.load(potential)
    with TrajectoryReader(frames_path) as r:
        fr = r.frame(0)
    atoms = Atoms(numbers=fr.species, positions=fr.positions, cell=fr.box, pbc=True)
    elements = type_elements(pot.manifest, set(atoms.get_chemical_symbols()))
    times = []
    with LammpsEvaluator(pot.path, elements) as ev:
        ev.evaluate(atoms)
        for _ in range(n):
            t = time.perf_counter()
            commands(ev._lmp, "run 0 post no")
            times.append(time.perf_counter() - t)
    return times


def tiny_sevenn(directory: Path) -> Path:
    from nlmd.potentials import deploy
    from nlmd.testing import make_tiny_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt = make_tiny_checkpoint(directory / "tiny.pth", ("Sr", "O"))
        return deploy(ckpt, directory / "tiny", parallel=False, verify=False, echo=lambda s: None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--potential", type=Path, default=REPO / "potentials" / "sro-rigid-ion")
    ap.add_argument("--tiny-sevenn", action="store_true", help="deploy and use a tiny random SevenNet model")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="nlmd-rescore-bench-") as tmp:
        tmp = Path(tmp)
        potential = tiny_sevenn(tmp) if args.tiny_sevenn else args.potential
        frames_path = tmp / "frames.h5"
        write_frames(frames_path, args.frames)
        rescore_s: list[float] = []
        bare_s: list[float] = []
        for _ in range(args.repeat):
            rescore_s += time_rescore(frames_path, potential, tmp / "out.h5")
            bare_s += time_bare_run0(frames_path, potential, args.frames - 1)

    r_med, b_med = statistics.median(rescore_s) * 1e3, statistics.median(bare_s) * 1e3
    r_mean, b_mean = statistics.fmean(rescore_s) * 1e3, statistics.fmean(bare_s) * 1e3
    load = os.getloadavg()[0]
    print(f"potential: {potential.name}; 144 atoms, {args.frames} frames x {args.repeat} repeats; "
          f"load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"rescore per frame      median {r_med:8.2f} ms   mean {r_mean:8.2f} ms")
    print(f"bare `run 0` per frame median {b_med:8.2f} ms   mean {b_mean:8.2f} ms")
    print(f"overhead per frame     median {r_med - b_med:8.2f} ms   mean {r_mean - b_mean:8.2f} ms   "
          f"(target <= {TARGET_MS:g} ms)")
    print(f"ratio rescore / bare run 0 (medians): {r_med / b_med:.3f}")


if __name__ == "__main__":
    main()
