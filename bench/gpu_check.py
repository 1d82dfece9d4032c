"""The Python steps of bench/gpu_check.sh (one subcommand per step; each prints one JSON object last).

    python bench/gpu_check.py env
    python bench/gpu_check.py serial POTENTIAL --device cuda [--serial-file deployed_serial.pt]
    mpirun -np 2 python bench/gpu_check.py parallel POTENTIAL --reference serial.npz
    python bench/gpu_check.py timing POTENTIAL --device cuda --atoms 144 --steps 20

`serial` compares pair_style e3gnn (the file given, through the potential's pair.lmp) with SevenNet's
ASE calculator on the same device: nlmd deploy's 64-atom probe (see accuracy_cell). `parallel` evaluates the
same cell on every rank of the MPI job (pair.lmp then selects e3gnn/parallel) and compares with the serial
forces saved by `serial`. `timing` runs, on the experiment's 144-atom fixed-core cell or a rocksalt cell, NVE MD (2 fs, from 1000 K) through LAMMPS and through ASE's
VelocityVerlet with SevenNetCalculator: first force evaluation, then steady steps; ns/day.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DT_FS = 1.0  # the experiment's time step (lammps_inputs/sro_rfix.in: dt 0.001 ps)


def _print(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def cmd_env(_args) -> dict:
    import torch

    out = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
           "torch_cuda": torch.version.cuda, "python": sys.version.split()[0]}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpu_count"] = torch.cuda.device_count()
    try:  # liblammps needs MPICH's libmpi.so.12: an mpi4py built on another MPI would load a second one
        from mpi4py import MPI

        out["mpi_library"] = MPI.Get_library_version().splitlines()[0].strip()
    except Exception as exc:  # noqa: BLE001
        out["mpi_error"] = f"{type(exc).__name__}: {exc}"
    for mod in ("lammps", "sevenn", "ase", "mpi4py", "nlmd"):
        try:
            m = __import__(mod)
            out[f"{mod}_version"] = str(getattr(m, "__version__", "?"))
        except Exception as exc:  # noqa: BLE001 (reported, not raised: this is a probe)
            out[f"{mod}_error"] = f"{type(exc).__name__}: {exc}"
    return out


def probe_cell(seed: int = 3):
    """The paper's 144-atom fixed-core SrO cell (R_fix 5.82 A), as the experiment starts it."""
    from nlmd.structures import build_fixed_core_cell

    atoms = build_fixed_core_cell(seed=seed).atoms.copy()
    atoms.set_constraint()  # the core moves too: LAMMPS and ASE integrate the same atoms
    return atoms


def rocksalt(n_atoms: int, seed: int = 4):
    """A displaced rocksalt SrO supercell with about ``n_atoms`` atoms (8 per conventional cell)."""
    from ase.build import bulk

    reps = max(1, round((n_atoms / 8) ** (1 / 3)))
    nz = max(1, round(n_atoms / 8 / reps**2))
    atoms = bulk("SrO", "rocksalt", a=5.20, cubic=True).repeat((reps, reps, nz))
    atoms.positions += np.random.default_rng(seed).normal(0.0, 0.05, atoms.positions.shape)
    return atoms


def potential_with_serial_file(potential: Path, serial_file: str | None) -> Path:
    """``potential`` itself, or a copy whose pair.lmp names ``serial_file`` for one rank."""
    if serial_file is None:
        return potential
    tmp = Path(tempfile.mkdtemp(prefix="nlmd-gpu-check-"))
    dst = tmp / potential.name
    shutil.copytree(potential, dst, symlinks=True)
    text = (dst / "pair.lmp").read_text()
    for name in ("deployed_serial.pt2", "deployed_serial.pt"):
        text = text.replace(f"${{potential}}/{name}", "${potential}/@SERIAL@")
    (dst / "pair.lmp").write_text(text.replace("@SERIAL@", serial_file))
    return dst


