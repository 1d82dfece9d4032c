"""What streaming every step costs: ``nlmd run --every 1`` against the same run with no output.

Two systems, each run alternately without and with streaming, ``--repeats`` times:

1. the 144-atom fixed-core SrO cell (lammps_inputs/sro_rfix.in) with a SevenNet potential:
   potentials/7net-0 when it is deployed, else a tiny random SevenNet model deployed here (cheaper than
   SevenNet-0 per step, so its overhead is an upper bound for SevenNet-0's);
2. 10,976 argon atoms with Lennard-Jones (cutoff 8.5 A, metal units) -- a force field of a few ms per
   step, where the cost of the stream itself shows. (The rigid-ion SrO with Ewald costs seconds per step
   at 10^4 atoms and buck/coul/long + PPPM about one second here: either would hide the writer.)

For each system these variants of the same final run are timed, alternately (the input's set-up and a
warm-up run before it are not):

- ``none``:          the input as ``lmp`` runs it (its own thermo output only);
- ``sample``:        nlmd's sampling (energies and a frame every step, gathered to rank 0), no file;
- ``stream``:        ``nlmd run --every 1``: the same, written to an H5MD file by the writer thread
                     (closing the file included);
- ``sample-noE``:    the sampling of ``nlmd run --no-energies`` (fix store/state), no file;
- ``stream-noE``:    ``nlmd run --every 1 --no-energies``, writer thread;
- ``stream-noE-md``: the same with the writer on the MD thread (no thread).

Two clocks: CPU seconds of this process (``time.process_time``: LAMMPS, the MD thread and the writer
thread together) and wall seconds. The writer thread moves work off the MD thread, so it can only lower
the wall time, never the CPU time; on a shared machine the wall time also measures the other processes.
Overheads are median(variant) / median(none) - 1; the fastest repeat of each (min) is printed too,
since on a busy machine the noise only ever adds time. The summary at the end gives, per system, the
configuration of ``nlmd run`` meant for it (SevenNet: the default, energies being free; Lennard-Jones:
``--no-energies``) against the target, 3 %, on both clocks; the line printed LAST is the ratio to the
target of the larger CPU overhead.

    python bench/streaming_overhead.py [--repeats 5] [--steps-sevenn 100] [--steps-lj 200] [--only sevenn|lj]
                                       [--potential DIR] [--warmup 10] [--variants stream,stream-noE]
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
sys.path.insert(0, str(REPO / "python"))  # a checkout, not necessarily installed

TARGET = 0.03  # overhead of streaming every step

LJ_INPUT = """# 10,976 argon atoms, Lennard-Jones (metal units), NVE
units           metal
atom_style      atomic
boundary        p p p
lattice         fcc 5.26
region          box block 0 14 0 14 0 14
create_box      1 box
create_atoms    1 box
mass            1 39.948
variable        elements string "Ar"
pair_style      lj/cut 8.5
pair_coeff      1 1 0.0104 3.40
neighbor        1.0 bin
timestep        0.002
velocity        all create 100 4928 dist gaussian
fix             nve all nve
thermo          100
run             {warmup}
run             {steps}
"""


def sevenn_potential(workdir: Path, given: Path | None) -> tuple[Path, str]:
    if given is not None:
        return given, f"the potential directory {given}"
    deployed = REPO / "potentials" / "7net-0"
    if (deployed / "manifest.json").is_file():
        return deployed, "SevenNet-0 (potentials/7net-0)"
    from nlmd.deploy import deploy
    from nlmd.testing import make_tiny_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt = make_tiny_checkpoint(workdir / "tiny.pth", ("Sr", "O"))
        deploy(ckpt, workdir / "tiny", parallel=False, verify=False, echo=lambda s: None)
    return workdir / "tiny", "tiny random SevenNet (2 layers; potentials/7net-0 is not deployed)"


def sevenn_input(workdir: Path, steps: int, warmup: int) -> Path:
    """sro_rfix.in with a warm-up run before its final run (TorchScript's first steps are slow)."""
    text = (REPO / "lammps_inputs" / "sro_rfix.in").read_text()
    head, sep, tail = text.rpartition("\nrun ")
    assert sep, "sro_rfix.in has no final run"
    path = workdir / "sro_rfix_bench.in"
    path.write_text(f"{head}\nrun {warmup} post no\nrun {steps}\n")
    return path


def time_none(script, variables: dict[str, str], log: Path) -> tuple[float, float]:
    """The final run without nlmd's sampling: (cpu, wall) seconds of the run command."""
    from nlmd.runtime import open_lammps

    args = [a for k, v in variables.items() for a in ("-var", k, v)]
    with open_lammps(None, log=log, args=args) as lmp:
        lmp.commands_string(script.head)
        c, w = time.process_time(), time.perf_counter()
        lmp.command(script.final_run.text)
        return time.process_time() - c, time.perf_counter() - w


def time_streamed(script, variables: dict[str, str], log: Path, out: Path | None, *, energies: bool = True,
                  thread: bool = True) -> tuple[float, float, int]:
    """The final run streamed every step, to ``out`` (None: sampled and gathered, not written)."""
    from nlmd.h5md import TrajectoryWriter
    from nlmd.md.loop import StreamedRun
    from nlmd.md.stream import TrajectoryStream

    with StreamedRun(script, every=1, variables=variables, log=log, energies=energies) as run:
        run.setup()
        writer = None
        if out is not None:
            writer = TrajectoryWriter(out, parameters=run.parameters(), fixed_core=run.fixed_core, model=run.info.model)
            run.attach(TrajectoryStream(writer, background=thread))
        c, w = time.process_time(), time.perf_counter()
        result = run.stream()
        if writer is not None:
            writer.close()
        return time.process_time() - c, time.perf_counter() - w, result.frames


#: variant -> (energies, writing, writer thread)
VARIANTS = {
    "sample": (True, False, False),
    "stream": (True, True, True),
    "sample-noE": (False, False, False),
    "stream-noE": (False, True, True),
    "stream-noE-md": (False, True, False),
}


def measure(name: str, script, variables: dict[str, str], steps: int, repeats: int,
            workdir: Path, variants: list[str]) -> dict[str, tuple[float, float, float, float]]:
    """Overheads of ``variants`` over ``none``: (cpu median, wall median, cpu min, wall min)."""
    times: dict[str, list[tuple[float, float]]] = {"none": [], **{k: [] for k in variants}}
    frames, sizes = 0, {}
    for r in range(repeats):
        times["none"].append(time_none(script, variables, workdir / f"{name}.none.log"))
        for k in variants:
            energies, writing, thread = VARIANTS[k]
            out = workdir / f"{name}.{k}.h5" if writing else None
            if out is not None:
                out.unlink(missing_ok=True)
            c, w, frames = time_streamed(script, variables, workdir / f"{name}.{k}.log", out, energies=energies,
                                         thread=thread)
            times[k].append((c, w))
            if out is not None:
                sizes[k] = out.stat().st_size
                out.unlink()
        print(f"  [{name} {r + 1}/{repeats}] cpu ms/step: "
              + ", ".join(f"{k} {1e3 * v[-1][0] / steps:.2f}" for k, v in times.items()), flush=True)
    med = {k: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals)) for k, vals in times.items()}
    best = {k: (min(v[0] for v in vals), min(v[1] for v in vals)) for k, vals in times.items()}
    base_cpu, base_wall = med["none"]
    print(f"{name}: {steps} steps, {frames} frames per streamed run; "
          + ", ".join(f"{k} {size / max(frames, 1) / 1e3:.0f} kB/frame" for k, size in sizes.items()))
    print(f"  {'ms/step':14s} {'cpu median':>19s} {'cpu min':>19s} {'wall median':>19s} {'wall min':>19s}")
    for k in med:
        cols = []
        for (value, base) in ((med[k][0], base_cpu), (best[k][0], best["none"][0]),
                              (med[k][1], base_wall), (best[k][1], best["none"][1])):
            cols.append(f"{1e3 * value / steps:8.2f} ({100 * (value / base - 1):+6.1f} %)")
        print(f"  {k:14s} " + "  ".join(cols))
    for clock, i in (("cpu", 0), ("wall", 1)):
        spread = [1e3 * v[i] / steps for v in times["none"]]
        print(f"  (none: {clock} ms/step over repeats {min(spread):.2f}..{max(spread):.2f}: the noise floor)")
    return {k: (med[k][0] / base_cpu - 1, med[k][1] / base_wall - 1, best[k][0] / best["none"][0] - 1,
                best[k][1] / best["none"][1] - 1) for k in med if k != "none"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps-sevenn", type=int, default=100)
    ap.add_argument("--steps-lj", type=int, default=200)
    ap.add_argument("--only", choices=("sevenn", "lj"), default=None)
    ap.add_argument("--potential", type=Path, default=None,
                    help="potential directory for the 144-atom cell (default: potentials/7net-0, else a tiny model)")
    ap.add_argument("--warmup", type=int, default=10, help="steps run before the timed run (SevenNet warm-up)")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated variants timed beside `none` (default: all of {', '.join(VARIANTS)})")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from nlmd.md.script import InputScript

    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f}; repeats {args.repeats}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        workdir = Path(tmp)
        results: dict[str, tuple[str, dict[str, tuple[float, float, float, float]]]] = {}
        if args.only in (None, "sevenn"):
            pot, label = sevenn_potential(workdir, args.potential)
            print(f"1. 144-atom fixed-core SrO, {label}")
            script = InputScript.read(sevenn_input(workdir, args.steps_sevenn, warmup=args.warmup))
            variables = {"potential": str(pot), "every": "10", "prefix": str(workdir / "sevenn"), "rfix": "5.82"}
            results["144-atom SevenNet"] = ("stream", measure("sevenn", script, variables, args.steps_sevenn,
                                                                args.repeats, workdir, variants))
        if args.only in (None, "lj"):
            print("2. 10,976-atom Lennard-Jones argon")
            path = workdir / "lj.in"
            path.write_text(LJ_INPUT.format(warmup=20, steps=args.steps_lj))
            results["10,976-atom LJ"] = ("stream-noE", measure("lj", InputScript.read(path), {}, args.steps_lj,
                                                               args.repeats, workdir, variants))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    overheads: dict[str, float] = {}
    for name, (variant, o) in results.items():
        if variant not in o:
            print(f"{name}: {variant} not timed (--variants)")
            continue
        cpu, wall, cpu_min, wall_min = o[variant]
        meets = lambda x: "meets" if x <= TARGET else "misses"  # noqa: E731
        print(f"overhead of streaming every step, {name} ({variant}): cpu {100 * cpu:+.1f} % ({meets(cpu)} "
              f"{100 * TARGET:.0f} %), wall {100 * wall:+.1f} % ({meets(wall)} it); fastest repeats: cpu "
              f"{100 * cpu_min:+.1f} %, wall {100 * wall_min:+.1f} %")
        overheads[name] = cpu
    if not overheads:
        return
    worst = max(overheads, key=overheads.get)
    print(f"ratio to target (worst case, {worst}, cpu): {overheads[worst] / TARGET:.2f} "
          f"(overhead {100 * overheads[worst]:.1f} % / target {100 * TARGET:.0f} %; <= 1 meets it)")


if __name__ == "__main__":
    main()
