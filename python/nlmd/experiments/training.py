"""Training sets from reference MD, and SevenNet models trained on them with SevenNet's own trainer.

The recipe of the SrO experiment (Kang 2024, Methods 5.2, with a reference potential in DFT's place):

1. NVT MD of the crystal (``lammps_inputs/sro_crystal_nvt.in``: 2x2x2 rocksalt, a = 5.20 A, 64 atoms) with
   the reference at each training temperature, a frame every ``sample_every`` steps (``nlmd run``);
2. the frames exported with energy, forces and stress (``nlmd export``), every ``stride``-th one kept,
   shuffled with ``seed`` and split 9:1 into ``train.extxyz`` and ``valid.extxyz`` (the paper's ratio);
3. one SevenNet input per number of message-passing layers (``sevenn.yaml``), trained by ``sevenn``;
4. the best-validation checkpoint copied to ``<ship>/<name>/checkpoint.pth`` beside ``training.json``
   (the recipe, the seed, the data size, the epochs and the validation errors) and the ``sevenn.yaml``
   that produced it, so that ``nlmd experiment sro-train`` reproduces it.

nlmd never trains by itself: step 3 is ``sevenn sevenn.yaml -w DIR`` in a child process.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlmd.errors import InputError, NlmdError
from nlmd.experiments import REPO, run_nlmd

__all__ = ["ModelSettings", "Recipe", "RECIPES", "make_training_set", "sevenn_input", "train", "train_models", "ship"]

@dataclass(frozen=True)
class ModelSettings:
    """The SevenNet model and its training: what every recipe shares (``sevenn.yaml``)."""

    seed: int = 1
    valid_fraction: float = 0.1  # the paper's 9:1
    cutoff: float = 5.0
    channel: int = 16  # paper: not stated for SrO (32 for the toy model); 2 cores: 16
    lmax: int = 2  # paper: 3; 2 cores: 2
    is_parity: bool = False  # SevenNet's default (SE(3)); the crystal's rotations still cancel F_center exactly
    epochs: int = 25
    batch_size: int = 4
    lr: float = 0.005
    lr_final: float = 0.0005  # exponential decay from lr to lr_final over the epochs
    force_loss_weight: float = 1.0
    bessel_basis: int = 8  # the paper: trainable Bessel basis of 8, radial MLP 64-64 with SiLU
    radial_hidden: tuple[int, ...] = (64, 64)

    def gamma(self) -> float:
        return float((self.lr_final / self.lr) ** (1.0 / max(1, self.epochs)))


@dataclass(frozen=True)
class Recipe(ModelSettings):
    """Everything that determines a trained SrO model (written to ``training.json`` beside it)."""

    temperatures: tuple[float, ...] = (1000.0, 1600.0, 2500.0)
    md_time_ps: float = 10.0  # per temperature, as the paper
    sample_every: int = 20  # steps of 1 fs: the paper's 20 fs
    stride: int = 4  # keep every stride-th sampled frame (paper: 1; 2 cores: 4)
    reference: str = "potentials/sro-rigid-ion"
    input: str = "lammps_inputs/sro_crystal_nvt.in"


def with_overrides(recipe, **overrides: Any):
    """``recipe`` (any recipe dataclass) with the command line's overrides (those not None)."""
    from dataclasses import replace

    return replace(recipe, **{k: v for k, v in overrides.items() if v is not None})


#: budgets: ``full`` made the shipped models; ``tiny`` is the same code on a test budget
RECIPES: dict[str, Recipe] = {
    "full": Recipe(),
    "tiny": Recipe(md_time_ps=0.2, sample_every=20, stride=1, channel=4, lmax=1, epochs=2, batch_size=4,
                   radial_hidden=(8,)),
}


