"""Find the plugin and MPI, and open LAMMPS instances with both loaded.

The plugin (``nlmdplugin.so``) is installed inside this package, in ``nlmd/lib``. Its directory is
registered under the ``lammps.plugins`` entry point (see pyproject.toml), so the wheel's ``lmp`` launcher
puts it on ``LAMMPS_PLUGIN_PATH`` and LAMMPS auto-loads it. In-process instances need the same path set
before they are created, and libmpi loaded before liblammps (importing mpi4py does both here).
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from nlmd.errors import SimulationError

if TYPE_CHECKING:  # pragma: no cover
    import lammps

PLUGIN_FILE = "nlmdplugin.so"
#: the pair styles the plugin registers
PLUGIN_STYLES = ("e3gnn", "e3gnn/sevenn", "e3gnn/parallel")


def _candidate_dirs() -> Iterator[Path]:
    env = os.environ.get("NLMD_PLUGIN_DIR")
    if env:
        yield Path(env)
    yield Path(__file__).resolve().parent / "lib"
    # editable installs: python sources come from the checkout, the built plugin from site-packages
    for entry in sys.path:
        if entry:
            yield Path(entry) / "nlmd" / "lib"


def find_plugin() -> Path:
    """Return the path of the installed ``nlmdplugin.so``; raise SimulationError if it is not installed."""
    seen = []
    for d in _candidate_dirs():
        f = d / PLUGIN_FILE
        if f.is_file():
            return f
        seen.append(str(d))
    raise SimulationError(
        f"the LAMMPS plugin {PLUGIN_FILE} is not installed (looked in {', '.join(dict.fromkeys(seen))}); "
        "reinstall nlmd with `pip install --no-build-isolation .` or run `bash .ci/setup`"
    )


def plugin_dir() -> str:
    """Entry point for ``lammps.plugins``: the directory holding ``nlmdplugin.so`` ('' if not installed)."""
    try:
        return str(find_plugin().parent)
    except SimulationError:
        return ""


def mpi_library_dir() -> Path | None:
    """Directory of ``libmpi.so`` from the mpich wheel, or None when it is not installed."""
    from importlib import metadata

    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.startswith("libmpi.so"):
            return Path(f.locate()).resolve().parent
    return None


def ensure_mpi() -> None:
    """Load libmpi into this process (through mpi4py) so that liblammps resolves its MPI symbols."""
    from mpi4py import MPI  # noqa: F401  (imported for its side effect: MPI_Init and libmpi loaded)


def plugin_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which ``lmp`` (or the lammps module) loads our plugin and finds libmpi."""
    env = dict(os.environ if env is None else env)
    pdir = str(find_plugin().parent)
    paths = [p for p in env.get("LAMMPS_PLUGIN_PATH", "").split(":") if p]
    if pdir not in paths:
        env["LAMMPS_PLUGIN_PATH"] = ":".join([pdir, *paths])
    mdir = mpi_library_dir()
    if mdir is not None:
        ld = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
        if str(mdir) not in ld:
            env["LD_LIBRARY_PATH"] = ":".join([*ld, str(mdir)])
    return env


def executable(name: str) -> str:
    """Path of a console script of this environment (``lmp``, ``mpirun``, ``nlmd``)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise SimulationError(f"the program `{name}` was not found next to {sys.executable} nor on PATH")
    return found


@contextmanager
def open_lammps(
    comm=None,
    *,
    log: str | os.PathLike | None = None,
    screen: bool = False,
    args: Iterable[str] = (),
) -> Iterator["lammps.lammps"]:
    """Open an in-process LAMMPS instance with the nlmd plugin loaded; always closed on exit.

    ``comm`` is an mpi4py communicator (None: MPI.COMM_WORLD). ``log`` is the LAMMPS log file (None: no log).
    """
    ensure_mpi()
    os.environ.update({k: v for k, v in plugin_environment().items() if k == "LAMMPS_PLUGIN_PATH"})
    import lammps

    cmdargs = ["-nocite", "-log", str(log) if log else "none"]
    if not screen:
        cmdargs += ["-screen", "none"]
    cmdargs += list(args)
    try:
        lmp = lammps.lammps(cmdargs=cmdargs, comm=comm)
    except Exception as exc:  # the lammps module raises plain Exception
        raise SimulationError(f"could not start LAMMPS: {exc}") from exc
    try:
        _check_plugin_loaded(lmp)
        yield lmp
    finally:
        lmp.close()


#: why the plugin did not load into the last LAMMPS instance opened here (None: it did)
_plugin_problem: str | None = None


def _check_plugin_loaded(lmp: "lammps.lammps") -> None:
    """Note why LAMMPS did not load the plugin (it only warns, on a screen nlmd turns off), for plugin_hint()."""
    global _plugin_problem
    _plugin_problem = None
    try:
        if set(PLUGIN_STYLES) & set(loaded_styles(lmp)):
            return
        path = find_plugin()
    except Exception as exc:  # noqa: BLE001 - not installed, or no PLUGIN package
        _plugin_problem = str(exc)
        return
    import ctypes

    try:
        ctypes.CDLL(str(path), mode=getattr(os, "RTLD_LOCAL", 0))
        why = "LAMMPS did not register its styles"
    except OSError as exc:  # the dynamic loader's own reason: a missing library, an undefined symbol, ...
        why = str(exc)
    _plugin_problem = f"the nlmd plugin {path} did not load ({why}); see `nlmd info`"


def plugin_hint(message: str) -> str:
    """``message`` of a LAMMPS error, with the reason the plugin did not load when the error is that
    LAMMPS does not know one of its styles."""
    if _plugin_problem and "Unrecognized pair style" in message and any(s in message for s in PLUGIN_STYLES):
        return f"{message}: {_plugin_problem}"
    return message


def commands(lmp: "lammps.lammps", text: str | Iterable[str], *, where: str = "LAMMPS input") -> None:
    """Run LAMMPS commands; a LAMMPS error becomes a SimulationError carrying LAMMPS's own message."""
    if not isinstance(text, str):
        text = "\n".join(text)
    try:
        lmp.commands_string(text)
    except Exception as exc:
        raise SimulationError(f"{where}: LAMMPS stopped with: {plugin_hint(str(exc).strip())}") from exc


def loaded_styles(lmp: "lammps.lammps", category: str = "pair") -> list[str]:
    """Styles of a category that the plugin registered in this instance."""
    import ctypes

    styles = []
    n = lmp.lib.lammps_plugin_count()
    name = ctypes.create_string_buffer(100)
    style = ctypes.create_string_buffer(100)
    for i in range(n):
        lmp.lib.lammps_plugin_name(i, style, name, 100)
        if style.value.decode() == category:
            styles.append(name.value.decode())
    return styles
