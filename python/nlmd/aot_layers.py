"""Ahead-of-time compilation of SevenNet's layer-wise parallel model (``e3gnn/parallel``) with AOTInductor.

``nlmd deploy`` compiles, beside SevenNet's per-layer TorchScript files (``deployed_parallel/``), every
message-passing layer of the model into AOTInductor packages (``deployed_parallel/layer_<k>_*.pt2``), so that
``pair_style e3gnn/parallel`` runs compiled code like ``e3gnn`` does with ``deployed_serial.pt2`` while keeping
the exchange of ghost-atom features between layers. A layer's backward pass can only run once the gradient of
its output is known, i.e. after the later layers' backward passes and a reverse exchange. So each layer but the
last is compiled as two packages, the forward pass and its vector-Jacobian product, which share the forward's
intermediate results: the joint forward-and-gradient graph (``make_fx``) is cut where the forward ends, the
forward package returns the tensors the gradient needs ("saved"), and the gradient package takes them back. The
last layer's gradient needs no input from later layers: it is one package (energy and all gradients).

Calling conventions (a contract with plugin/layered_model.cpp; nl local atoms, ng ghost atoms, ne edges whose
centre is local; "types" are SevenNet type indices, "x" node features, "sc" the self-connection term carried
from one layer to the next):

    layer 0, forward   (types[nl], types_ghost[ng], edge_index[2,ne], edge_vec[ne,3])
                       -> (x[nl,d], sc[nl,c], saved...)
    layer 0, gradient  (types, types_ghost, edge_index, edge_vec, saved..., dx[nl,d], dsc[nl,c]) -> (dedr[ne,3],)
    layer k, forward   (x, x_ghost[ng,d'], sc', types, edge_index, edge_vec) -> (x, sc, saved...)
    layer k, gradient  (x, x_ghost, sc', types, edge_index, edge_vec, saved..., dx, dsc)
                       -> (dedr, dx_in[nl,d'], dsc_in, dx_ghost[ng,d'])
    last layer         (x, x_ghost, sc', types, edge_index, edge_vec)
                       -> (energy[1], atomic_energy[nl,1], dedr, dx_in, dsc_in, dx_ghost)

with nl, ng >= 2 and ne >= 2 (smaller graphs run the TorchScript layers). The file names and the number of saved
tensors of each layer are in ``deployed_parallel/aot_layers.json``.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from .aot import CHECK_FORCE_TOL, for_inference, resolve_device, symbolic_sizes

FORMAT = "nlmd-e3gnn-parallel-aoti-1"
INDEX_FILE = "aot_layers.json"


def layer_modules(checkpoint: str):
    """SevenNet's parallel model parts, built and filled as ``sevenn.scripts.deploy.deploy_parallel`` does,
    left in Python (eager)."""
    from sevenn.model_build import build_E3_equivariant_model
    from sevenn.util import load_checkpoint

    cp = load_checkpoint(checkpoint)
    model = cp.build_model(enable_cueq=False, enable_flash=False, enable_oeq=False)
    config = cp.config
    state = model.state_dict()
    parts = build_E3_equivariant_model(config, parallel=True)
    for ghost_key in ("onehot_to_feature_x", "0_self_interaction_1"):
        state.update({f"ghost_{k}": v for k, v in model.state_dict().items() if k.startswith(ghost_key)})
    for part in parts:
        missing, _ = part.load_state_dict(state, strict=False)
        if missing:
            raise RuntimeError(f"{checkpoint}: the parallel model lacks the weights {missing[:3]}")
        for_inference(part)
    return parts, config


def _patch_parallel_convolution() -> None:
    """SevenNet's parallel convolution sums the messages into local and ghost nodes and then keeps the local
    rows (``torch.tensor_split`` at ``nlocal``, a host tensor whose value would be fixed at tracing). Sum into
    the local rows only (edges' centres are local: same result, no data-dependent split)."""
    import torch
    import sevenn.nn.convolution as conv
    from sevenn._keys import NODE_FEATURE_GHOST

    def forward(self, data):
        weight = self.weight_nn(data[self.key_weight_input])
        x = data[self.key_x]
        n = x.size(0)
        if self.is_parallel:
            x = torch.cat([x, data[NODE_FEATURE_GHOST]])
        edge_src = data[self.key_edge_idx][1]
        edge_dst = data[self.key_edge_idx][0]
        message = self.convolution(x[edge_src], data[self.key_filter], weight)
        index = edge_dst.view(-1, 1).expand_as(message)
        out = message.new_zeros((n, message.size(1))).scatter_reduce_(0, index, message, reduce="sum")
        data[self.key_x] = out.div(self.denominator)
        return data

    conv.IrrepsConvolution.forward = forward


class _Layer:
    """Layer k of the parallel model as a function of tensors: forward outputs, then the gradients with respect
    to the edge vectors and (k > 0) the layer's float inputs, given the gradients of its outputs (``tangents``;
    none for the last layer, whose output is the energy)."""

    def __init__(self, k: int, part, last: bool, num_species: int):
        self.k, self.part, self.last, self.num_species = k, part, last, num_species

    def inputs(self, args):
        import torch

        if self.k == 0:
            types, types_ghost, edge_index, edge_vec = args[:4]
            n = types.size(0)
            data = {"x": types, "x_ghost": types_ghost}
            return data, edge_index, edge_vec, [], args[4:], n
        x, x_ghost, sc, types, edge_index, edge_vec = args[:6]
        node_attr = torch.nn.functional.one_hot(types, self.num_species).to(x.dtype)
        data = {"x": x, "x_ghost": x_ghost, "self_cont_tmp": sc, "atom_type": types, "node_attr": node_attr}
        return data, edge_index, edge_vec, [x, sc, x_ghost], args[6:], x.size(0)

    def forward_only(self, args):
        """The layer's outputs (features, self-connection), without gradients."""
        import torch

        data, edge_index, edge_vec, _, _, n = self.inputs([a.clone() for a in args])
        nt = torch.full((1,), n, dtype=torch.int64, device=edge_vec.device)
        data.update({"edge_index": edge_index, "edge_vec": edge_vec, "num_atoms": nt, "nlocal": nt})
        with torch.no_grad():
            out = self.part(data)
        return [out["x"].detach(), out["self_cont_tmp"].detach()]

    def __call__(self, *args):
        import torch

        data, edge_index, edge_vec, float_in, tangents, n = self.inputs(args)
        edge_vec = edge_vec.requires_grad_(True)
        for t in float_in:
            t.requires_grad_(True)
        nt = torch.full((1,), n, dtype=torch.int64, device=edge_vec.device)
        data.update({"edge_index": edge_index, "edge_vec": edge_vec, "num_atoms": nt, "nlocal": nt})
        out = self.part(data)
        wrt = [edge_vec] + float_in
        if self.last:
            energy = out["inferred_total_energy"].reshape(1)
            outputs = [energy, out["atomic_energy"].reshape(-1, 1)]
            grads = torch.autograd.grad([energy.sum()], wrt, allow_unused=True)
        else:
            outputs = [out["x"], out["self_cont_tmp"]]
            grads = torch.autograd.grad(outputs, wrt, list(tangents), allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]
        return (*outputs, *grads)


def _split(joint, num_primals: int, num_outputs: int):
    """Cut the joint graph of a layer (placeholders: primals then tangents; outputs: forward outputs then
    gradients) into the forward graph (primals -> forward outputs + saved tensors) and the gradient graph
    (primals + saved + tangents -> gradients). The forward graph is what the forward outputs need; a tensor it
    computes that the rest uses is saved; sizes (symbolic ints) are recomputed from the inputs."""
    import torch
    from torch import fx

    nodes = list(joint.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    primals, tangents = placeholders[:num_primals], placeholders[num_primals:]
    (output_node,) = [n for n in nodes if n.op == "output"]
    outs = list(output_node.args[0])
    fwd_outs, grad_outs = outs[:num_outputs], outs[num_outputs:]

    forward = set()
    stack = [n for n in fwd_outs if isinstance(n, fx.Node)]
    while stack:
        n = stack.pop()
        if n in forward:
            continue
        forward.add(n)
        stack.extend(n.all_input_nodes)

    def is_tensor(n):
        return isinstance(n.meta.get("val"), torch.Tensor)

    # a view of a forward tensor is not saved but taken again in the gradient graph (views are free, and a
    # compiled package hands out its outputs contiguous, whatever strides the view had)
    views = {torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default, torch.ops.aten.expand.default,
             torch.ops.aten.permute.default, torch.ops.aten.slice.Tensor, torch.ops.aten.select.int,
             torch.ops.aten.unsqueeze.default, torch.ops.aten.squeeze.dim, torch.ops.aten.t.default,
             torch.ops.aten.transpose.int, torch.ops.aten.alias.default}
    wanted = [n for n in nodes if n in forward and n.op != "placeholder" and is_tensor(n)
              and any(u not in forward and u is not output_node for u in n.users)]
    saved, seen = [], set()
    while wanted:
        n = wanted.pop(0)
        if n in seen:
            continue
        seen.add(n)
        base = n.args[0] if n.target in views and isinstance(n.args[0], fx.Node) else None
        if base is not None and base.op != "placeholder" and base in forward:
            wanted.append(base)
        elif base is None or base.op != "placeholder":
            saved.append(n)
    saved = [n for n in nodes if n in saved]    # graph order

    def build(inputs, outputs, replace):
        g = fx.Graph()
        env = {}
        for n in inputs:
            env[n] = g.placeholder(n.name)
            env[n].meta = dict(n.meta)
        needed = set()
        stack = [o for o in outputs if isinstance(o, fx.Node)]
        while stack:
            n = stack.pop()
            if n in needed or n in env:
                continue
            needed.add(n)
            if n not in replace:
                stack.extend(n.all_input_nodes)
        for n in nodes:
            if n in needed and n not in env:
                env[n] = g.node_copy(n, lambda a: env[a])
        g.output(tuple(env[o] if isinstance(o, fx.Node) else o for o in outputs))
        g.lint()
        return fx.GraphModule(joint, g)

    fwd = build(primals, fwd_outs + saved, set())
    bwd = build(primals + saved + tangents, grad_outs, set(saved))
    return fwd, bwd, len(saved)


def _trace(layer: _Layer, args):
    """The joint graph of ``layer`` (make_fx, symbolic sizes), functionalised: no in-place operation is left, so
    the graph can be cut anywhere."""
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    with symbolic_sizes(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        joint = make_fx(layer, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*[a.clone() for a in args])
        return make_fx(torch.func.functionalize(joint, remove="mutations"), tracing_mode="symbolic",
                       _allow_non_fake_inputs=True)(*[a.clone() for a in args])


def _size_symbols(joint, k: int, args) -> dict:
    """What each size symbol of the traced joint graph stands for: ``"atoms"`` (local atoms), ``"ghosts"``,
    ``"edges"``, or the int it was traced with (feature widths, 2 and 3 are sizes make_fx also left symbolic)."""
    placeholders = [n for n in joint.graph.nodes if n.op == "placeholder"]
    if k == 0:    # types, types_ghost, edge_index, edge_vec, tangents
        dynamic = [{0: "atoms"}, {0: "ghosts"}, {1: "edges"}, {0: "edges"}]
    else:         # x, x_ghost, sc, types, edge_index, edge_vec, tangents
        dynamic = [{0: "atoms"}, {0: "ghosts"}, {0: "atoms"}, {0: "atoms"}, {1: "edges"}, {0: "edges"}]
    dynamic += [{0: "atoms"}] * (len(placeholders) - len(dynamic))
    meaning = {}
    for node, arg, dims in zip(placeholders, args, dynamic):
        for i, size in enumerate(node.meta["val"].shape):
            if hasattr(size, "node"):
                meaning.setdefault(size.node.expr, dims.get(i, int(arg.shape[i])))
    return meaning


def _dynamic_shapes(gm, meaning: dict):
    """torch.export's dynamic_shapes for the inputs of ``gm`` (a piece of a joint graph): a size that is the
    number of atoms, ghosts or edges (or a multiple of it) is that dimension, a size the trace fixed is static,
    and any other combination (local + ghost atoms) is left for export to relate (``Dim.AUTO``)."""
    import sympy
    from torch.export import Dim

    dims = {name: Dim(name, min=2) for name in ("atoms", "ghosts", "edges")}
    names = {sym: val for sym, val in meaning.items() if isinstance(val, str)}
    values = {sym: val for sym, val in meaning.items() if not isinstance(val, str)}
    shapes = []
    for node in (n for n in gm.graph.nodes if n.op == "placeholder"):
        spec = {}
        for i, size in enumerate(node.meta["val"].shape):
            if not hasattr(size, "node"):
                continue
            expr = sympy.sympify(size.node.expr).subs(values)
            free = expr.free_symbols
            if not free:
                continue
            if len(free) == 1 and (sym := next(iter(free))) in names:
                coeff = sympy.simplify(expr / sym)
                if coeff == 1:
                    spec[i] = dims[names[sym]]
                    continue
                if coeff.is_Integer and coeff > 1:
                    spec[i] = int(coeff) * dims[names[sym]]
                    continue
            spec[i] = Dim.AUTO
        shapes.append(spec or None)
    return tuple(shapes)


def _compile(gm, args, shapes, path: Path, options: dict) -> str:
    """Export ``gm`` with the dynamic sizes ``shapes`` and compile it with AOTInductor."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(gm, tuple(a.clone() for a in args), dynamic_shapes=shapes)
        return torch._inductor.aoti_compile_and_package(exported, package_path=str(path), inductor_configs=options)


def _relative_difference(got, ref) -> float:
    """Largest difference over the outputs, each relative to its largest magnitude (absolute below 1)."""
    worst = 0.0
    for a, b in zip(got, ref):
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        if a.shape != b.shape:
            return float("inf")
        if a.numel():
            worst = max(worst, float((a - b).abs().max()) / max(1.0, float(b.abs().max())))
    return worst


def _graph(config, reps: int, seed: int, dtype, device, local_fraction: float):
    """A graph cut as one rank of a parallel run sees it: the first ``local_fraction`` of the atoms are local,
    the rest are ghosts, and only the edges whose centre is local are kept."""
    from .aot import example_graph

    x, edge_index, edge_vec = example_graph(config, reps, seed, dtype)
    nl = int(round(local_fraction * len(x)))
    keep = edge_index[0] < nl
    return nl, x.to(device), edge_index[:, keep].to(device), edge_vec[keep].to(device)


def _layer_arguments(k, x, nl, edge_index, edge_vec, carried, seed):
    """Inputs of layer k on a test graph: layer 0 takes the types; layer k > 0 the features and self-connection
    the previous layer gave (``carried``), and for the ghost atoms the features of randomly chosen local atoms
    (the values an exchange would bring have the same scale)."""
    import torch

    if k == 0:
        return [x[:nl], x[nl:], edge_index, edge_vec]
    features, sc = carried
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, nl, (len(x) - nl,), generator=g).to(features.device)
    return [features, features[pick].clone(), sc, x[:nl], edge_index, edge_vec]


def compile_parallel(checkpoint: str | Path, directory: str | Path, *, device: str = "auto", echo=print) -> dict:
    """Compile every layer of the parallel model of ``checkpoint`` into AOTInductor packages in ``directory``
    (SevenNet's ``deployed_parallel/``) for ``device``, check them against the Python layers on a graph of the
    traced size and a larger one, and write ``aot_layers.json``; return that summary."""
    import torch

    from .aot import metadata

    device = resolve_device(device)
    directory = Path(directory)
    torch.set_num_threads(1)
    _patch_parallel_convolution()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts, config = layer_modules(str(checkpoint))
    for part in parts:
        part.to(device)
    dtype = next(parts[0].parameters()).dtype
    num_species = int(config["_number_of_species"])
    options = {"aot_inductor.metadata": {**metadata(config, "", device), "nlmd_format": FORMAT}}
    if device == "cpu":
        options["cpp.dynamic_threads"] = True
    # traced on 216 atoms, 89 local: sizes unlike any feature width, so none is taken for a constant; checked
    # on that graph and on a larger one (512 atoms, 189 local)
    graphs = [_graph(config, 3, 0, dtype, device, 89 / 216), _graph(config, 4, 1, dtype, device, 189 / 512)]
    carried = [None] * len(graphs)    # per graph: the features and self-connection the previous layer gave
    layers = []
    t_start = time.perf_counter()
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        layer = _Layer(k, part, last, num_species)
        inputs, tangents, outputs = [], [], []
        for i, (nl, x, edge_index, edge_vec) in enumerate(graphs):
            inputs.append(_layer_arguments(k, x, nl, edge_index, edge_vec, carried[i], 10 * k + i))
            if last:
                tangents.append([])
                continue
            out = layer.forward_only(inputs[-1])
            g = torch.Generator().manual_seed(100 + 10 * k + i)
            tangents.append([torch.randn(t.shape, generator=g, dtype=dtype).to(device) for t in out])
            outputs.append(out)
        t0 = time.perf_counter()
        primals = inputs[0]
        joint = _trace(layer, primals + tangents[0])
        meaning = _size_symbols(joint, k, primals + tangents[0])
        entry = {"layer": k}
        if last:
            path = _compile(joint, primals, _dynamic_shapes(joint, meaning), directory / f"layer_{k}.pt2", options)
            entry.update({"joint": Path(path).name, "saved": 0})
            joint_package = torch._inductor.aoti_load_package(path)

            def compiled(args, tangents):
                return list(joint_package(*args))
        else:
            fwd, bwd, num_saved = _split(joint, len(primals), 2)
            saved = list(fwd(*[a.clone() for a in primals]))[2:]
            # the gradient package is compiled for the strides of its example inputs, and the forward package
            # hands out contiguous tensors
            if not all(t.is_contiguous() for t in saved):
                raise RuntimeError(f"layer {k}: a tensor saved for the gradient is not contiguous")
            f_path = _compile(fwd, primals, _dynamic_shapes(fwd, meaning),
                              directory / f"layer_{k}_forward.pt2", options)
            b_path = _compile(bwd, primals + saved + tangents[0], _dynamic_shapes(bwd, meaning),
                              directory / f"layer_{k}_gradient.pt2", options)
            entry.update({"forward": Path(f_path).name, "gradient": Path(b_path).name, "saved": num_saved})
            forward_package = torch._inductor.aoti_load_package(f_path)
            gradient_package = torch._inductor.aoti_load_package(b_path)

            def compiled(args, tangents):
                out = list(forward_package(*args))
                return out[:2] + list(gradient_package(*args, *out[2:], *tangents))
        entry["compile_s"] = round(time.perf_counter() - t0, 1)
        worst = 0.0
        for i in range(len(graphs)):
            ref = layer(*[a.clone() for a in inputs[i]], *tangents[i])
            worst = max(worst, _relative_difference(compiled(inputs[i], tangents[i]), ref))
        entry["check_rel_diff"] = worst
        if not worst <= CHECK_FORCE_TOL:
            raise RuntimeError(f"layer {k}'s compiled packages differ from SevenNet's layer by {worst:.3e} of the "
                               f"largest value (tolerance {CHECK_FORCE_TOL:g})")
        layers.append(entry)
        carried = outputs
        echo(f"layer {k}: compiled in {entry['compile_s']:.0f} s, {entry['saved']} saved tensors, "
             f"largest relative difference {worst:.1e}")
    summary = {"format": FORMAT, "device": device, "layers": layers,
               "total_s": round(time.perf_counter() - t_start, 1),
               "check_rel_diff": max(e["check_rel_diff"] for e in layers)}
    if device == "cpu":
        from .aot import _package_isa

        summary["cpu_isa"] = _package_isa(str(directory / layers[0].get("forward", layers[0].get("joint"))))
    (directory / INDEX_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _main(argv: list[str]) -> int:
    """``python -m nlmd.aot_layers CHECKPOINT DIRECTORY [--device auto|cpu|cuda]``: compile in a fresh
    interpreter; the last line printed is the JSON summary."""
    import sys

    device = "auto"
    if len(argv) == 4 and argv[2] == "--device":
        device, argv = argv[3], argv[:2]
    if len(argv) != 2:
        print("usage: python -m nlmd.aot_layers CHECKPOINT DIRECTORY [--device auto|cpu|cuda]", file=sys.stderr)
        return 2
    summary = compile_parallel(argv[0], argv[1], device=device, echo=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
