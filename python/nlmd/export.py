"""Trajectory file -> training set: frames with energy, forces and stress as ASE writes them.

``nlmd export traj.h5 -o train.extxyz`` turns the frames of an H5MD trajectory file (``nlmd run``,
``nlmd rescore`` or ``nlmd import``) into a file that SevenNet's trainer (``sevenn``) and every other
ASE-based tool reads: each frame an :class:`ase.Atoms` with a single-point calculator holding the
potential energy (eV), the forces (eV/Angstrom) and, where the file has it, the stress (eV/Angstrom^3,
ASE's sign). The format follows the output's extension through ``ase.io.write`` (extxyz by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nlmd.errors import InputError

__all__ = ["ExportResult", "export_frames"]

#: labels a training frame must carry, and what the trajectory file stores them as
_LABELS = {"energy": "potential_energy (an observable)", "forces": "force"}


@dataclass
class ExportResult:
    """What :func:`export_frames` wrote."""

    source: Path
    output: Path
    n_frames: int
    n_atoms: int
    steps: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "output": str(self.output),
            "frames": self.n_frames,
            "atoms": self.n_atoms,
            "first_step": self.steps[0] if self.steps else None,
            "last_step": self.steps[-1] if self.steps else None,
            "labels": self.labels,
        }


def export_frames(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    every: int = 1,
    start_step: int | None = None,
    stop_step: int | None = None,
    stress: bool | None = None,
    force: bool = False,
    format: str | None = None,
) -> ExportResult:
    """Write the frames of ``source`` with ``start_step <= step <= stop_step`` (every ``every``-th) to ``output``.

    ``stress``: None writes the stress where the file has it, True requires it, False leaves it out.
    Frames without a potential energy or forces are refused (a training set needs both). ``output`` is
    written whole or not at all (temporary file, then rename); an existing file is replaced only with
    ``force``, and never when it is ``source`` itself.
    """
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from nlmd.h5md import TrajectoryReader
    from nlmd.outputs import atomic_write, check_output

    source = Path(source)
    if int(every) < 1:
        raise InputError(f"--every must be a positive number of frames, got {every}")
    output = check_output(output, inputs=[source], force=force)
    with TrajectoryReader(source) as reader:
        missing = [what for key, what in _LABELS.items()
                   if not (reader.has("force") if key == "forces" else "potential_energy" in reader.observable_names)]
        if missing:
            raise InputError(
                f"{source}: has no {' and no '.join(missing)}; a training frame needs the potential energy and the "
                "forces (a file written by `nlmd run --no-energies` has no energies: run without it)"
            )
        has_stress = "stress" in reader.observable_names
        if stress and not has_stress:
            raise InputError(f"{source}: has no stress observable (nlmd run records it since nlmd 0.1; "
                             "rescore or import frames do not carry one)")
        want_stress = has_stress if stress is None else bool(stress)
        steps = np.asarray(reader.steps)
        keep = np.ones(steps.size, dtype=bool)
        if start_step is not None:
            keep &= steps >= start_step
        if stop_step is not None:
            keep &= steps <= stop_step
        rows = np.flatnonzero(keep)[:: int(every)]
        if rows.size == 0:
            raise InputError(f"{source}: no frame has a step in the range asked for "
                             f"(steps {int(steps.min()) if steps.size else '-'}..{int(steps.max()) if steps.size else '-'})")
        periodic = [b == "periodic" for b in reader.boundary]
        images = []
        for i in rows:
            frame = reader.frame(int(i))
            atoms = Atoms(numbers=frame.species, positions=frame.positions, cell=frame.box, pbc=periodic)
            atoms.info["step"] = int(frame.step)
            if np.isfinite(frame.time):
                atoms.info["time_ps"] = float(frame.time)
            results: dict[str, Any] = {
                "energy": float(frame.observables["potential_energy"]),
                "forces": np.asarray(frame.forces, dtype=np.float64),
            }
            if want_stress:
                results["stress"] = np.asarray(frame.observables["stress"], dtype=np.float64)
            atoms.calc = SinglePointCalculator(atoms, **results)
            images.append(atoms)
        labels = ["energy", "forces"] + ["stress"] * bool(want_stress)

    fmt = format or ("extxyz" if output.suffix in (".xyz", ".extxyz", "") else None)

    def write(tmp: Path) -> None:
        ase.io.write(tmp, images, format=fmt or ase.io.formats.filetype(output, read=False))

    atomic_write(output, write)
    return ExportResult(source=source, output=output, n_frames=len(images), n_atoms=len(images[0]),
                        steps=[int(a.info["step"]) for a in images], labels=labels)
