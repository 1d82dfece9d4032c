"""Potential directories: what a LAMMPS input includes to get a potential, and how nlmd loads one.

A potential directory holds ``manifest.json`` and ``pair.lmp`` (see docs/contracts.md); a deployed
SevenNet model (:mod:`nlmd.deploy`) also holds ``deployed_serial.pt``, usually ``deployed_serial.pt2``
(the same model compiled ahead of time, see :mod:`nlmd.aot`) and, for several MPI ranks,
``deployed_parallel/``. Classical ones (``potentials/sro-rigid-ion``) hold the two files only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nlmd.errors import InputError
from nlmd.outputs import check_lammps_word

MANIFEST = "manifest.json"
PAIR_FILE = "pair.lmp"
SERIAL_FILE = "deployed_serial.pt"
AOT_FILE = "deployed_serial.pt2"
PARALLEL_DIR = "deployed_parallel"


@dataclass
class PotentialDirectory:
    """A loaded potential directory."""

    path: Path
    manifest: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "PotentialDirectory":
        path = Path(path)
        check_lammps_word(path.resolve(), "the potential directory")  # pair.lmp reaches it as ${potential}
        if not path.is_dir():
            raise InputError(f"{path}: no such potential directory (expected a directory with {MANIFEST} and {PAIR_FILE})")
        for name in (MANIFEST, PAIR_FILE):
            if not (path / name).is_file():
                raise InputError(f"{path} is not a potential directory: {name} is missing")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{path / MANIFEST}: not valid JSON ({exc})") from exc
        for key in ("elements", "units"):
            if key not in manifest:
                raise InputError(f"{path / MANIFEST}: the field '{key}' is missing")
        if manifest["units"] != "metal":
            raise InputError(f"{path / MANIFEST}: units is '{manifest['units']}', expected 'metal'")
        return cls(path=path.resolve(), manifest=manifest)

    @property
    def pair_file(self) -> Path:
        return self.path / PAIR_FILE

    @property
    def elements(self) -> list[str]:
        return list(self.manifest["elements"])

    @property
    def atom_style(self) -> str:
        return self.manifest.get("atom_style", "atomic")

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.name)
