"""Deploying a SevenNet checkpoint into a potential directory (``nlmd deploy``): export, AOT compile, verify.

A checkpoint (a ``.pth`` file or a pretrained name shipped in ``sevenn``) is checked to hold data only,
exported to TorchScript (``deployed_serial.pt``, ``deployed_parallel/``) in a child process, compiled
ahead of time (``deployed_serial.pt2``, :mod:`nlmd.aot`), described by ``manifest.json`` and ``pair.lmp``,
and verified: LAMMPS (:mod:`nlmd.evaluate`) against SevenNetCalculator on a probe structure. The directory
appears complete or not at all. Loading one is :mod:`nlmd.potential_dir`'s job.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from nlmd.errors import InputError, ModelError
from nlmd.outputs import atomic_path, check_lammps_word, write_json
from nlmd.potential_dir import AOT_FILE, MANIFEST, PAIR_FILE, PARALLEL_DIR, SERIAL_FILE

#: largest force difference (eV/Angstrom) between LAMMPS and SevenNetCalculator accepted by deploy
VERIFY_FORCE_TOL = 1e-4
DEFAULT_MODEL = "7net-0"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _refuse_download(path: str, url: str) -> str:
    raise ModelError(
        f"the pretrained checkpoint {os.path.basename(path)} is not shipped in the installed sevenn wheel and "
        "nlmd never downloads models: download it yourself and pass the .pth file"
    )


def resolve_checkpoint(model: str | Path) -> tuple[Path, str | None]:
    """Return (checkpoint path, pretrained name or None) for a .pth path or a pretrained name."""
    import sevenn.util

    path = Path(model)
    if path.exists():
        if not path.is_file():
            raise InputError(f"{path} is a directory; expected a SevenNet checkpoint file (.pth) or a pretrained name")
        return path.resolve(), None
    if path.suffix in (".pth", ".pt") or os.sep in str(model):
        raise InputError(f"{model}: no such checkpoint file")
    original = sevenn.util.download_checkpoint
    sevenn.util.download_checkpoint = _refuse_download  # the wheel's own lookup, minus its download fallback
    try:
        found = sevenn.util.pretrained_name_to_path(str(model))
    except ValueError:
        names = ", ".join(sevenn.util.get_available_pretrained_models())
        raise InputError(
            f"'{model}' is neither a checkpoint file nor a pretrained SevenNet name (known names: {names})"
        ) from None
    except FileNotFoundError as exc:
        raise ModelError(f"the pretrained model '{model}' is not shipped in the installed sevenn wheel ({exc})") from None
    finally:
        sevenn.util.download_checkpoint = original
    return Path(found).resolve(), str(model)


def _checkpoint_safe_globals() -> list:
    """What a SevenNet checkpoint holds besides tensors and Python literals (measured on SevenNet-0's and on
    nlmd.testing's checkpoints): numpy arrays (shift/scale in the config), their dtypes, and torch.device.
    Allowed for ``torch.load(weights_only=True)``: none of them runs code when unpickled."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    dtypes = [type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"]
    return [np.ndarray, np.dtype, _reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"),
            (_reconstruct, "numpy._core.multiarray._reconstruct"), *dtypes]


