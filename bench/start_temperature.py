"""The fixed-core run's start: mobile temperature over the first production picosecond(s), for several seeds.

    python bench/start_temperature.py --potential potentials/7net-0 --seeds 1 2 3 [--window 0.5] [-v NAME VALUE]

Runs ``nlmd run lammps_inputs/sro_rfix.in`` (equilibration, then ``window`` ps of production streamed every
10 steps) per seed and prints, per seed and over all, the mean and the largest mobile temperature of the
production frames with time <= window, as ratios to ``temp``. The target (issue 10): mean within +-10 % of
temp, no frame above 1.5 x temp. Prints the worst ratios last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--potential", default="potentials/sro-rigid-ion")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--window", type=float, default=0.5, help="production time looked at (ps)")
    ap.add_argument("--temp", type=float, default=4000.0)
    ap.add_argument("-v", "--var", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from nlmd.h5md import TrajectoryReader

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out = Path(tmp) / f"seed{seed}.h5"
            cmd = [sys.executable, "-m", "nlmd", "run", str(REPO / "lammps_inputs/sro_rfix.in"), "-o", str(out),
                   "--quiet", "-v", "potential", args.potential, "-v", "seed", str(seed), "-v", "temp",
                   f"{args.temp:g}", "-v", "time", f"{args.window:g}", "-v", "every", "10"]
            for name, value in args.var:
                cmd += ["-v", name, value]
            subprocess.run(cmd, check=True, cwd=REPO)
            with TrajectoryReader(out) as r:
                t = r.times
                temp = r.observable("temperature")
            sel = t <= args.window + 1e-9
            row = {"seed": seed, "frames": int(sel.sum()), "mean_K": float(temp[sel].mean()),
                   "max_K": float(temp[sel].max()), "first_K": float(temp[0])}
            row["mean_ratio"], row["max_ratio"] = row["mean_K"] / args.temp, row["max_K"] / args.temp
            rows.append(row)
            print(f"seed {seed}: {row['frames']} frames in the first {args.window:g} ps: mean {row['mean_K']:.0f} K "
                  f"({row['mean_ratio']:.3f} x temp), max {row['max_K']:.0f} K ({row['max_ratio']:.3f} x temp)",
                  flush=True)
    worst_mean = max(rows, key=lambda r: abs(r["mean_ratio"] - 1.0))["mean_ratio"]
    worst_max = max(r["max_ratio"] for r in rows)
    result = {"potential": args.potential, "temp": args.temp, "window_ps": args.window, "seeds": rows,
              "worst_mean_ratio": worst_mean, "worst_max_ratio": worst_max,
              "target_met": bool(abs(worst_mean - 1.0) <= 0.10 and worst_max <= 1.5)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"worst mean / temp = {worst_mean:.3f} (target 0.90-1.10); worst frame / temp = {worst_max:.3f} "
          f"(target <= 1.5): {'met' if result['target_met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
