"""Is `mpirun -np 2` faster than one rank? pair_style e3gnn/parallel on 2 ranks against the serial package.

Default (`--mode package`, issue 13): SevenNet-0 through a deployed potential directory (`nlmd deploy`,
default potentials/7net-0, which must hold the compiled layers deployed_parallel/layer_*.pt2), a displaced
rocksalt SrO cell of 5x5x5 conventional cells (1000 atoms), one torch thread per rank. Runs, repeated in
rounds and interleaved so that each round sees about the same load:
  - 1 rank, `e3gnn` with the AOTInductor package (deployed_serial.pt2): the fastest one-rank choice;
  - 1 rank, `e3gnn` with the TorchScript file (deployed_serial.pt);
  - 1 rank, `e3gnn/parallel` with the compiled layers (no partner to exchange with);
  - 2 ranks, `e3gnn/parallel` with the compiled layers (what pair.lmp runs on 2 ranks);
  - 2 ranks, `e3gnn/parallel torchscript` (the TorchScript layers: what 2 ranks ran before the compiled ones).
For each: wall s/step (LAMMPS loop time / steps), CPU s/step per rank (loop time x LAMMPS's "% CPU use"),
and LAMMPS's timer breakdown. The CPU times split the 2-rank-vs-package ratio into its factors: the compiled
layers against the compiled whole model (1 rank), and what the second rank gives. The last line printed is
the ratio: 1-rank package s/step over 2-rank e3gnn/parallel (compiled layers) s/step (target >= 1.6).

    python bench/parallel_scaling.py                            # SevenNet-0, 1000 atoms, 2 rounds
    python bench/parallel_scaling.py --reps 6 --rounds 3 --steps 3

`--mode ghosts` is the earlier study: strong scaling of e3gnn/parallel on 1 and 2 MPI ranks and the cost of
ghost shells L cutoffs deep:

A displaced rocksalt SrO cell (8x8x8 conventional cells = 4096 atoms by default) runs with a tiny random
model and with SevenNet-0 (5 layers, 5 A cutoff). For each model:
  - time per MD step on 1 rank (all cores as torch threads) and on 2 ranks (threads = cores / ranks, so that
    the ranks do not oversubscribe), and the speedup (for the tiny model also 1 rank on 1 thread: torch's
    intra-op threads help little on small tensors, which makes the rank speedup look superlinear);
  - the 2-rank run again with the ghost cutoff at layers x cutoff + skin (`comm_modify cutoff`), the shell
    a scheme without layer-wise exchange would need. e3gnn/parallel only puts the ghosts within one cutoff
    of a local atom into its graph, so the measured difference is the cost of exchanging and neighbour-
    binning the deeper shell; the model work such a scheme would add (it must evaluate every layer on all
    the atoms of that shell) is reported from the atom counts: (local + deep ghosts) / local.

Each run: 1 warm-up step (TorchScript warm-up, neighbour lists), then `--steps` timed steps; the time per
step is LAMMPS's loop time of the timed run divided by its steps. A JSON summary is written next to the logs.

    python bench/parallel_scaling.py --mode ghosts                  # both models (SevenNet-0: minutes)
    python bench/parallel_scaling.py --mode ghosts --models tiny    # the tiny model only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

def build_cell(reps: int, path: Path) -> int:
    import ase.io
    from ase.build import bulk

    atoms = bulk("SrO", "rocksalt", a=5.2, cubic=True).repeat((reps, reps, reps))
    atoms.positions += np.random.default_rng(0).normal(0.0, 0.1, atoms.positions.shape)
    atoms.wrap()
    ase.io.write(path, atoms, format="lammps-data", specorder=["Sr", "O"], masses=True)
    return len(atoms)


def deploy_models(work: Path, which: list[str]) -> dict[str, dict]:
    """Parallel deployments (cached in the work directory): name -> {dir, layers, cutoff}."""
    import torch
    from sevenn.scripts.deploy import deploy_parallel

    models = {}
    for name in which:
        d = work / name / "deployed_parallel"
        d.parent.mkdir(parents=True, exist_ok=True)
        if name == "tiny":
            from nlmd.testing import make_tiny_checkpoint

            layers, cutoff = 2, 4.0
            if not d.exists():
                pth = make_tiny_checkpoint(work / name / "model.pth", num_layers=layers, cutoff=cutoff)
                deploy_parallel(str(pth), str(d))
        elif name == "7net-0":
            import sevenn.util

            pth = sevenn.util.pretrained_name_to_path("7net-0")
            cp = sevenn.util.load_checkpoint(pth)
            layers, cutoff = int(cp.config["num_convolution_layer"]), float(cp.config["cutoff"])
            if not d.exists():
                deploy_parallel(str(pth), str(d))
        else:
            raise SystemExit(f"unknown model {name!r} (tiny, 7net-0)")
        models[name] = {"dir": d, "layers": layers, "cutoff": cutoff}
    del torch
    return models


def run(work: Path, label: str, nprocs: int, threads: int, model: dict, data: Path, steps: int, ghost_cut: float | None,
        pair: str | None = None) -> dict:
    from nlmd.runtime import executable, plugin_environment

    skin = 1.0
    comm = f"comm_modify cutoff {ghost_cut:.3f}" if ghost_cut else ""
    pair = pair or f"pair_style e3gnn/parallel\npair_coeff * * {model['layers']} {model['dir']} Sr O"
    text = f"""