def make_training_set(recipe: Recipe, out: str | os.PathLike, *, echo=print) -> dict[str, Any]:
    """Steps 1-2: reference MD of the crystal at each temperature -> ``train.extxyz``, ``valid.extxyz``."""
    import ase.io

    from nlmd.export import export_frames

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    md = []
    for k, temp in enumerate(recipe.temperatures):
        h5 = out / f"crystal_{temp:g}K.h5"
        args = ["run", str(REPO / recipe.input), "-o", str(h5), "--force", "--quiet",
                "-v", "potential", str(REPO / recipe.reference), "-v", "temp", f"{temp:g}",
                "-v", "time", f"{recipe.md_time_ps:g}", "-v", "seed", str(recipe.seed + k),
                "-v", "every", str(recipe.sample_every), "-v", "prefix", str(out / f"crystal_{temp:g}K")]
        t0 = time.perf_counter()
        run_nlmd(args)
        xyz = out / f"crystal_{temp:g}K.extxyz"
        res = export_frames(h5, xyz, every=recipe.stride, force=True)
        echo(f"  {temp:g} K: {res.n_frames} frames of {res.n_atoms} atoms ({time.perf_counter() - t0:.1f} s)")
        md.append({"temperature": temp, "frames": res.n_frames, "file": xyz.name})
        frames += ase.io.read(xyz, index=":")
    rng = np.random.default_rng(recipe.seed)
    order = rng.permutation(len(frames))
    n_valid = max(1, int(round(recipe.valid_fraction * len(frames))))
    valid = [frames[i] for i in order[:n_valid]]
    train_ = [frames[i] for i in order[n_valid:]]
    ase.io.write(out / "train.extxyz", train_, format="extxyz")
    ase.io.write(out / "valid.extxyz", valid, format="extxyz")
    return {"md": md, "n_train": len(train_), "n_valid": len(valid), "n_atoms": len(frames[0])}


def sevenn_input(recipe: ModelSettings, layers: int, data_dir: Path, species: Sequence[str] = ("Sr", "O")) -> str:
    """Step 3's SevenNet input (YAML text) for ``layers`` message-passing layers."""
    hidden = ", ".join(str(h) for h in recipe.radial_hidden)
    names = ", ".join(repr(s) for s in species)
    return f"""# SevenNet input written by nlmd.experiments.training (recipe in training.json)
model:
    chemical_species: [{names}]
    cutoff: {recipe.cutoff}
    channel: {recipe.channel}
    lmax: {recipe.lmax}
    num_convolution_layer: {layers}
    weight_nn_hidden_neurons: [{hidden}]
    radial_basis:
        radial_basis_name: 'bessel'
        bessel_basis_num: {recipe.bessel_basis}
    cutoff_function:
        cutoff_function_name: 'poly_cut'
        poly_cut_p_value: 6
    act_gate: {{'e': 'silu', 'o': 'tanh'}}
    act_scalar: {{'e': 'silu', 'o': 'tanh'}}
    is_parity: {recipe.is_parity}
    self_connection_type: 'nequip'
    conv_denominator: 'avg_num_neigh'
train:
    random_seed: {recipe.seed}
    is_train_stress: False
    epoch: {recipe.epochs}
    optimizer: 'adam'
    optim_param:
        lr: {recipe.lr}
    scheduler: 'exponentiallr'
    scheduler_param:
        gamma: {recipe.gamma():.6f}
    force_loss_weight: {recipe.force_loss_weight}
    per_epoch: {recipe.epochs}
    error_record:
        - ['Energy', 'RMSE']
        - ['Force', 'RMSE']
        - ['TotalLoss', 'None']
data:
    batch_size: {recipe.batch_size}
    shift: 'per_atom_energy_mean'
    scale: 'force_rms'
    load_trainset_path: ['{(data_dir / "train.extxyz").resolve()}']
    load_validset_path: ['{(data_dir / "valid.extxyz").resolve()}']
"""


def sevenn_executable() -> str:
    exe = Path(sys.executable).parent / "sevenn"
    if exe.is_file():
        return str(exe)
    found = shutil.which("sevenn")
    if not found:
        raise NlmdError("SevenNet's trainer `sevenn` is not installed (pip install sevenn)")
    return found