def sevenn_calculator(potential: Path, device: str):
    from sevenn.calculator import SevenNetCalculator

    manifest = json.loads((potential / "manifest.json").read_text())
    model = manifest["provenance"].get("pretrained_name") or manifest["provenance"]["checkpoint"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SevenNetCalculator(model, device=device)


def accuracy_cell():
    """nlmd deploy's probe (64-atom rocksalt SrO, atoms displaced by up to 0.15 A): forces of a few eV/A,
    so that 1e-4 eV/A is a test of the implementation, not of float32 rounding. (The 144-atom fixed-core
    cell has random atoms 1.5 A apart and forces up to ~240 eV/A, where float32 alone gives ~2e-4.)"""
    from nlmd.deploy import probe_structure

    return probe_structure(["Sr", "O"])


def cmd_serial(args) -> dict:
    from nlmd.evaluate import LammpsEvaluator

    atoms = accuracy_cell()
    pot = potential_with_serial_file(Path(args.potential), args.serial_file)
    t0 = time.perf_counter()
    with LammpsEvaluator(pot, ["Sr", "O"], log=args.log) as ev:
        got = ev.evaluate(atoms)
    t_lmp = time.perf_counter() - t0
    ref_atoms = atoms.copy()
    ref_atoms.calc = sevenn_calculator(Path(args.potential), args.device)
    ref_f = ref_atoms.get_forces()
    ref_e = float(ref_atoms.get_potential_energy())
    if args.save:
        np.savez(args.save, forces=got.forces, energy=got.energy)
    df = float(np.abs(got.forces - ref_f).max())
    return {"cell": atoms.get_chemical_formula(), "atoms": len(atoms), "serial_file": args.serial_file or "pair.lmp default", "device": args.device,
            "max_force_diff_vs_sevennet": df, "energy_diff_per_atom": abs(got.energy - ref_e) / len(atoms),
            "max_abs_force": float(np.abs(ref_f).max()), "tolerance": args.tol, "ok": df <= args.tol,
            "lammps_load_and_first_eval_s": round(t_lmp, 3)}


def cmd_parallel(args) -> dict | None:
    from mpi4py import MPI

    from nlmd.evaluate import LammpsEvaluator

    comm = MPI.COMM_WORLD
    atoms = accuracy_cell()
    with LammpsEvaluator(Path(args.potential), ["Sr", "O"], comm=comm, log=args.log) as ev:
        got = ev.evaluate(atoms)
    if comm.rank != 0:
        return None
    ref = np.load(args.reference)
    df = float(np.abs(got.forces - ref["forces"]).max())
    log = Path(args.log).read_text(errors="replace") if args.log and Path(args.log).exists() else ""
    layers = "compiled" if "layers run as AOTInductor" in log else "torchscript" if "layers run as" in log else "?"
    return {"ranks": comm.size, "atoms": len(atoms), "layers": layers, "max_force_diff_vs_serial": df,
            "energy_diff": abs(got.energy - float(ref["energy"])), "tolerance": args.tol, "ok": df <= args.tol}


def time_lammps(potential: Path, atoms, steps: int, log: str | None) -> dict:
    from nlmd.evaluate import LammpsEvaluator
    from nlmd.runtime import commands

    t0 = time.perf_counter()
    with LammpsEvaluator(potential, ["Sr", "O"], log=log) as ev:
        ev.evaluate(atoms)  # set-up, pair_coeff (model load) and the first force evaluation (run 0)
        t_first = time.perf_counter() - t0
        lmp = ev._lmp
        commands(lmp, f"velocity all create 1000 1 mom yes rot yes\nfix nlmd_nve all nve\ntimestep {DT_FS / 1000}\n"
                      "thermo_style one\nrun 2", where="timing")
        t1 = time.perf_counter()
        commands(lmp, f"run {steps}", where="timing")
        t_steady = (time.perf_counter() - t1) / steps
    return {"first_eval_s": round(t_first, 3), "s_per_step": t_steady, "ns_per_day": 86400 / t_steady * DT_FS * 1e-6}


def time_ase(potential: Path, atoms, steps: int, device: str) -> dict:
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    t0 = time.perf_counter()
    atoms.calc = sevenn_calculator(potential, device)
    atoms.get_forces()
    t_first = time.perf_counter() - t0
    MaxwellBoltzmannDistribution(atoms, temperature_K=1000, rng=np.random.default_rng(1))
    dyn = VelocityVerlet(atoms, DT_FS * units.fs)
    dyn.run(2)
    t1 = time.perf_counter()
    dyn.run(steps)
    t_steady = (time.perf_counter() - t1) / steps
    return {"first_eval_s": round(t_first, 3), "s_per_step": t_steady, "ns_per_day": 86400 / t_steady * DT_FS * 1e-6}


def _peak_memory(device: str) -> dict:
    """Peak resident memory of this process so far, and the peak of torch's CUDA allocator since the last
    reset (LAMMPS's libtorch and this Python's torch share it: one process)."""
    import resource

    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device == "cuda":
        import torch

        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        torch.cuda.reset_peak_memory_stats()
    return out


def cmd_timing(args) -> dict:
    atoms = probe_cell() if args.atoms == 144 else rocksalt(args.atoms)
    pot = Path(args.potential)
    out = {"atoms": len(atoms), "steps": args.steps, "device": args.device, "dt_fs": DT_FS}
    out["lammps"] = time_lammps(pot, atoms, args.steps, args.log)
    out["lammps"].update(_peak_memory(args.device))  # LAMMPS runs first: RSS so far is its peak
    if not args.no_ase:
        out["ase"] = time_ase(pot, atoms, args.steps, args.device)
        out["ase"].update({k: v for k, v in _peak_memory(args.device).items() if k != "peak_rss_mib"})
        out["lammps_over_ase_s_per_step"] = out["lammps"]["s_per_step"] / out["ase"]["s_per_step"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env")
    p = sub.add_parser("serial")
    p.add_argument("potential")
    p.add_argument("--device", default="cuda")
    p.add_argument("--serial-file", default=None)
    p.add_argument("--save", default=None)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--log", default=None)
    p = sub.add_parser("parallel")
    p.add_argument("potential")
    p.add_argument("--reference", required=True)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--log", default=None)
    p = sub.add_parser("timing")
    p.add_argument("potential")
    p.add_argument("--device", default="cuda")
    p.add_argument("--atoms", type=int, default=144)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--no-ase", action="store_true")
    p.add_argument("--log", default=None)
    args = ap.parse_args(argv)
    result = {"env": cmd_env, "serial": cmd_serial, "parallel": cmd_parallel, "timing": cmd_timing}[args.cmd](args)
    if result is not None:
        _print(result)
        if result.get("ok") is False:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