def check_checkpoint(path: Path) -> None:
    """Unpickle the checkpoint as data only (``torch.load(weights_only=True)`` with the allow-list of
    :func:`_checkpoint_safe_globals`); raise ModelError, naming what it asks for, when it needs more.

    A ``.pth`` file is a pickle: loaded in full (as SevenNet does, ``weights_only=False``) it can call any
    Python function, e.g. run a shell command. What passes this check holds only allowed objects, so
    loading it in full afterwards (SevenNet's loader, the export and compile children) builds the same data.
    """
    import pickle

    import torch

    allowed = _checkpoint_safe_globals()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.serialization.safe_globals(allowed):
                torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = {g if isinstance(g, str) else f"{g.__module__}.{g.__qualname__}" for g in allowed if not isinstance(g, tuple)}
        names |= {g[1] for g in allowed if isinstance(g, tuple)}
        try:
            from torch.serialization import get_unsafe_globals_in_checkpoint

            extra = [g for g in get_unsafe_globals_in_checkpoint(path) if g not in names]  # reads, never calls
        except Exception:  # noqa: BLE001 - the reason below is enough
            extra = []
        if not extra:  # no foreign object found: not a torch checkpoint at all (a text file, say)
            raise ModelError(f"{path} is not a SevenNet checkpoint (not a PyTorch file torch.load can read)") from None
        raise ModelError(
            f"{path}: refused to load this checkpoint: it needs {', '.join(extra)}, beyond the tensors, numbers "
            "and numpy arrays of a SevenNet checkpoint, and loading it would run code from the file; pass "
            "--trust-checkpoint only if you trust where it comes from"
        ) from None
    except Exception as exc:  # noqa: BLE001 - not a torch file at all, truncated, ...
        raise ModelError(f"{path} is not a SevenNet checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None


def load_checkpoint(path: Path, *, trust: bool = False):
    """Load a SevenNet checkpoint, turning any failure into one sentence.

    Unless ``trust``, the file is first checked to hold nothing but data (:func:`check_checkpoint`).
    """
    import sevenn.util

    if not trust:
        check_checkpoint(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cp = sevenn.util.load_checkpoint(path)
            config = cp.config
    except Exception as exc:  # torch.load raises many types for a file that is not a checkpoint
        raise ModelError(f"{path} is not a SevenNet checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    needed = ("_type_map", "cutoff", "num_convolution_layer")
    missing = [k for k in needed if k not in config]
    if missing or not cp.model_state_dict:
        raise ModelError(f"{path} is not a SevenNet checkpoint: its config lacks {', '.join(missing) or 'a model state'}")
    return cp


def model_species(config: dict) -> list[str]:
    from ase.data import chemical_symbols

    return [chemical_symbols[z] for z in config["_type_map"]]


def probe_structure(species: list[str], seed: int = 7):
    """A small structure with displaced atoms to verify a deployment: rocksalt of two of the model's
    elements (Sr and O when the model has them), or fcc of its only element."""
    from ase.build import bulk

    if "Sr" in species and "O" in species:
        pair = ("Sr", "O")
    elif len(species) >= 2:
        pair = (species[0], species[1])
    else:
        pair = (species[0],)
    if len(pair) == 2:
        atoms = bulk(f"{pair[0]}{pair[1]}", "rocksalt", a=5.2, cubic=True).repeat((2, 2, 2))
    else:
        atoms = bulk(pair[0], "fcc", a=4.0, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.15, seed=seed)
    return atoms


def _versions() -> dict:
    from importlib.metadata import version

    import nlmd

    out = {"nlmd": nlmd.__version__}
    for pkg in ("sevenn", "torch", "lammps"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # pragma: no cover - all are dependencies
            out[pkg] = "unknown"
    return out


@contextmanager
def _staging_dir(out: Path, force: bool) -> Iterator[Path]:
    """A temporary directory beside ``out`` that replaces it on success and vanishes on failure."""
    check_lammps_word(out.resolve(), "the potential directory")  # pair.lmp reaches it as ${potential}
    if out.exists() and not force:
        raise InputError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not (out.is_dir() and (out / MANIFEST).is_file()):
        raise InputError(
            f"{out} exists and is not a potential directory (no {MANIFEST}); --force replaces only a potential "
            "directory: choose another -o, or move it away yourself"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise InputError(f"-o {out}: the directory {out.parent} is not writable")
    with atomic_path(out, directory=True) as tmp:
        yield tmp


def pair_lines(manifest: dict) -> str:
    """The LAMMPS lines of a deployed SevenNet potential directory.

    With a parallel deployment the style follows the number of MPI ranks, so the same input runs with
    ``lmp`` and ``mpirun -np N lmp``: one rank uses ``e3gnn`` (the whole model on local atoms, no ghost
    features), several use ``e3gnn/parallel`` (layer-wise exchange of ghost features).
    """
    head = (
        f"# nlmd potential directory '{manifest['name']}': SevenNet model, {len(manifest['elements'])} elements,\n"
        f"# cutoff {manifest['cutoff']} A, {manifest['num_layers']} message-passing layers (deployed {manifest['provenance']['date']}).\n"
        "# Include after the atoms exist; the including input defines ${potential} (this directory)\n"
        "# and ${elements} (element symbols in atom-type order), see docs/contracts.md.\n"
    )
    serial_file = AOT_FILE if manifest.get("aot") else SERIAL_FILE
    serial = f"pair_coeff * * ${{potential}}/{serial_file} ${{elements}}"
    if not manifest.get("parallel"):
        return head + f"pair_style e3gnn\n{serial}\n"
    parallel = f"pair_coeff * * {manifest['num_layers']} ${{potential}}/{PARALLEL_DIR} ${{elements}}"
    return head + (
        "# one MPI rank: e3gnn; several: e3gnn/parallel\n"
        'if "$(extract_setting(world_size)) > 1" then &\n'
        '   "pair_style e3gnn/parallel" &\n'
        f'   "{parallel}" &\n'
        "else &\n"
        '   "pair_style e3gnn" &\n'
        f'   "{serial}"\n'
    )


def deploy(
    model: str | Path = DEFAULT_MODEL,
    out: str | Path | None = None,
    *,
    parallel: bool = True,
    aot: bool = True,
    aot_layers: bool = True,
    device: str = "auto",
    force: bool = False,
    verify: bool = True,
    trust_checkpoint: bool = False,
    echo: Callable[[str], None] = print,
) -> Path:
    """Deploy a SevenNet checkpoint (path or pretrained name) into a verified potential directory.

    With ``aot`` the serial model is also compiled ahead of time (``deployed_serial.pt2``, minutes) and
    ``pair_style e3gnn`` uses it; if that compilation fails the directory keeps TorchScript only and the
    reason is echoed and kept in the manifest. ``device`` (``auto``, ``cpu``, ``cuda``) is where the
    package will run; it is compiled there (``auto``: CUDA when this torch has a GPU) and recorded as
    ``aot.device``. With ``aot`` and ``aot_layers`` the layers of the parallel model are compiled too
    (``deployed_parallel/layer_*.pt2``, nlmd.aot_layers; minutes more) and ``pair_style e3gnn/parallel`` runs
    them; a failure leaves the TorchScript layers, with the reason in the manifest (``parallel.aot_failure``)."""
    if out is not None:  # before the (slow) checkpoint
        check_lammps_word(Path(out).resolve(), "the potential directory")
    checkpoint, pretrained = resolve_checkpoint(model)
    cp = load_checkpoint(checkpoint, trust=trust_checkpoint)
    config = cp.config
    name = pretrained or checkpoint.stem
    out = Path(out) if out is not None else Path("potentials") / name
    species = model_species(config)
    if config.get("modal_map"):
        raise ModelError(f"{checkpoint} is a multi-fidelity model (modalities {list(config['modal_map'])}); "
                         "nlmd deploy supports single-modality checkpoints only")

    with _staging_dir(out, force) as tmp:
        echo(f"deploying {checkpoint} ({len(species)} elements, cutoff {config['cutoff']} A, "
             f"{config['num_convolution_layer']} layers) -> {out}")
        export_torchscript(checkpoint, tmp, parallel)
        comm_size = None
        files = [SERIAL_FILE]
        aot_summary, aot_failure = None, None
        if aot:
            try:
                aot_summary = compile_aot(checkpoint, tmp / AOT_FILE, device=device, echo=echo)
                files.append(AOT_FILE)
            except ModelError as exc:
                aot_failure = str(exc)
                echo(f"warning: {aot_failure}; the potential uses the TorchScript model (slower)")
        layers_summary, layers_failure = None, None
        if parallel and aot and aot_layers:
            try:
                layers_summary = compile_aot_layers(checkpoint, tmp / PARALLEL_DIR, device=device, echo=echo)
            except ModelError as exc:
                layers_failure = str(exc)
                echo(f"warning: {layers_failure}; e3gnn/parallel uses the TorchScript layers (slower)")
        if parallel:
            files += sorted(f"{PARALLEL_DIR}/{p.name}" for p in (tmp / PARALLEL_DIR).iterdir())
            comm_size = _read_extra(tmp / PARALLEL_DIR / "deployed_parallel_0.pt", "comm_size")
        manifest = {
            "name": name,
            "kind": "sevenn",
            "elements": species,
            "units": "metal",
            "atom_style": "atomic",
            "cutoff": float(config["cutoff"]),
            "num_layers": int(config["num_convolution_layer"]),
            "dtype": str(config.get("dtype", "single")),
            "pair_style": "e3gnn",
            "files": files,
            "aot": aot_summary,
            **({"aot_failure": aot_failure} if aot_failure else {}),
            "parallel": {"dir": PARALLEL_DIR, "comm_size": int(comm_size), "pair_style": "e3gnn/parallel",
                         "aot": layers_summary, **({"aot_failure": layers_failure} if layers_failure else {})}
            if parallel
            else None,
            "provenance": {
                "checkpoint": str(checkpoint),
                "checkpoint_sha256": sha256(checkpoint),
                "pretrained_name": pretrained,
                **{f"{k}_version": v for k, v in _versions().items()},
                "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            },
        }
        (tmp / PAIR_FILE).write_text(pair_lines(manifest))
        write_json(tmp / MANIFEST, manifest)
        if verify:
            manifest["verification"] = verify_deployment(tmp, checkpoint, species, echo=echo)
            write_json(tmp / MANIFEST, manifest)
    echo(f"wrote {out}")
    return out


def _child_env() -> dict[str, str]:
    """This process's environment without the MPI launcher's variables, so that a child Python started
    under mpirun does not try to join the job."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_", "HYDRA_"))}


def _run_child(cmd: list[str]) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd)`` (output captured, :func:`_child_env`) whose child never outlives this process's
    interruption (Ctrl-C, SIGTERM): it would go on writing into a directory that the clean-up removed.

    Popen cannot hand back a child it started when a signal's exception arrives inside it, so SIGINT and
    SIGTERM are held while it starts and delivered right after."""
    held: list[int] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    try:
        if held:
            os.kill(os.getpid(), held[0])  # the restored handler raises now
        out, err = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def export_torchscript(checkpoint: Path, directory: Path, parallel: bool) -> None:
    """Write deployed_serial.pt (and deployed_parallel/) with SevenNet's exporters, in a child process.

    TorchScript compilation shares the process-wide class registry with every model that libtorch has
    loaded, and once LAMMPS has loaded a deployed model in this process, scripting the same SevenNet
    classes again fails ("Couldn't find method: 'forward' on class ...BesselBasis"). A fresh interpreter
    exports reliably whatever the caller did before.
    """
    cmd = [sys.executable, "-m", "nlmd.deploy", "export", str(checkpoint), str(directory)]
    if parallel:
        cmd.append("--parallel")
    proc = _run_child(cmd)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise ModelError(f"SevenNet could not export {checkpoint} to TorchScript: {lines[-1] if lines else 'no message'}")


def compile_aot(checkpoint: Path, out: Path, *, device: str = "auto", echo: Callable[[str], None] = print) -> dict:
    """Compile the serial model into the AOTInductor package ``out`` (nlmd.aot), in a child process for the
    reason given in export_torchscript(); return the compiler's summary or raise ModelError."""
    echo(f"compiling the serial model ahead of time with AOTInductor (a few minutes; --no-aot skips) -> {out.name}")
    cmd = [sys.executable, "-m", "nlmd.aot", str(checkpoint), str(out), "--device", device]
    proc = _run_child(cmd)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise ModelError(f"AOTInductor could not compile {checkpoint}: {err[-1] if err else 'no message'}")
    summary = json.loads(lines[-1])
    target = summary.get("gpu") or summary["cpu_isa"] or "this CPU"
    echo(f"compiled in {summary['export_s'] + summary['compile_s']:.0f} s for {summary['device']} ({target}); "
         f"package vs SevenNet's model: {summary['check_rel_dedr_diff']:.1e} (relative, energy gradient)")
    return summary


def compile_aot_layers(checkpoint: Path, directory: Path, *, device: str = "auto",
                       echo: Callable[[str], None] = print) -> dict:
    """Compile every layer of the parallel model into AOTInductor packages in ``directory`` (deployed_parallel/,
    nlmd.aot_layers), in a child process for the reason given in export_torchscript(); return the compiler's
    summary (aot_layers.json) or raise ModelError."""
    echo("compiling the parallel model's layers ahead of time with AOTInductor (minutes; --no-aot-layers skips)")
    cmd = [sys.executable, "-m", "nlmd.aot_layers", str(checkpoint), str(directory), "--device", device]
    proc = _run_child(cmd)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        for p in directory.glob("layer_*.pt2"):
            p.unlink()
        raise ModelError(f"AOTInductor could not compile the layers of {checkpoint}: {err[-1] if err else 'no message'}")
    summary = json.loads(lines[-1])
    echo(f"compiled {len(summary['layers'])} layers in {summary['total_s']:.0f} s for {summary['device']}; "
         f"packages vs SevenNet's layers: {summary['check_rel_diff']:.1e} (relative)")
    return summary


def _export_main(argv: list[str]) -> None:
    from sevenn.scripts.deploy import deploy as sevenn_deploy
    from sevenn.scripts.deploy import deploy_parallel as sevenn_deploy_parallel

    checkpoint, directory = argv[0], Path(argv[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sevenn_deploy(checkpoint, str(directory / SERIAL_FILE))
        if "--parallel" in argv:
            sevenn_deploy_parallel(checkpoint, str(directory / PARALLEL_DIR))


def _read_extra(path: Path, key: str) -> str:
    import torch

    extra = {key: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return extra[key]


def verify_deployment(directory: Path, checkpoint: Path, species: list[str], *,
                      echo: Callable[[str], None] = print, tol: float | None = None) -> dict:
    """Energy and forces of a probe structure through LAMMPS (the deployed file) and through
    SevenNetCalculator (the checkpoint); raise ModelError when forces differ by more than ``tol``."""
    from nlmd.evaluate import LammpsEvaluator

    tol = VERIFY_FORCE_TOL if tol is None else tol
    atoms = probe_structure(species)
    elements = sorted(set(atoms.get_chemical_symbols()), key=species.index)
    with LammpsEvaluator(directory, elements) as ev:
        lmp = ev.evaluate(atoms)
    ref_e, ref_f = _sevenn_reference(checkpoint, atoms)
    df = float(np.max(np.abs(lmp.forces - ref_f)))
    de = abs(lmp.energy - ref_e) / len(atoms)
    echo(f"verified on {atoms.get_chemical_formula()} (displaced): largest force difference "
         f"LAMMPS vs SevenNetCalculator {df:.2e} eV/A, energy difference {de:.2e} eV/atom")
    if not df <= tol:
        raise ModelError(
            f"verification failed for {checkpoint}: LAMMPS and SevenNetCalculator forces differ by {df:.3e} eV/A "
            f"(tolerance {tol:g}); nothing was written"
        )
    return {"probe": atoms.get_chemical_formula(), "max_force_diff": df, "energy_diff_per_atom": de,
            "tolerance": tol}


def _sevenn_reference(checkpoint: Path, atoms):
    from sevenn.calculator import SevenNetCalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calc = SevenNetCalculator(str(checkpoint), device="cpu")
        atoms = atoms.copy()
        atoms.calc = calc
        return float(atoms.get_potential_energy()), atoms.get_forces()


if __name__ == "__main__":  # the child process of export_torchscript()
    if len(sys.argv) < 4 or sys.argv[1] != "export":
        sys.exit("usage: python -m nlmd.deploy export CHECKPOINT DIRECTORY [--parallel]")
    _export_main(sys.argv[2:])
