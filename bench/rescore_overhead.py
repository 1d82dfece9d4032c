"""Per-frame cost of ``nlmd rescore`` beyond the force evaluation (target: <= 10 ms for 144 atoms).

Writes FRAMES frames of the 144-atom fixed-core SrO cell (R_fix = 3.68 A, atoms displaced by 0.05 A
per frame) and, in this one process:

1. rescores them with :func:`nlmd.rescore.rescore_file` (read, broadcast, scatter positions,
   change_box, ``run 0``, gather forces and per-atom energies, write), timing each frame through the
   progress callback;
2. in the same LAMMPS set-up (a :class:`nlmd.evaluate.LammpsEvaluator` on the same potential and
   types, after its first structure) times a bare loop of ``run 0 post no`` — the force evaluation
   alone, neighbour lists and k-space set-up included, as rescore does it.

Inside the rescore the ``run 0`` of every frame is timed too, so the overhead per frame (frame time
minus its own ``run 0``) does not depend on the load of a shared machine drifting between two loops.
Both are also taken as CPU time of the process, which does not count the time other jobs hold the cores.
The rescore and the bare loop are alternated ``--repeat`` times; medians and means per frame are
printed, the overheads (frame - its run 0, wall and CPU; rescore - bare loop) and, last, the ratio of
the mean wall-clock times rescore / its ``run 0``.

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


def time_rescore(frames_path: Path, potential: Path, out: Path) -> dict[str, list[float]]:
    """Seconds per frame of rescore_file and of the ``run 0`` inside each frame, frames 2..F, as wall
    clock ("frame", "run0") and as CPU time of this process ("frame_cpu", "run0_cpu").

    ``run 0`` is timed by wrapping :func:`nlmd.runtime.commands` (the evaluator imports it per call), so
    frame time and force time come from the same frame at the same moment: load on a shared machine
    shifts both alike, and CPU time does not count the time other jobs hold the cores.
    """
    import nlmd.runtime
    from nlmd.rescore import rescore_file

    original = nlmd.runtime.commands
    run0: list[tuple[float, float]] = []

    def timed(lmp, text, **kwargs):
        t, c = time.perf_counter(), time.process_time()
        try:
            return original(lmp, text, **kwargs)
        finally:
            if text == "run 0 post no":
                run0.append((time.perf_counter() - t, time.process_time() - c))

    stamps: list[tuple[float, float]] = []
    nlmd.runtime.commands = timed
    try:
        rescore_file(frames_path, potential, out, force=True,
                     progress=lambda done, total: stamps.append((time.perf_counter(), time.process_time())))
    finally:
        nlmd.runtime.commands = original
    # the first frame sets LAMMPS up (its run 0 is part of a longer command and is not timed here):
    # frames 2..F each have one stamp difference and one run 0
    assert len(run0) == len(stamps) - 1, (len(run0), len(stamps))
    return {
        "frame": [b[0] - a[0] for a, b in zip(stamps, stamps[1:])],
        "frame_cpu": [b[1] - a[1] for a, b in zip(stamps, stamps[1:])],
        "run0": [r[0] for r in run0],
        "run0_cpu": [r[1] for r in run0],
    }


def time_bare_run0(frames_path: Path, potential: Path, n: int) -> list[float]:
    """Seconds per ``run 0 post no`` in an evaluator set up on the first frame, n times."""
    from ase import Atoms

    from nlmd.evaluate import LammpsEvaluator
    from nlmd.h5md import TrajectoryReader
    from nlmd.potential_dir import PotentialDirectory
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
    from nlmd.deploy import deploy
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
        times: dict[str, list[float]] = {"frame": [], "frame_cpu": [], "run0": [], "run0_cpu": [], "bare": []}
        for _ in range(args.repeat):
            for key, values in time_rescore(frames_path, potential, tmp / "out.h5").items():
                times[key] += values
            times["bare"] += time_bare_run0(frames_path, potential, args.frames - 1)

    def ms(xs: list[float]) -> str:
        return f"median {statistics.median(xs) * 1e3:8.2f} ms   mean {statistics.fmean(xs) * 1e3:8.2f} ms"

    over = [a - b for a, b in zip(times["frame"], times["run0"])]
    over_cpu = [a - b for a, b in zip(times["frame_cpu"], times["run0_cpu"])]
    load = os.getloadavg()[0]
    print(f"potential: {potential.name}; 144 atoms, {args.frames} frames x {args.repeat} repeats; "
          f"load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"rescore per frame, wall clock       {ms(times['frame'])}")
    print(f"  its `run 0` (force evaluation)    {ms(times['run0'])}")
    print(f"bare `run 0` loop, same set-up      {ms(times['bare'])}")
    print(f"overhead (frame - its run 0), wall  {ms(over)}   (target <= {TARGET_MS:g} ms)")
    print(f"overhead (frame - its run 0), CPU   {ms(over_cpu)}")
    print(f"overhead (rescore - bare loop)      median {(statistics.median(times['frame']) - statistics.median(times['bare'])) * 1e3:8.2f} ms")
    ratio = statistics.fmean(times["frame"]) / statistics.fmean(times["run0"])
    print(f"ratio rescore / its run 0 (mean wall-clock times per frame): {ratio:.3f}")


if __name__ == "__main__":
    main()
