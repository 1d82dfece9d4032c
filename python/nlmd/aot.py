"""Ahead-of-time compilation of a serial SevenNet model with torch.export and AOTInductor.

``nlmd deploy`` writes ``deployed_serial.pt2`` beside SevenNet's TorchScript file: the model's forward
pass *and* the derivative of the energy with respect to the edge vectors, traced into one graph of aten
operators (``make_fx``), exported with a dynamic number of atoms and edges (``torch.export``) and compiled
to C++ by Inductor (``aoti_compile_and_package``), the route NequIP/Allegro deploy by. ``pair_style
e3gnn`` runs the package through libtorch's ``AOTIModelPackageLoader``. Inductor fuses the elementwise
products of e3nn's tensor products and the slice gradients that dominate the TorchScript model's backward
pass (see docs/performance.md for what it gives).

The compiled package's calling convention (a contract with plugin/pair_e3gnn_nlmd.cpp):

    inputs   x           int64  [num_atoms]      SevenNet type index of each atom (the model's type map)
             edge_index  int64  [2, num_edges]   row 0: centre atom i, row 1: neighbour j
             edge_vec    float  [num_edges, 3]   r_j - r_i (with the periodic image), Angstrom
    outputs  energy        float [1]                  total energy, eV
             atomic_energy float [num_atoms, 1]       per-atom energies, eV
             dedr          float [num_edges, 3]       d energy / d edge_vec, eV/Angstrom

with num_atoms >= 2 and num_edges >= 2 (smaller graphs go through the TorchScript file). The package's
metadata holds the same keys as SevenNet's TorchScript ``_extra_files`` (``chemical_symbols_to_index``,
``cutoff``, ``num_species``, ``dtype``, ...) plus ``nlmd_format``, ``device`` and ``torchscript`` (the
file to use for graphs too small for the package).

Compiling needs the C++ compiler that built the plugin and takes minutes (SevenNet-0: ~5 min on 2 cores).
The code is specialised to the device it was compiled for: ``cpu`` (and the CPU's instruction set:
AVX-512 and so on) or ``cuda`` (Inductor's Triton kernels, compiled on the GPU that will run them; the
package's ``device`` metadata says which, and the pair style refuses a package whose device this process
does not have). Deploy on the kind of node the MD runs on.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from pathlib import Path

AOT_FILE = "deployed_serial.pt2"
#: version of the calling convention above, checked by the pair style
FORMAT = "nlmd-e3gnn-aoti-1"
#: largest difference of d energy / d edge_vec between the compiled package and the Python model accepted at
#: export, relative to the largest component (or absolute in eV/Angstrom when that is below 1)
CHECK_FORCE_TOL = 1e-4


def _serial_model(checkpoint: str):
    """SevenNet's model as sevenn's TorchScript deploy prepares it, left in Python (eager)."""
    from sevenn.util import load_checkpoint

    cp = load_checkpoint(checkpoint)
    model = cp.build_model(enable_cueq=False, enable_flash=False, enable_oeq=False)
    if "force_output" in model._modules:
        model.delete_module_by_key("force_output")
    return for_inference(model), cp.config


def for_inference(model):
    """A SevenNet model (or parallel part) set up as its deployment runs it: type indices given directly, one
    graph, evaluation mode, no parameter gradients. Returns ``model``."""
    if hasattr(model, "eval_type_map"):
        model.eval_type_map = False
    model.set_is_batch_data(False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@contextmanager
def symbolic_sizes():
    """make_fx's symbolic tracing with duck shaping off: a dynamic size that happens to equal a static one (a
    channel count) stays symbolic."""
    import torch.fx.experimental._config as fx_config

    old = fx_config.use_duck_shape
    fx_config.use_duck_shape = False
    try:
        yield
    finally:
        fx_config.use_duck_shape = old


def _patch_message_gather() -> None:
    """SevenNet sizes its scatter output with ``len(node_features)``, a Python int that pins the number of
    atoms to the value of the example graph when traced. Size it with ``Tensor.size(0)`` instead (same
    operation, same result) so the atom count stays symbolic."""
    import torch
    import sevenn.nn.convolution as conv

    def message_gather(node_features: torch.Tensor, edge_dst: torch.Tensor, message: torch.Tensor):
        index = edge_dst.view(-1, 1).expand_as(message)
        out = node_features.new_zeros((node_features.size(0), message.size(1)))
        return out.scatter_reduce_(0, index, message, reduce="sum")

    conv.message_gather = message_gather


class _EnergyAndGradient:
    """(x, edge_index, edge_vec) -> (energy, atomic_energy, d energy / d edge_vec) of a serial SevenNet."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x, edge_index, edge_vec):
        import torch

        if not edge_vec.requires_grad:
            edge_vec = edge_vec.requires_grad_(True)
        n = torch.full((1,), x.shape[0], dtype=torch.int64, device=x.device)
        out = self.model({"x": x, "edge_index": edge_index, "edge_vec": edge_vec, "num_atoms": n, "nlocal": n})
        energy = out["inferred_total_energy"].reshape(1)
        (dedr,) = torch.autograd.grad([energy.sum()], [edge_vec])
        return energy, out["atomic_energy"].reshape(-1, 1), dedr


