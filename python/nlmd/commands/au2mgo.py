"""``nlmd au2mgo``: Au₂ on MgO(001) and on Al-doped MgO (Kang 2024, Fig. 6) with any potential directory.

``nlmd au2mgo --potential potentials/7net-0 -o au2mgo`` relaxes the wetting and non-wetting Au₂ on both
supports (support fixed), scans the force on the upright cluster, and writes into the directory
``au2mgo/``: ``result.json`` (energies, E_wetting − E_non-wetting per support, the scan, the model's reach
against the Al–Au₂ distance), ``fig6b.png``, ``fig6c.png`` and ``structures/`` (the starting cells as
POSCAR with selective dynamics, support ``F F F``, for a DFT reference from the very same cells, and
as LAMMPS data; the relaxed ones also as extxyz; the scan frames as extxyz).
See :mod:`nlmd.au2mgo` for the geometry and the method.
The directory appears complete or not at all (written beside it, then renamed).
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path

import click

from nlmd import au2mgo as M


@click.command(name="au2mgo", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--potential", "potential", default="potentials/7net-0", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Potential directory (nlmd deploy, or a classical one) knowing Mg, O, Al and Au.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (must not exist, unless --force).")
@click.option("--a", "a", type=float, default=M.MGO_A, show_default=True, help="MgO lattice constant (Å).")
@click.option("--lateral", type=click.IntRange(min=1), default=M.LATERAL, show_default=True,
              help="Conventional cells along x and y (the slab is lateral·a square).")
@click.option("--layers", type=click.IntRange(min=2), default=M.LAYERS, show_default=True,
              help="Atomic layers of the slab.")
@click.option("--dopant-layer", type=click.IntRange(min=1), default=M.DOPANT_LAYER, show_default=True,
              help="Layers below the top layer where Al replaces Mg (5: 10.5 Å below the surface).")
@click.option("--vacuum", type=float, default=M.VACUUM, show_default=True, help="Empty space above the top layer (Å).")
@click.option("--bond", type=float, default=M.BOND, show_default=True, help="Starting Au–Au distance (Å).")
@click.option("--height", type=float, default=M.HEIGHT, show_default=True,
              help="Starting height of the (lower) Au above the surface (Å).")
@click.option("--fmax", type=float, default=0.05, show_default=True, help="BFGS force criterion on Au (eV/Å).")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True,
              help="Most BFGS steps per relaxation.")
@click.option("--scan", nargs=3, type=(float, float, int), default=(1.9, 3.0, 10), show_default=True,
              help="Force scan: START END POINTS of the lower Au – O distance (Å).")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
def command(potential, output, a, lateral, layers, dopant_layer, vacuum, bond, height, fmax, steps, scan, force):
    """Au₂ on MgO(001) and Al-doped MgO: E_wetting − E_non-wetting (Fig. 6b) and the force scan (Fig. 6c).

    Under `mpirun -np N nlmd au2mgo ...` every rank runs LAMMPS and rank 0 writes.
    """
    from nlmd.errors import InputError, NlmdError
    from nlmd.outputs import atomic_path, command_line, world_comm, write_json
    from nlmd.structures import write_extxyz, write_lammps_data, write_poscar

    if not (potential / "pair.lmp").is_file():
        raise InputError(f"--potential {potential}: no pair.lmp there; expected a potential directory "
                         "(nlmd deploy, e.g. potentials/7net-0)")
    if output.exists() and not force:
        raise InputError(f"-o {output} exists; choose another directory or pass --force")
    if not output.parent.is_dir():
        raise InputError(f"-o {output}: the directory {output.parent} does not exist")
    comm = world_comm(None)
    root = comm.rank == 0
    t0 = time.perf_counter()
    # rank 0 writes into a directory beside OUTPUT that replaces it at the end, or vanishes on an error
    with atomic_path(output, directory=True) if root else nullcontext() as tmp:
        try:
            result = M.run_au2mgo(potential, a=a, lateral=lateral, layers=layers, vacuum=vacuum,
                                  dopant_layer=dopant_layer, bond=bond, height=height, fmax=fmax, steps=steps,
                                  scan=scan, comm=comm, log=tmp / "lammps.log" if root else None,
                                  echo=click.echo if root else (lambda s: None))
        except NlmdError:
            if not root:  # rank 0 reports it (every rank raised the same error)
                sys.exit(1)
            raise
        if not root:
            return
        structures = result.pop("structures")
        result["command"] = command_line(ranks=comm.size, defaults=True)
        result["ranks"] = comm.size
        result["seconds"] = round(time.perf_counter() - t0, 1)
        sdir = tmp / "structures"
        sdir.mkdir()
        for key, atoms in structures.items():
            if key.endswith("_scan"):
                import ase.io

                ase.io.write(sdir / f"{key}.extxyz", atoms, format="extxyz")
            else:
                present = [e for e in M.ELEMENTS if e in atoms.symbols]
                write_poscar(atoms, sdir / f"{key}.POSCAR", elements=present)
                # LAMMPS types in ELEMENTS order on both supports (type 3 = Al exists, with no atom, on MgO)
                write_lammps_data(atoms, sdir / f"{key}.data", elements=M.ELEMENTS)
                if key.endswith(".relaxed"):
                    write_extxyz(atoms, sdir / f"{key}.extxyz")
        M.plot(result, tmp)
        write_json(tmp / "result.json", result, indent=1)
    s = result["supports"]
    click.echo(
        f"E_wetting - E_non-wetting: MgO {s['MgO']['dE_atoms']:.4f} eV, Al-MgO {s['Al-MgO']['dE_atoms']:.4f} eV "
        f"(paper's 3-layer model: {M.PAPER_3LAYER['MgO']}, {M.PAPER_3LAYER['Al-MgO']}); "
        f"Al-Au2 {result['dopant_au_distance']:.2f} A; wrote {output}/ in {result['seconds']} s"
    )
