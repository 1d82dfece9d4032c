"""Time per MD step: pair_style e3gnn in LAMMPS against SevenNet's ASE calculator, and both against the floor.

For each model (a tiny random SevenNet and SevenNet-0) and each cell (displaced rocksalt SrO, 216 atoms and
1440 atoms by default), three things are timed with the same checkpoint, structure and torch thread count:

  lammps  NVE MD through LAMMPS (`pair_style e3gnn`, the potential directory nlmd deploy writes, i.e. the
          AOTInductor package deployed_serial.pt2), in-process through the lammps module the way `nlmd run`
          drives it; time per step = LAMMPS's own loop time (`thermo` keyword `cpu`) divided by the steps of
          that run. The LAMMPS worker process never imports torch itself, so libtorch runs with whatever
          threads the pair style gives it, as under `lmp`.
  lammps_ts  the same with pair_style e3gnn on the TorchScript file deployed_serial.pt (`nlmd deploy
          --no-aot`), in its own worker process.
  ase     velocity Verlet in ASE with `SevenNetCalculator(checkpoint, device="cpu")`, wall time per step,
          torch.set_num_threads(--threads).
  floor   the model alone on a graph built once (SevenNet's own graph builder), in the ASE process:
          floor_aot   = the AOTInductor package (what `lammps` runs): energy and d(energy)/d(edge_vec),
          floor_ts    = the deployed TorchScript file (what `lammps_ts` runs): forward + d(energy)/d(edge_vec),
          floor_eager = SevenNet's Python model as the calculator holds it: forward incl. forces and stress.
          LAMMPS's overhead is lammps / floor_aot (and lammps_ts / floor_ts). Also timed, as a lever not taken: floor_ts_opt, the same file
          under torch's default profiling executor (graph optimisation on) on this fixed graph - a best case
          for it, as MD changes the edge count at every step.

The machines this runs on are shared and noisy, so the measurements are interleaved: both workers stay alive
and the parent alternates lammps, ase, floor, lammps, ase, floor ... for --rounds rounds of --steps steps;
the figure of each is the median over rounds of the per-step time. Warm-up (model load, first steps) is
done before the first round and reported separately (see also bench/warmup.py).

    python bench/pair_vs_ase.py                          # tiny + SevenNet-0, 216 and 1440 atoms (~15 min)
    python bench/pair_vs_ase.py --models tiny --cells 3  # quick

The last line printed is the ratio the issue asks for: LAMMPS time per step / ASE time per step (the worst
case over the models and cells measured), and LAMMPS's overhead over the floor (lammps / floor_aot).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
TAG = "@@nlmd-bench "


# ----------------------------------------------------------------------------------------------- set-up


def build_cell(reps: tuple[int, int, int], seed: int = 0):
    import numpy as np
    from ase.build import bulk

    atoms = bulk("SrO", "rocksalt", a=5.2, cubic=True).repeat(reps)
    atoms.positions += np.random.default_rng(seed).normal(0.0, 0.08, atoms.positions.shape)
    atoms.wrap()
    return atoms


def prepare_model(work: Path, name: str) -> tuple[Path, Path, Path]:
    """(checkpoint, potential directory, its TorchScript-only twin) for 'tiny' or '7net-0', deployed once
    into the work directory (with the AOTInductor package: minutes for SevenNet-0)."""
    import shutil
    import warnings

    from nlmd.deploy import deploy, pair_lines, resolve_checkpoint

    pot = work / name
    if name == "tiny":
        from nlmd.testing import make_tiny_checkpoint

        checkpoint = work / "tiny.pth"
        if not checkpoint.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                make_tiny_checkpoint(checkpoint)
    else:
        checkpoint, _ = resolve_checkpoint(name)
    if not (pot / "manifest.json").exists() or not (pot / "deployed_serial.pt2").exists():
        deploy(checkpoint, pot, parallel=False, aot=True, verify=False, force=True, echo=print)
    if not (pot / "deployed_serial.pt2").exists():
        raise SystemExit(f"{pot}: the AOTInductor compilation failed, see the manifest")
    twin = work / f"{name}-torchscript"
    if not (twin / "pair.lmp").exists():
        twin.mkdir(exist_ok=True)
        shutil.copy(pot / "deployed_serial.pt", twin / "deployed_serial.pt")
        manifest = json.loads((pot / "manifest.json").read_text()) | {"aot": None}
        (twin / "pair.lmp").write_text(pair_lines(manifest))
    return checkpoint, pot, twin


# ---------------------------------------------------------------------------------------------- workers


def reply(obj: dict) -> None:
    sys.stdout.write(TAG + json.dumps(obj) + "\n")
    sys.stdout.flush()


def lammps_worker(args) -> None:
    """Serve 'run N' requests on one LAMMPS instance (no torch imported in this process)."""
    import ase.io

    from nlmd.runtime import commands, open_lammps

    data = Path(args.work) / f"cell_{args.cell}.data"
    log = Path(args.work) / f"lammps_{args.model}_{args.cell}.log"
    with open_lammps(log=log) as lmp:
        atoms = ase.io.read(data, format="lammps-data", atom_style="atomic")
        t0 = time.perf_counter()
        commands(lmp, f"""
            units metal
            atom_style atomic
            atom_modify map yes
            boundary p p p
            read_data {data}
            mass 1 87.62
            mass 2 15.999
            variable potential string {args.pot}
            variable elements string "Sr O"
            include {args.pot}/pair.lmp
            """)
        t_load = time.perf_counter() - t0
        commands(lmp, """
            neighbor 1.0 bin
            neigh_modify every 1 delay 0 check yes
            velocity all create 1000 4928 loop geom
            fix nve all nve
            timestep 0.002
            thermo_style custom step pe cpu
            """)
        t0 = time.perf_counter()
        commands(lmp, "run 0 post no")
        t_first = time.perf_counter() - t0
        reply({"natoms": len(atoms), "load_s": t_load, "first_force_s": t_first})
        for line in sys.stdin:
            req = json.loads(line)
            if req["op"] == "quit":
                break
            n = int(req["n"])
            c0 = time.process_time()
            commands(lmp, f"thermo {n}\nrun {n} post no")
            cpu = time.process_time() - c0  # includes the run's set-up (one more force evaluation)
            loop = float(lmp.last_thermo()["CPU"])  # LAMMPS's loop time at the run's last step
            reply({"s_per_step": loop / n, "cpu_per_step": cpu / (n + 1)})


def ase_worker(args) -> None:
    """Serve 'md N' (ASE velocity Verlet) and 'floor N' (model on a prebuilt graph) requests."""
    import warnings

    import ase.io
    import numpy as np
    import torch
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.calculator import SevenNetCalculator
    from sevenn.train.dataload import unlabeled_atoms_to_graph

    atoms = ase.io.read(Path(args.work) / f"cell_{args.cell}.data", format="lammps-data", atom_style="atomic")
    atoms.set_chemical_symbols(["Sr" if z == 1 else "O" for z in atoms.get_atomic_numbers()])
    atoms.pbc = True
    t0 = time.perf_counter()
    calc = SevenNetCalculator(args.checkpoint, device="cpu")
    atoms.calc = calc
    t_load = time.perf_counter() - t0
    MaxwellBoltzmannDistribution(atoms, temperature_K=1000, rng=np.random.default_rng(4928))
    dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs)
    t0 = time.perf_counter()
    atoms.get_forces()
    t_first = time.perf_counter() - t0

    # the floor: one graph of the starting structure, built once
    graph = unlabeled_atoms_to_graph(atoms, calc.cutoff, with_shift=False)
    model = calc.model
    ts = torch.jit.load(str(Path(args.pot) / "deployed_serial.pt"), map_location="cpu")
    ts.eval()
    tmap = calc.type_map
    g0 = AtomGraphData.from_numpy_dict(dict(graph))  # (converts the dict it is given in place)
    ts_inputs = {
        "x": torch.tensor([tmap[int(z)] for z in graph["x"]], dtype=torch.int64),
        "edge_index": g0["edge_index"].to(torch.int64),
        "edge_vec": g0["edge_vec"].to(torch.float32),
        "num_atoms": torch.tensor([len(atoms)], dtype=torch.int64),
        "nlocal": torch.tensor([len(atoms)], dtype=torch.int64),
    }

    aot = torch._inductor.aoti_load_package(str(Path(args.pot) / "deployed_serial.pt2"))
    aot_inputs = (ts_inputs["x"], ts_inputs["edge_index"], ts_inputs["edge_vec"])

    ts_opt = torch.jit.load(str(Path(args.pot) / "deployed_serial.pt"), map_location="cpu")  # own executor
    ts_opt.eval()

    def run_ts(module, optimize: bool):
        # optimize=False: the executor setting of the pair style (and of SevenNet's); True: torch's default
        torch._C._set_graph_executor_optimize(optimize)
        try:
            inp = dict(ts_inputs)
            inp["edge_vec"] = ts_inputs["edge_vec"].clone().requires_grad_(True)
            e = module(inp)["inferred_total_energy"].squeeze()
            torch.autograd.grad([e], [inp["edge_vec"]])
        finally:
            torch._C._set_graph_executor_optimize(False)

    def floor_ts():
        run_ts(ts, False)

    def floor_ts_opt():
        run_ts(ts_opt, True)

    def floor_eager():
        model(AtomGraphData.from_numpy_dict(dict(graph)))

    def floor_aot():
        aot(*aot_inputs)

    floors = [("aot", floor_aot), ("ts", floor_ts), ("eager", floor_eager)] + ([] if args.no_opt_floor else [("ts_opt", floor_ts_opt)])
    for _ in range(args.warmup if args.no_opt_floor else max(3, args.warmup)):  # profiling executor: 3 runs
        for _, fn in floors:
            fn()
    reply({"natoms": len(atoms), "load_s": t_load, "first_force_s": t_first, "threads": torch.get_num_threads(),
           "edges": int(graph["edge_index"].shape[1])})
    for line in sys.stdin:
        req = json.loads(line)
        op, n = req["op"], int(req.get("n", 0))
        if op == "quit":
            break
        if op == "md":
            t0, c0 = time.perf_counter(), time.process_time()
            dyn.run(n)
            reply({"s_per_step": (time.perf_counter() - t0) / n, "cpu_per_step": (time.process_time() - c0) / n})
        elif op == "floor":
            times = {}
            for label, fn in floors:
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(n):
                    fn()
                times[label] = (time.perf_counter() - t0) / n
                times["cpu_" + label] = (time.process_time() - c0) / n
            reply(times)


class Worker:
    def __init__(self, kind: str, args, model: str, cell: str, checkpoint: Path, pot: Path, env_extra=None):
        cmd = [sys.executable, str(HERE), "--worker", kind, "--work", str(args.work), "--model", model, "--cell", cell,
               "--checkpoint", str(checkpoint), "--pot", str(pot), "--threads", str(args.threads),
               "--warmup", str(args.warmup)] + (["--no-opt-floor"] if args.no_opt_floor else [])
        env = dict(os.environ)
        env.update(env_extra or {})
        env = {k: v for k, v in env.items() if v != ""}  # KEY= removes KEY
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.kind = kind
        self.hello = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
        raise SystemExit(f"the {self.kind} worker stopped (rc {self.proc.wait()})")

    def ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write('{"op": "quit"}\n')
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()


# ------------------------------------------------------------------------------------------------- main


def kv(pairs) -> dict:
    return dict(p.split("=", 1) for p in pairs)


def measure(args, model: str, cell: str, checkpoint: Path, pot: Path, twin: Path, steps: int) -> dict:
    env = {"NLMD_TORCH_THREADS": str(args.threads), **kv(args.lammps_env)}
    lmp = Worker("lammps", args, model, cell, checkpoint, pot, env)
    lmp_ts = Worker("lammps", args, model, cell, checkpoint, twin, env)
    before = None
    if args.before:
        before = Worker("lammps", args, model, cell, checkpoint, pot,
                        {"NLMD_PLUGIN_DIR": str(args.before), **kv(args.before_env)})
    for _ in range(args.warmup):  # warm-up steps, untimed
        lmp.ask(op="run", n=1)
        lmp_ts.ask(op="run", n=1)
        if before:
            before.ask(op="run", n=1)
    ase = Worker("ase", args, model, cell, checkpoint, pot)
    ase.ask(op="md", n=args.warmup)
    rows = {"lammps": [], "lammps_ts": [], "ase": [], "floor_aot": [], "floor_ts": [], "floor_eager": []}
    if not args.no_opt_floor:
        rows["floor_ts_opt"] = []
    if before:
        rows["lammps_before"] = []
    cpu = {k: [] for k in rows}
    for r in range(args.rounds):
        got = [("lammps", lmp.ask(op="run", n=steps)), ("lammps_ts", lmp_ts.ask(op="run", n=steps))]
        if before:
            got.append(("lammps_before", before.ask(op="run", n=steps)))
        b = ase.ask(op="md", n=steps)
        fl = ase.ask(op="floor", n=steps)
        got += [("ase", b), ("floor_aot", {"s_per_step": fl["aot"], "cpu_per_step": fl["cpu_aot"]}), ("floor_ts", {"s_per_step": fl["ts"], "cpu_per_step": fl["cpu_ts"]}),
                ("floor_eager", {"s_per_step": fl["eager"], "cpu_per_step": fl["cpu_eager"]})]
        if "ts_opt" in fl:
            got.append(("floor_ts_opt", {"s_per_step": fl["ts_opt"], "cpu_per_step": fl["cpu_ts_opt"]}))
        for k, d in got:
            rows[k].append(d["s_per_step"])
            cpu[k].append(d["cpu_per_step"])
        print(f"    round {r + 1}: wall " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in rows.items()) + " s/step; cpu "
              + ", ".join(f"{k} {v[-1]:.4f}" for k, v in cpu.items()), flush=True)
    lmp.close()
    lmp_ts.close()
    ase.close()
    if before:
        before.close()
    med = {k: statistics.median(v) for k, v in rows.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    floor = med["floor_aot"]
    return {
        "model": model, "cell": cell, "natoms": lmp.hello["natoms"], "edges": ase.hello["edges"],
        "threads_ase": ase.hello["threads"], "steps_per_round": steps, "rounds": rows, "median_s_per_step": med,
        "rounds_cpu": cpu, "median_cpu_s_per_step": med_cpu, "cpu_ratio_lammps_ase": med_cpu["lammps"] / med_cpu["ase"],
        "lammps_load_s": lmp.hello["load_s"], "lammps_first_force_s": lmp.hello["first_force_s"],
        "ase_load_s": ase.hello["load_s"], "ase_first_force_s": ase.hello["first_force_s"],
        "ratio_lammps_ase": med["lammps"] / med["ase"], "floor": floor,
        "lammps_over_floor": med["lammps"] / floor, "ase_over_floor": med["ase"] / med["floor_eager"],
        "cpu_lammps_over_floor": med_cpu["lammps"] / med_cpu["floor_aot"],
        "ratio_lammps_ts_ase": med["lammps_ts"] / med["ase"], "cpu_ratio_lammps_ts_ase": med_cpu["lammps_ts"] / med_cpu["ase"],
        "lammps_ts_over_floor_ts": med["lammps_ts"] / med["floor_ts"],
        "cpu_lammps_ts_over_floor_ts": med_cpu["lammps_ts"] / med_cpu["floor_ts"],
        **({"lammps_before_first_force_s": before.hello["first_force_s"],
            "ratio_before_ase": med["lammps_before"] / med["ase"],
            "cpu_ratio_before_ase": med_cpu["lammps_before"] / med_cpu["ase"]} if before else {}),
    }


def versions() -> dict:
    from importlib.metadata import version

    out = {}
    for pkg in ("nlmd", "torch", "sevenn", "lammps", "ase"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            out[pkg] = "?"
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["tiny", "7net-0"])
    p.add_argument("--cells", nargs="+", default=["3x3x3", "6x6x5"], help="conventional rocksalt cells (8 atoms each)")
    p.add_argument("--steps", type=int, default=5, help="steps per round (tiny model: x4)")
    p.add_argument("--steps-large", type=int, default=2, help="steps per round for SevenNet-0 on cells > 500 atoms")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the first round")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for ASE and the floor")
    p.add_argument("--lammps-env", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra environment for the LAMMPS worker, which gets NLMD_TORCH_THREADS=--threads unless "
                        "given here (NLMD_TORCH_THREADS= : the pair style's own default)")
    p.add_argument("--no-opt-floor", action="store_true", help="skip floor_ts_opt (saves time on large cells)")
    p.add_argument("--before", type=Path, default=None, metavar="DIR",
                   help="also time a second LAMMPS worker with the nlmdplugin.so in DIR (e.g. a build of the "
                        "previous version), interleaved with the others")
    p.add_argument("--before-env", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra environment for the --before worker (e.g. OMP_NUM_THREADS=2)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nlmd_bench_pair_vs_ase")
    p.add_argument("--json", type=Path, default=None, help="summary file (default: WORK/pair_vs_ase.json)")
    p.add_argument("--worker", choices=["lammps", "ase"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--cell", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--pot", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "lammps":
        lammps_worker(args)
        return 0
    if args.worker == "ase":
        ase_worker(args)
        return 0

    import ase.io

    args.work.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    print(f"versions: {versions()}; {os.cpu_count()} cores; load average {load0[0]:.2f} {load0[1]:.2f} "
          f"{load0[2]:.2f}", flush=True)
    results = []
    for cell in args.cells:
        reps = tuple(int(x) for x in cell.split("x"))
        atoms = build_cell(reps)
        ase.io.write(args.work / f"cell_{cell}.data", atoms, format="lammps-data", specorder=["Sr", "O"], masses=True)
        for model in args.models:
            checkpoint, pot, twin = prepare_model(args.work, model)
            steps = args.steps * 4 if model == "tiny" else (args.steps_large if len(atoms) > 500 else args.steps)
            print(f"{model} on SrO {cell} ({len(atoms)} atoms), {args.rounds} rounds x {steps} steps:", flush=True)
            r = measure(args, model, cell, checkpoint, pot, twin, steps)
            m = r["median_s_per_step"]
            print(f"  lammps {m['lammps']:.4f}  lammps_ts {m['lammps_ts']:.4f}  ase {m['ase']:.4f}  floor_aot "
                  f"{r['floor']:.4f} (ts {m['floor_ts']:.4f}, eager {m['floor_eager']:.4f}) s/step;  lammps/ase "
                  f"{r['ratio_lammps_ase']:.3f} (lammps_ts/ase {r['ratio_lammps_ts_ase']:.3f}), lammps/floor_aot "
                  f"{r['lammps_over_floor']:.3f}, lammps_ts/floor_ts {r['lammps_ts_over_floor_ts']:.3f}, ase/floor_eager "
                  f"{r['ase_over_floor']:.3f}; first force: lammps "
                  f"{r['lammps_first_force_s']:.2f} s, ase {r['ase_first_force_s']:.2f} s; CPU time per step lammps/ase "
                  f"{r['cpu_ratio_lammps_ase']:.3f}, lammps/floor {r['cpu_lammps_over_floor']:.3f}", flush=True)
            if "ratio_before_ase" in r:
                print(f"  before: lammps {m['lammps_before']:.4f} s/step, before/ase {r['ratio_before_ase']:.3f} "
                      f"(CPU time {r['cpu_ratio_before_ase']:.3f}); first force {r['lammps_before_first_force_s']:.2f} s",
                      flush=True)
            results.append(r)
    load1 = os.getloadavg()
    summary = {"versions": versions(), "cores": os.cpu_count(), "threads": args.threads,
               "load_average_start": load0, "load_average_end": load1, "lammps_env": args.lammps_env,
               "results": results}
    out = args.json or args.work / "pair_vs_ase.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"summary: {out}; load average at the end {load1[0]:.2f}")
    worst = max(results, key=lambda r: r["ratio_lammps_ase"])
    over = max(results, key=lambda r: r["lammps_over_floor"])
    print(f"ratio lammps/ase (worst: {worst['model']}, {worst['natoms']} atoms) = {worst['ratio_lammps_ase']:.3f}; "
          f"lammps/floor_aot (worst: {over['model']}, {over['natoms']} atoms) = {over['lammps_over_floor']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
