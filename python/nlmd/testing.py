"""Small SevenNet models made on the spot, for tests and benchmarks (no binaries in the repository)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def make_tiny_checkpoint(
    path: str | Path,
    species: Sequence[str] = ("Sr", "O"),
    *,
    cutoff: float = 4.0,
    num_layers: int = 2,
    channel: int = 4,
    lmax: int = 1,
    seed: int = 0,
    max_force: float | None = 2.0,
) -> Path:
    """Write a SevenNet checkpoint (.pth) of a small random E(3)-equivariant model and return its path.

    The configuration is SevenNet-0's with fewer layers and channels; weights and per-species shifts are
    random (seeded). Random weights give arbitrary force magnitudes, so the energy scale is then set such
    that the largest force on a displaced rocksalt probe (0.12 A, the first two species) is ``max_force``
    eV/Angstrom, like a trained model's: float32 models are then accurate to ~1e-6 eV/Angstrom.
    """
    import numpy as np
    import torch
    from ase.data import atomic_numbers

    import sevenn
    import sevenn.util

    config = sevenn.util.load_checkpoint(sevenn.util.pretrained_name_to_path("7net-0")).config
    species = sorted(species, key=lambda s: atomic_numbers[s])
    rng = np.random.default_rng(seed)
    config.update(
        {
            "version": sevenn.__version__,
            "chemical_species": list(species),
            "_number_of_species": len(species),
            "_type_map": {atomic_numbers[s]: i for i, s in enumerate(species)},
            "_chemical_species_by_atomic_number": [atomic_numbers[s] for s in species],
            "irreps_manual": False,
            "channel": channel,
            "lmax": lmax,
            "num_convolution_layer": num_layers,
            "avg_num_neigh": [20.0] * num_layers,
            "avg_num_neigh_cp": [20.0] * num_layers,
            "cutoff": float(cutoff),
            "cutoff_function": {"cutoff_function_name": "XPLOR", "cutoff_on": 0.9 * cutoff},
            "weight_nn_hidden_neurons": [8, 8],
            "shift": [float(x) for x in rng.uniform(-4.0, -1.0, len(species))],
            "scale": [float(x) for x in rng.uniform(1.0, 2.0, len(species))],
            "device": torch.device("cpu"),
            "is_ddp": False,
        }
    )
    for key in ("shift_cp", "scale_cp"):
        config.pop(key, None)
    path = Path(path)
    _save_random_model(config, seed, path)
    if max_force:
        largest = _largest_probe_force(path, species)
        config["scale"] = [x * max_force / largest for x in config["scale"]]
        _save_random_model(config, seed, path)
    return path


def _save_random_model(config: dict, seed: int, path: Path) -> None:
    import torch

    from sevenn import model_build

    torch.manual_seed(seed)
    model = model_build.build_E3_equivariant_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.save({"config": config, "model_state_dict": model.state_dict(), "epoch": 0}, path)


def _largest_probe_force(path: Path, species: Sequence[str]) -> float:
    import warnings

    import numpy as np
    from ase.build import bulk

    from sevenn.calculator import SevenNetCalculator

    if len(species) >= 2:
        atoms = bulk(f"{species[0]}{species[1]}", "rocksalt", a=5.2, cubic=True)
    else:
        atoms = bulk(species[0], "fcc", a=4.0, cubic=True)
    atoms = atoms.repeat((2, 2, 2))
    atoms.rattle(0.12, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms.calc = SevenNetCalculator(str(path), device="cpu")
        forces = atoms.get_forces()
    largest = float(np.abs(forces).max())
    if not np.isfinite(largest) or largest == 0.0:
        raise RuntimeError(f"the random model {path} gives forces {largest}; try another seed")
    return largest