units metal
atom_style atomic
read_data {data}
{pair}
neighbor {skin} bin
{comm}
velocity all create 2000 12345 loop geom
fix nve all nve
timestep 0.001
thermo 1
run 1
run {steps}
"""
    inp = work / f"{label}.in"
    log = work / f"{label}.log"
    inp.write_text(text)
    env = plugin_environment()
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "NLMD_TORCH_THREADS": str(threads)})
    cmd = [executable("mpirun"), "-np", str(nprocs), executable("lmp"), "-in", str(inp), "-log", str(log), "-screen", "none"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = log.read_text() if log.exists() else ""
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed (rc {proc.returncode}):\n{out[-2000:]}\n{proc.stderr[-2000:]}")
    loops = re.findall(r"Loop time of ([\d.eE+-]+) on (\d+) procs for (\d+) steps", out)
    loop, _, nsteps = loops[-1]
    nghost = re.findall(r"Nghost:\s+([\d.eE+-]+) ave\s+([\d.eE+-]+) max", out)[-1]
    nlocal = re.findall(r"Nlocal:\s+([\d.eE+-]+) ave", out)[-1]
    cpu_use = re.findall(r"([\d.]+)% CPU use with", out)
    # the timer table of the last run: section | min | avg | max | %varavg | %total
    timers = {m[0]: float(m[1]) / int(nsteps)
              for m in re.findall(r"^(Pair|Neigh|Comm|Output|Modify|Other)\s*\|\s*[\d.eE+-]+\s*\|\s*([\d.eE+-]+)",
                                  out.split("Loop time of")[-1], flags=re.M)}
    return {
        "cpu_s_per_step": float(loop) / int(nsteps) * float(cpu_use[-1]) / 100 if cpu_use else None,
        "timers_avg_s_per_step": timers,
        "label": label,
        "ranks": nprocs,
        "threads_per_rank": threads,
        "ghost_cutoff": ghost_cut,
        "s_per_step": float(loop) / int(nsteps),
        "warmup_and_setup_s": wall - float(loop),
        "nlocal_ave": float(nlocal),
        "nghost_ave": float(nghost[0]),
        "nghost_max": float(nghost[1]),
        "log": str(log),
    }


def package_vs_parallel(args) -> int:
    """1-rank e3gnn (package, TorchScript), 1- and 2-rank e3gnn/parallel; one thread per rank; in rounds."""
    pot = args.potential.resolve()
    manifest = json.loads((pot / "manifest.json").read_text())
    layer_files = sorted((pot / "deployed_parallel").glob("layer_*.pt2"))
    if not manifest.get("aot") or not manifest.get("parallel") or not layer_files:
        raise SystemExit(f"{pot} needs the AOTInductor package, the parallel deployment and its compiled layers "
                         "(deployed_parallel/layer_*.pt2): nlmd deploy")
    reps, steps = args.reps or 5, args.steps or 2
    work = args.work / "package"
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"sro_{reps}.data"
    natoms = build_cell(reps, data)
    layers = manifest["num_layers"]
    par = f"pair_coeff * * {layers} {pot}/deployed_parallel Sr O"
    configs = [
        ("e3gnn package, 1 rank", 1, f"pair_style e3gnn\npair_coeff * * {pot}/deployed_serial.pt2 Sr O"),
        ("e3gnn TorchScript, 1 rank", 1, f"pair_style e3gnn\npair_coeff * * {pot}/deployed_serial.pt Sr O"),
        ("e3gnn/parallel compiled, 1 rank", 1, f"pair_style e3gnn/parallel\n{par}"),
        ("e3gnn/parallel compiled, 2 ranks", 2, f"pair_style e3gnn/parallel\n{par}"),
        ("e3gnn/parallel TorchScript, 2 ranks", 2, f"pair_style e3gnn/parallel torchscript\n{par}"),
    ]
    model = {"layers": layers, "dir": pot / "deployed_parallel"}
    print(f"cell: SrO {reps}^3 conventional cells, {natoms} atoms; {manifest['name']}; 1 thread per rank; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    runs = {key: [] for key, _, _ in configs}
    for rnd in range(args.rounds):
        for key, nprocs, pair in configs:
            label = key.split(",")[0].replace(" ", "_").replace("/", "_") + f"_{nprocs}r_round{rnd}"
            r = run(work, label, nprocs, 1, model, data, steps, None, pair)
            r["load_average"] = os.getloadavg()[0]
            runs[key].append(r)
            t = r["timers_avg_s_per_step"]
            print(f"round {rnd}  {key:36s}: {r['s_per_step']:7.2f} s/step wall, {r['cpu_s_per_step'] or 0:7.2f} s CPU "
                  f"per rank  (Pair {t.get('Pair', 0):.2f}, Comm {t.get('Comm', 0):.3f}, Neigh {t.get('Neigh', 0):.3f}; "
                  f"{r['nlocal_ave']:.0f} local + {r['nghost_ave']:.0f} ghost per rank; load {r['load_average']:.1f})",
                  flush=True)

    def med(key, field):
        return float(np.median([r[field] for r in runs[key]]))

    pkg, ts, par1, par2, par2_ts = (key for key, _, _ in configs)
    summary = {
        "natoms": natoms, "potential": str(pot), "steps": steps, "rounds": args.rounds, "runs": runs,
        "median_s_per_step": {k: med(k, "s_per_step") for k in runs},
        "median_cpu_s_per_step": {k: med(k, "cpu_s_per_step") for k in runs},
    }
    c = summary["median_cpu_s_per_step"]
    summary["factors_cpu"] = {
        "package_over_torchscript": c[pkg] / c[ts],
        "compiled_layers_1rank_over_package": c[par1] / c[pkg],
        "parallel_2rank_per_rank_over_1rank": c[par2] / c[par1],
    }
    w = summary["median_s_per_step"]
    summary["ratio_torchscript_layers_2rank_over_compiled_2rank"] = w[par2_ts] / w[par2]
    summary["ratio_package_1rank_over_parallel_2rank"] = w[pkg] / w[par2]
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    f = summary["factors_cpu"]
    print(f"CPU time per step, medians: package {c[pkg]:.2f} s, TorchScript {c[ts]:.2f} s, compiled layers 1 rank "
          f"{c[par1]:.2f} s, 2 ranks {c[par2]:.2f} s per rank, TorchScript layers 2 ranks {c[par2_ts]:.2f} s per rank")
    print(f"factors (CPU time): package / TorchScript {f['package_over_torchscript']:.2f}; compiled layers on 1 rank / "
          f"package {f['compiled_layers_1rank_over_package']:.2f}; per rank, 2 ranks / 1 rank "
          f"{f['parallel_2rank_per_rank_over_1rank']:.2f}")
    print(f"2 ranks, compiled layers vs TorchScript layers: "
          f"{summary['ratio_torchscript_layers_2rank_over_compiled_2rank']:.2f}x faster (wall)")
    print(f"summary: {work / 'summary.json'}")
    print(f"2-rank e3gnn/parallel vs 1-rank e3gnn package ({natoms} atoms, 1 thread per rank): "
          f"{summary['ratio_package_1rank_over_parallel_2rank']:.2f}x faster (target 1.6; wall time, medians of "
          f"{args.rounds} rounds)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["package", "ghosts"], default="package")
    p.add_argument("--potential", type=Path, default=Path(__file__).resolve().parent.parent / "potentials" / "7net-0",
                   help="(package) a potential directory with deployed_serial.pt2 and deployed_parallel/")
    p.add_argument("--rounds", type=int, default=2, help="(package) rounds of the five runs")
    p.add_argument("--models", nargs="+", default=["tiny", "7net-0"], help="(ghosts) tiny and/or 7net-0")
    p.add_argument("--reps", type=int, default=None,
                   help="conventional cells per edge (default 5 = 1000 atoms; ghosts: 8 = 4096 atoms)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (package: 2; ghosts, tiny model: 10)")
    p.add_argument("--steps-7net", type=int, default=3, help="(ghosts) timed steps for SevenNet-0")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores to share between the ranks")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nlmd_parallel_scaling",
                   help="models, inputs, logs and summary.json")
    args = p.parse_args(argv)
    if args.mode == "package":
        return package_vs_parallel(args)
    args.reps = args.reps or 8
    args.steps = args.steps or 10

    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / f"sro_{args.reps}.data"
    natoms = build_cell(args.reps, data)
    models = deploy_models(args.work, args.models)
    print(f"cell: SrO {args.reps}^3 conventional cells, {natoms} atoms; {args.cores} cores", flush=True)

    results = {"natoms": natoms, "cores": args.cores, "models": {}}
    for name, model in models.items():
        steps = args.steps_7net if name == "7net-0" else args.steps
        deep = model["layers"] * model["cutoff"] + 1.0
        runs = {}
        plan = [("1 rank", 1, None, args.cores), ("2 ranks", 2, None, None), ("2 ranks, deep ghosts", 2, deep, None)]
        if name == "tiny" and args.cores > 1:  # cheap: also 1 rank on one core, to see what threads give
            plan.insert(1, ("1 rank, 1 thread", 1, None, 1))
        for key, nprocs, ghost, threads in plan:
            threads = threads or max(1, args.cores // nprocs)
            label = f"{name}_{nprocs}r{threads}t" + ("_deep" if ghost else "")
            r = run(args.work, label, nprocs, threads, model, data, steps, ghost)
            runs[key] = r
            print(
                f"{name:7s} {key:21s}: {r['s_per_step']:8.3f} s/step  ({threads} thread(s)/rank, "
                f"{r['nlocal_ave']:.0f} local + {r['nghost_ave']:.0f} ghost atoms per rank)",
                flush=True,
            )
        two, deep_r = runs["2 ranks"], runs["2 ranks, deep ghosts"]
        summary = {
            "layers": model["layers"],
            "cutoff": model["cutoff"],
            "timed_steps": steps,
            "runs": runs,
            "speedup_2_ranks": runs["1 rank"]["s_per_step"] / two["s_per_step"],
            "speedup_2_ranks_over_1_thread": (
                runs["1 rank, 1 thread"]["s_per_step"] / two["s_per_step"] if "1 rank, 1 thread" in runs else None
            ),
            "deep_ghost_time_ratio": deep_r["s_per_step"] / two["s_per_step"],
            "deep_ghost_count_ratio": deep_r["nghost_ave"] / two["nghost_ave"],
            "model_work_without_exchange": (deep_r["nlocal_ave"] + deep_r["nghost_ave"]) / deep_r["nlocal_ave"],
        }
        results["models"][name] = summary
        print(
            f"{name:7s} ghost cutoff {model['layers']} x {model['cutoff']} + 1 = {deep:.1f} A instead of "
            f"{model['cutoff']} + 1 A: {summary['deep_ghost_count_ratio']:.1f}x the ghost atoms, "
            f"{summary['deep_ghost_time_ratio']:.2f}x the time per step with layer-wise exchange; a scheme without "
            f"it would evaluate the model on {summary['model_work_without_exchange']:.1f}x the local atoms",
            flush=True,
        )
    (args.work / "summary.json").write_text(json.dumps(results, indent=2))
    print(f"summary: {args.work / 'summary.json'}")
    for name, s in results["models"].items():
        one_thread = s["speedup_2_ranks_over_1_thread"]
        extra = f", {one_thread:.2f}x over 1 rank on 1 thread" if one_thread else ""
        print(
            f"{name}: 2-rank speedup {s['speedup_2_ranks']:.2f}x over 1 rank with {args.cores} threads{extra} "
            f"({natoms} atoms, {args.cores} cores)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