def example_graph(config: dict, reps: int, seed: int, dtype):
    """A displaced simple-cubic cell alternating the model's first two elements, as a SevenNet graph
    (x, edge_index, edge_vec): (2 reps)^3 atoms, ~30 neighbours each."""
    import numpy as np
    import torch
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    type_map = config["_type_map"]
    zs = sorted(type_map, key=type_map.get)[:2]
    n = 2 * reps
    spacing = float(config["cutoff"]) / 1.8
    grid = np.indices((n, n, n)).reshape(3, -1).T
    numbers = [zs[int(k) % len(zs)] for k in grid.sum(axis=1)]
    atoms = Atoms(numbers=numbers, positions=grid * spacing, cell=[n * spacing] * 3, pbc=True)
    atoms.positions += np.random.default_rng(seed).normal(0.0, 0.05 * spacing, atoms.positions.shape)
    i, j, d = neighbor_list("ijD", atoms, float(config["cutoff"]))
    x = torch.tensor([type_map[z] for z in atoms.numbers], dtype=torch.int64)
    edge_index = torch.tensor(np.stack([i, j]), dtype=torch.int64)
    return x, edge_index, torch.tensor(d, dtype=dtype)


def resolve_device(device: str = "auto") -> str:
    """``auto``: ``cuda`` when this torch has a usable GPU, else ``cpu``; ``cpu`` and ``cuda`` as given
    (``cuda`` without a GPU is an error: the package is compiled where it will run)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("a CUDA package is compiled on a GPU, and this torch has none "
                           f"(torch {torch.__version__}, CUDA {torch.version.cuda})")
    return device


def metadata(config: dict, torchscript: str, device: str = "cpu") -> dict[str, str]:
    import datetime

    from ase.data import chemical_symbols
    from sevenn import __version__

    type_map = config["_type_map"]
    return {
        "nlmd_format": FORMAT,
        "chemical_symbols_to_index": " ".join(chemical_symbols[z] for z in type_map),
        "cutoff": str(config["cutoff"]),
        "num_species": str(config["_number_of_species"]),
        "dtype": str(config.get("dtype", "single")),
        "model_type": str(config.get("model_type", "E3_equivariant_model")),
        "version": __version__,
        "time": datetime.date.today().isoformat(),
        "device": device,
        "torchscript": torchscript,
    }


def compile_serial(checkpoint: str | Path, out: str | Path, *, torchscript: str = "deployed_serial.pt",
                   device: str = "auto", echo=print) -> dict:
    """Compile the serial model of ``checkpoint`` into the AOTInductor package ``out`` for ``device``
    (``cpu``, ``cuda``, or ``auto``: CUDA when there is a GPU); return timings and the largest force
    difference between the package and the Python model on two graphs."""
    import torch
    from torch.export import Dim
    from torch.fx.experimental.proxy_tensor import make_fx

    device = resolve_device(device)
    torch.set_num_threads(1)  # the package is compiled with dynamic threads; this only keeps the export lean
    _patch_message_gather()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, config = _serial_model(str(checkpoint))
    model.to(device)
    dtype = next(model.parameters()).dtype
    fn = _EnergyAndGradient(model)
    x, ei, ev = (t.to(device) for t in example_graph(config, 2, 0, dtype))
    t0 = time.perf_counter()
    with symbolic_sizes(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = make_fx(fn, tracing_mode="symbolic", _allow_non_fake_inputs=True)(x, ei, ev.clone())
    atoms_dim, edges_dim = Dim("num_atoms", min=2), Dim("num_edges", min=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(graph, (x, ei, ev.clone()),
                                       dynamic_shapes=({0: atoms_dim}, {1: edges_dim}, {0: edges_dim}))
    t_export = time.perf_counter() - t0
    echo(f"traced and exported the model with its gradient in {t_export:.0f} s; compiling with AOTInductor "
         "(minutes) ...")
    t0 = time.perf_counter()
    options = {"aot_inductor.metadata": metadata(config, torchscript, device)}
    if device == "cpu":
        options["cpp.dynamic_threads"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = torch._inductor.aoti_compile_and_package(exported, package_path=str(out), inductor_configs=options)
    t_compile = time.perf_counter() - t0
    compiled = torch._inductor.aoti_load_package(path)
    worst = 0.0
    for reps, seed in ((2, 1), (3, 2)):  # a graph of the traced size and a larger one
        g = tuple(t.to(device) for t in example_graph(config, reps, seed, dtype))
        ref = fn(g[0], g[1], g[2].clone())
        got = compiled(*g)
        # relative to the largest gradient component (float32 models: ~1e-7 of it)
        scale = max(1.0, float(ref[2].abs().max()))
        worst = max(worst, float((got[2] - ref[2]).abs().max()) / scale)
    if not worst <= CHECK_FORCE_TOL:
        raise RuntimeError(f"the compiled package's energy gradient differs from SevenNet's model by {worst:.3e} "
                           f"of its largest component (tolerance {CHECK_FORCE_TOL:g})")
    summary = {"file": Path(path).name, "format": FORMAT, "device": device, "export_s": round(t_export, 1),
               "compile_s": round(t_compile, 1), "check_rel_dedr_diff": worst,
               "cpu_isa": _package_isa(path) if device == "cpu" else ""}
    if device == "cuda":
        summary["gpu"] = torch.cuda.get_device_name()
    return summary


def _package_isa(path: str) -> str:
    """The instruction set Inductor compiled the package for (recorded by AOTInductor in the package)."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.endswith("wrapper_metadata.json"):
                return json.loads(z.read(name)).get("AOTI_CPU_ISA", "")
    return ""


def _main(argv: list[str]) -> int:
    """``python -m nlmd.aot CHECKPOINT OUT.pt2 [--device auto|cpu|cuda]``: compile in a fresh interpreter
    (see potentials.compile_aot); the last line printed is the JSON summary."""
    import json
    import sys

    device = "auto"
    if len(argv) == 4 and argv[2] == "--device":
        device, argv = argv[3], argv[:2]
    if len(argv) != 2:
        print("usage: python -m nlmd.aot CHECKPOINT OUT.pt2 [--device auto|cpu|cuda]", file=sys.stderr)
        return 2
    summary = compile_serial(argv[0], argv[1], device=device,
                             echo=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
