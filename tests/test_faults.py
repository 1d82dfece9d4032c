"""Faults and foreign files (issue 15): errors on one MPI rank, inputs never overwritten, a full disk,
untrusted checkpoints, silent mistakes, unclear messages and other programs' files.

Each test fails on the code before the fix it covers; MPI tests start real processes with timeouts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, lmp_env, which

from nlmd.h5md import TrajectoryReader

# --------------------------------------------------------------------------------------------------
# an error on one MPI rank ends every rank

#: four charged atoms in a 20 A box split along x between two ranks (atoms 1, 2 on rank 0; 3, 4 on
#: rank 1); atom ${mover} flies along x without re-neighbouring until PPPM finds it out of range, an
#: error of that rank alone (LAMMPS's error->one)
PPPM_BLOWUP = """\
units metal
atom_style charge
atom_modify map array
boundary p p p
region box block 0 20 0 10 0 10
create_box 2 box
mass 1 87.62
mass 2 15.999
create_atoms 1 single 4 5 5
create_atoms 2 single 6 5 5
create_atoms 1 single 14 5 5
create_atoms 2 single 16 5 5
set type 1 charge 0.01
set type 2 charge -0.01
variable elements string "Sr O"
pair_style coul/long 4.0
pair_coeff * *
kspace_style pppm 1.0e-4
neigh_modify every 1000 delay 1000 check no
variable mover index 1
group mover id ${mover}
velocity mover set 80 0 0
fix nve all nve
timestep 0.001
thermo 1
run 200
"""


@pytest.mark.mpi
@pytest.mark.parametrize("mover, rank", [(1, 0), (3, 1)])
def test_an_error_on_one_rank_ends_every_rank(tmp_path, mover, rank):
    """"Out of range atoms" on rank 0 or on rank 1 alone: both ranks end within seconds, exit 1, the
    error is printed once, and every frame taken before the error is in the file."""
    inp = tmp_path / "blowup.in"
    inp.write_text(PPPM_BLOWUP)
    out = tmp_path / "b.h5"
    cmd = [which("mpirun"), "-np", "2", sys.executable, "-m", "nlmd", "run", str(inp), "-o", str(out),
           "--every", "1", "--quiet", "-v", "mover", str(mover)]
    res = subprocess.run(cmd, cwd=tmp_path, env=lmp_env(), capture_output=True, text=True, timeout=90)
    assert res.returncode != 0
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("nlmd: error:")]
    assert len(errors) == 1, res.stderr
    assert f"Out of range atoms - cannot compute PPPM (on rank {rank})" in errors[0]
    assert f"rank {rank} ends all 2 ranks" in errors[0]
    with TrajectoryReader(out) as r:
        n = r.n_frames
        assert n >= 10 and np.array_equal(r.steps, np.arange(n))  # every frame up to the error, none torn
        assert f"; {n} frames were written to {out}" in errors[0]
