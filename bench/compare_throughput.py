"""Throughput and peak memory of ``nlmd compare`` (target: >= 5e6 atom-frames/s, memory flat in frames).

Builds a model/reference pair of FRAMES x ATOMS (default 1500 x 1000) and one SCALE times longer
(default 10x: 1.7 GB on disk, one pair at a time), then times :func:`nlmd.compare.compare_files` on each in
its own subprocess, so each peak RSS (``resource.getrusage``) is that size's alone. Prints
atom-frames/s, the peak RSS of each size and their ratio, and last the ratio to the target.

    python bench/compare_throughput.py [--frames 1500] [--atoms 1000] [--scale 10] [--dir DIR] [--keep]

Files go to a temporary directory (removed afterwards unless --keep). The first compare of a file runs
right after writing it, so it reads from the page cache: this measures compare, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The parent process imports nothing heavy: on Linux a child's ru_maxrss starts from its parent's RSS
# at fork, so a lean parent keeps each child's peak its own. Building and comparing run in children.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))  # a checkout, not installed

TARGET = 5e6  # atom-frames per second


def build(path_model: Path, path_ref: Path, frames: int, atoms: int) -> float:
    """Write a model/reference pair (forces differ by noise; same positions) and return the seconds taken."""
    import numpy as np

    from nlmd.h5md import FixedCore, Frame, TrajectoryWriter

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    ids = np.arange(1, atoms + 1, dtype=np.int64)
    species = np.where(ids % 2 == 0, 8, 38).astype(np.int32)
    box = np.eye(3) * 13.63 * (atoms / 144) ** (1 / 3)
    core = FixedCore(center_id=atoms // 2, rfix=3.68, core_ids=ids[: atoms // 10])
    base_pos = rng.uniform(0, box[0, 0], size=(atoms, 3))
    with TrajectoryWriter(path_model, fixed_core=core, flush_every=32) as wm, \
            TrajectoryWriter(path_ref, fixed_core=core, flush_every=32) as wr:
        for t in range(frames):
            pos = base_pos + 0.01 * t
            f_ref = rng.standard_normal((atoms, 3))
            f_model = f_ref + 0.05 * rng.standard_normal((atoms, 3))
            obs_r = {"potential_energy": -5.0 * atoms + rng.standard_normal()}
            obs_m = {"potential_energy": obs_r["potential_energy"] + 0.001 * atoms}
            common = dict(step=t, time=0.001 * t, box=box, ids=ids, species=species, positions=pos)
            wm.write(Frame(**common, forces=f_model, observables=obs_m))
            wr.write(Frame(**common, forces=f_ref, observables=obs_r))
    return time.perf_counter() - t0


def child(model: str, ref: str, plot_dir: str | None) -> None:
    """Run one compare in this process and print seconds, peak RSS and the baseline RSS after imports."""
    from nlmd import compare  # noqa: F401 - imports counted in the baseline
    from nlmd.h5md import TrajectoryReader  # noqa: F401

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    rep = compare.compare_files(model, ref, plot_dir=plot_dir)
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({
        "seconds": seconds, "cpu_seconds": cpu, "peak_kb": r1.ru_maxrss, "base_kb": r0.ru_maxrss,
        "atom_frames": rep["n_frames"] * rep["n_atoms"], "rmse": rep["all"]["force_rmse"],
    }))


def run_child(model: Path, ref: Path, plot_dir: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(model), str(ref)]
    if plot_dir is not None:
        cmd += ["--plot-dir", str(plot_dir)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--atoms", type=int, default=1000)
    ap.add_argument("--scale", type=int, default=10, help="the memory check's file is this many times longer")
    ap.add_argument("--repeat", type=int, default=3, help="timing runs on the small pair (best is reported)")
    ap.add_argument("--plot", action="store_true", help="also time a compare that writes the figures")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "REF"), help=argparse.SUPPRESS)
    ap.add_argument("--build", nargs=2, metavar=("MODEL", "REF"), help=argparse.SUPPRESS)
    ap.add_argument("--plot-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.plot_dir)
        return
    if args.build:
        print(build(Path(args.build[0]), Path(args.build[1]), args.frames, args.atoms))
        return

    work = Path(tempfile.mkdtemp(prefix="nlmd-compare-bench-", dir=args.dir))
    try:
        sizes = {"1x": args.frames, f"{args.scale}x": args.frames * args.scale}
        results = {}
        for label, frames in sizes.items():
            m, r = work / f"model_{label}.h5", work / f"ref_{label}.h5"
            out = subprocess.run(
                [sys.executable, __file__, "--build", str(m), str(r), "--frames", str(frames), "--atoms",
                 str(args.atoms)], check=True, capture_output=True, text=True,
            )
            seconds = float(out.stdout.split()[-1])
            mb = (m.stat().st_size + r.stat().st_size) / 2**20
            print(f"{label}: wrote {frames} frames x {args.atoms} atoms ({mb:.0f} MB, pair) in {seconds:.1f} s",
                  flush=True)
            runs = [run_child(m, r) for _ in range(args.repeat if label == "1x" else 1)]
            best = min(runs, key=lambda x: x["seconds"])
            best["cpu_seconds"] = min(x["cpu_seconds"] for x in runs)
            best["peak_kb"] = max(x["peak_kb"] for x in runs)
            results[label] = best
            rate = best["atom_frames"] / best["seconds"]
            print(f"{label}: compare {best['atom_frames']:.3g} atom-frames in {best['seconds']:.3f} s = "
                  f"{rate:.3g} atom-frames/s (CPU {best['cpu_seconds']:.3f} s = "
                  f"{best['atom_frames'] / best['cpu_seconds']:.3g} per CPU-second); peak RSS "
                  f"{best['peak_kb'] / 1024:.1f} MB (after imports {best['base_kb'] / 1024:.1f} MB)", flush=True)
            if args.plot and label == "1x":
                p = run_child(m, r, work / "fig")
                print(f"1x with --plot: {p['seconds']:.3f} s = {p['atom_frames'] / p['seconds']:.3g} atom-frames/s; "
                      f"peak RSS {p['peak_kb'] / 1024:.1f} MB", flush=True)
            m.unlink() if not args.keep else None
            r.unlink() if not args.keep else None

        small, big = results["1x"], results[f"{args.scale}x"]
        ratio = big["peak_kb"] / small["peak_kb"]
        grow = (big["peak_kb"] - big["base_kb"]) / max(1, small["peak_kb"] - small["base_kb"])
        print(f"peak RSS ratio {args.scale}x / 1x: {ratio:.3f} (above the post-import baseline: {grow:.3f})")
        cpu_rates = [x["atom_frames"] / x["cpu_seconds"] for x in results.values()]
        load = os.getloadavg()[0]
        print(f"per CPU-second / target: {min(cpu_rates) / TARGET:.2f} (load average {load:.1f} on "
              f"{os.cpu_count()} cores: wall-clock rates suffer when the machine is shared)")
        rates = [x["atom_frames"] / x["seconds"] for x in results.values()]
        print(f"throughput / target ({TARGET:.0e} atom-frames/s, wall clock, slower size): {min(rates) / TARGET:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