def start_training(recipe: ModelSettings, layers: int, data_dir: Path, workdir: Path,
                   threads: int = 1, species: Sequence[str] = ("Sr", "O")) -> subprocess.Popen:
    """Step 3: write ``sevenn.yaml`` into ``workdir`` and start ``sevenn`` on it (returns the process)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "sevenn.yaml").write_text(sevenn_input(recipe, layers, data_dir, species))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(workdir / "sevenn.out", "w") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sevenn_executable(), "sevenn.yaml", "-w", "."], cwd=workdir, env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def learning_curve(workdir: Path) -> list[dict[str, float]]:
    """The rows of SevenNet's ``lc.csv`` (one per epoch)."""
    path = workdir / "lc.csv"
    if not path.is_file():
        raise NlmdError(f"{path}: SevenNet wrote no learning curve (see {workdir / 'sevenn.out'})")
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def ship(recipe: ModelSettings, layers: int, workdir: Path, dest: Path, data: dict[str, Any],
         seconds: float | None = None, command: str | None = None) -> dict[str, Any]:
    """Step 4: copy the best checkpoint to ``dest/checkpoint.pth`` with ``training.json`` and ``sevenn.yaml``."""
    best = workdir / "checkpoint_best.pth"
    if not best.is_file():
        raise NlmdError(f"{best}: SevenNet wrote no best checkpoint (see {workdir / 'sevenn.out'})")
    curve = learning_curve(workdir)
    i_best = int(np.argmin([row["validset_TotalLoss"] for row in curve]))
    row = curve[i_best]
    import torch

    n_params = int(sum(v.numel() for k, v in torch.load(best, map_location="cpu", weights_only=False)
                       ["model_state_dict"].items()))
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, dest / "checkpoint.pth")
    shutil.copyfile(workdir / "sevenn.yaml", dest / "sevenn.yaml")
    info = {
        "model": dest.name,
        "layers": layers,
        "cutoff": recipe.cutoff,
        "force_reach_A": 2 * layers * recipe.cutoff,
        "energy_reach_A": layers * recipe.cutoff,
        "parameters": n_params,
        "recipe": {**asdict(recipe), "gamma": recipe.gamma()},
        "data": data,
        "epochs": len(curve),
        "best_epoch": i_best + 1,
        "validation": {
            "energy_rmse_eV_per_atom": row["validset_Energy_RMSE"],
            "force_rmse_eV_per_A": row["validset_Force_RMSE"],
        },
        "training_errors_at_best": {
            "energy_rmse_eV_per_atom": row["trainset_Energy_RMSE"],
            "force_rmse_eV_per_A": row["trainset_Force_RMSE"],
        },
        "training_seconds": seconds,
        "command": command,
        "versions": _versions(),
    }
    (dest / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("sevenn", "torch", "lammps", "ase", "nlmd"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def train(recipe: Recipe, layers: Sequence[int], out: str | os.PathLike, ship_to: str | os.PathLike | None,
          *, jobs: int = 1, name: str = "sro-{L}layer", echo=print, command: str | None = None) -> list[dict]:
    """The whole recipe: training set, one ``sevenn`` run per entry of ``layers`` (``jobs`` at once), ship."""
    out = Path(out)
    check_layers(layers)
    data_dir = out / "data"
    echo(f"training set: reference MD of the crystal with {recipe.reference}")
    data = make_training_set(recipe, data_dir, echo=echo)
    echo(f"  {data['n_train']} training + {data['n_valid']} validation frames")
    return train_models(recipe, layers, data_dir, data, out, ship_to, jobs=jobs, name=name, echo=echo,
                        command=command)


def check_layers(layers: Sequence[int]) -> None:
    if not layers or any(int(L) < 1 for L in layers):
        raise InputError(f"--layers must be positive numbers of message-passing layers, got {list(layers)}")


def train_models(recipe: ModelSettings, layers: Sequence[int], data_dir: Path, data: dict[str, Any], out: Path,
                 ship_to: str | os.PathLike | None, *, jobs: int = 1, name: str, species: Sequence[str] = ("Sr", "O"),
                 echo=print, command: str | None = None) -> list[dict]:
    """Steps 3-4 on ``data_dir``'s train/valid sets: one ``sevenn`` run per entry of ``layers``, shipped."""
    check_layers(layers)
    pending = [int(L) for L in layers]
    running: dict[int, tuple[subprocess.Popen, float]] = {}
    done: list[dict] = []
    while pending or running:
        while pending and len(running) < max(1, jobs):
            L = pending.pop(0)
            echo(f"sevenn: {L} layer(s), {recipe.epochs} epochs -> {out / f'L{L}'}")
            running[L] = (start_training(recipe, L, data_dir, out / f"L{L}", species=species), time.perf_counter())
        time.sleep(2.0)
        for L, (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[L]
            if proc.returncode != 0:
                for p, _ in running.values():
                    p.terminate()
                raise NlmdError(f"sevenn failed for {L} layer(s) (exit {proc.returncode}); see {out / f'L{L}' / 'sevenn.out'}")
            seconds = time.perf_counter() - t0
            dest = (Path(ship_to) if ship_to is not None else out / "models") / name.format(L=L)
            info = ship(recipe, L, out / f"L{L}", dest, data, seconds=seconds, command=command)
            v = info["validation"]
            echo(f"  {dest}: {L} layer(s), {info['parameters']} parameters, best epoch {info['best_epoch']}/"
                 f"{info['epochs']}, validation force RMSE {v['force_rmse_eV_per_A']:.4f} eV/A, energy "
                 f"{1000 * v['energy_rmse_eV_per_atom']:.2f} meV/atom ({seconds / 60:.1f} min)")
            done.append(info)
    return sorted(done, key=lambda d: d["layers"])
