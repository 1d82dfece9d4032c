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
    # the whole run in the message: under load MPICH's launcher dropped the failed rank's last lines on MPI_Abort
    assert len(errors) == 1, f"rc {res.returncode}\nstderr:\n{res.stderr[-3000:]}\nstdout:\n{res.stdout[-3000:]}"
    assert f"Out of range atoms - cannot compute PPPM (on rank {rank})" in errors[0]
    assert f"rank {rank} ends all 2 ranks" in errors[0]
    with TrajectoryReader(out) as r:
        n = r.n_frames
        assert n >= 10 and np.array_equal(r.steps, np.arange(n))  # every frame up to the error, none torn
        assert f"; {n} frames were written to {out}" in errors[0]


# --------------------------------------------------------------------------------------------------
# a full disk


@pytest.fixture
def small_disk(tmp_path):
    """``make(kib)``: a directory on a tmpfs of that size (mounting needs root; skipped without it)."""
    mounted: list[Path] = []

    def make(kib: int) -> Path:
        d = tmp_path / f"disk{kib}k"
        d.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(d)], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.decode().strip()})")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", str(d)], capture_output=True)


def blowup_input(tmp_path: Path) -> Path:
    inp = tmp_path / "four.in"
    inp.write_text(PPPM_BLOWUP)
    return inp


def nlmd(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nlmd", *args], cwd=cwd, env=lmp_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("kib, frames", [(64, 0), (320, 10)])
def test_run_into_a_full_disk_says_so_and_keeps_every_flushed_frame(tmp_path, small_disk, kib, frames):
    """Disk full at the start or after some blocks: one sentence, exit 1, no crash, the file readable."""
    disk = small_disk(kib)
    out = disk / "t.h5"
    # atom 2 moves slowly: no error before step 200, 201 frames (~240 kB) do not fit
    res = nlmd("run", str(blowup_input(tmp_path)), "-o", str(out), "--every", "1", "--quiet", "-v", "mover", "2",
               "--log", str(tmp_path / "t.log"), cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nlmd: error: disk full writing {out}"), res.stderr
    if frames == 0:
        assert "no frame was written" in lines[0] and not out.exists()
        return
    with TrajectoryReader(out) as r:
        n = r.n_frames
        assert n >= frames and n % 10 == 0 and np.array_equal(r.steps, np.arange(n))
        assert np.all(np.isfinite(r.read("force")))
    assert f"holds its first {n} frames, up to step {n - 1}" in lines[0]


def test_import_into_a_full_disk_writes_nothing(tmp_path, small_disk):
    import ase.io
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    rng = np.random.default_rng(0)
    for i in range(40):
        atoms = bulk("SrO", "rocksalt", a=5.2, cubic=True).repeat((2, 2, 2))
        atoms.rattle(0.05, seed=i)
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 * i, forces=rng.normal(size=(len(atoms), 3)))
        frames.append(atoms)
    src = tmp_path / "dft.extxyz"
    ase.io.write(src, frames)
    disk = small_disk(192)
    out = disk / "dft.h5"
    res = nlmd("import", str(src), "-o", str(out), cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nlmd: error: disk full writing {out}: no room for frame")
    assert "nothing was written" in lines[0]
    assert list(disk.iterdir()) == []  # no temporary file left


def test_writer_checks_the_free_space_before_each_block(tmp_path, monkeypatch):
    """Without a small file system (no root): the writer refuses a block that does not fit, keeps the rest."""
    import nlmd.h5md as H
    from nlmd.errors import DiskFullError

    free = [10**9]
    monkeypatch.setattr(H, "free_bytes", lambda path: free[0])
    out = tmp_path / "w.h5"
    w = H.TrajectoryWriter(out, flush_every=5)
    frame = dict(box=np.eye(3) * 10, ids=np.arange(1, 5), species=np.full(4, 8), positions=np.zeros((4, 3)),
                 forces=np.ones((4, 3)))
    for i in range(10):
        w.write(H.Frame(step=i, time=0.001 * i, **frame))
    free[0] = H.DISK_RESERVE_BYTES
    for i in range(10, 14):
        w.write(H.Frame(step=i, time=0.001 * i, **frame))
    with pytest.raises(DiskFullError, match=rf"^disk full writing {out} after 10 frames .*holds its first 10 frames, "
                                            r"up to step 9$"):
        w.write(H.Frame(step=14, time=0.014, **frame))
    w.close()
    with TrajectoryReader(out) as r:
        assert r.n_frames == 10


# --------------------------------------------------------------------------------------------------
# deploy: untrusted checkpoints, what --force may replace, modes, SIGTERM


class _Payload:
    """Unpickled, it creates the file ``marker`` (a stand-in for any code a pickle can run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_deploy_refuses_a_checkpoint_that_would_run_code(tmp_path):
    import torch
    from click.testing import CliRunner

    from nlmd.cli import main

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"config": {"cutoff": 5.0}, "model_state_dict": {}, "hook": _Payload(marker)}, evil)
    res = CliRunner().invoke(main, ["deploy", str(evil), "-o", str(tmp_path / "pot"), "--no-aot"])
    assert res.exit_code == 1, res.output
    assert not marker.exists()  # nothing of the file ran
    assert res.output.startswith(f"nlmd: error: {evil}: refused to load this checkpoint: it needs io.open")
    assert "--trust-checkpoint" in res.output and not (tmp_path / "pot").exists()
    # trusted on request: the payload runs (then it is not a SevenNet checkpoint)
    res = CliRunner().invoke(main, ["deploy", str(evil), "-o", str(tmp_path / "pot"), "--no-aot", "--trust-checkpoint"])
    assert res.exit_code == 1 and marker.exists()


def test_sevennet_checkpoints_pass_the_check(tiny_checkpoint):
    import sevenn.util

    from nlmd.deploy import check_checkpoint

    check_checkpoint(tiny_checkpoint)
    check_checkpoint(Path(sevenn.util.pretrained_name_to_path("7net-0")))


def test_deploy_force_replaces_only_a_potential_directory(tmp_path):
    from nlmd.errors import InputError
    from nlmd.deploy import _staging_dir

    folder = tmp_path / "potentials"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="is not a potential directory .*--force replaces only a potential"):
        with _staging_dir(folder, force=True):
            pass
    assert (folder / "notes.txt").read_text() == "keep"
    pot = tmp_path / "pot"
    pot.mkdir()
    (pot / "manifest.json").write_text("{}")
    with _staging_dir(pot, force=True) as tmp:
        (tmp / "manifest.json").write_text('{"new": 1}')
    assert (pot / "manifest.json").read_text() == '{"new": 1}'


def test_potential_directory_honours_the_umask(tmp_path):
    import os
    import stat

    from nlmd.deploy import _staging_dir

    old = os.umask(0o022)
    try:
        with _staging_dir(tmp_path / "pot", force=False) as tmp:
            (tmp / "manifest.json").write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "pot").stat().st_mode) == 0o755


def _wait_for(pattern: str, where: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    import time

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if list(where.glob(pattern)):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{pattern} did not appear in {timeout} s")


def test_sigterm_during_deploy_leaves_no_partial_directory(tmp_path, tiny_checkpoint):
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "nlmd", "deploy", str(tiny_checkpoint), "-o", str(tmp_path / "pot"),
                             "--no-aot"], cwd=tmp_path, env=lmp_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(".pot.*.part", tmp_path, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pot")] == []
    assert not (tmp_path / "pot").exists()


def sro_frames(path: Path, n_frames: int, repeat: int = 2) -> Path:
    """A trajectory file of displaced rocksalt SrO frames (positions only), for rescore."""
    from ase.build import bulk

    from nlmd.h5md import Frame, TrajectoryWriter

    atoms = bulk("SrO", "rocksalt", a=5.2, cubic=True).repeat((repeat,) * 3)
    rng = np.random.default_rng(3)
    ids = np.arange(1, len(atoms) + 1)
    with TrajectoryWriter(path) as w:
        for i in range(n_frames):
            w.write(Frame(step=i, time=0.001 * i, box=atoms.cell.array, ids=ids, species=atoms.numbers,
                          positions=atoms.positions + rng.normal(scale=0.05, size=(len(atoms), 3))))
    return path


def test_sigterm_during_rescore_leaves_no_partial_file(tmp_path):
    import signal

    frames = sro_frames(tmp_path / "frames.h5", 3000)
    out = tmp_path / "rescored.h5"
    proc = subprocess.Popen([sys.executable, "-m", "nlmd", "rescore", str(frames), "--potential",
                             str(REPO / "potentials/sro-rigid-ion"), "-o", str(out), "--quiet"], cwd=tmp_path,
                            env=lmp_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(".rescored.h5.*.part", tmp_path, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.h5"]


# --------------------------------------------------------------------------------------------------
# no command writes over its inputs, or over an existing output without --force


def test_run_never_writes_its_log_or_trajectory_over_the_input(tmp_path):
    from click.testing import CliRunner

    from nlmd.cli import main

    inp = blowup_input(tmp_path)
    text = inp.read_text()
    for args in (["-o", str(tmp_path / "t.h5"), "--log", str(inp)], ["-o", str(inp), "--force"]):
        res = CliRunner().invoke(main, ["run", str(inp), *args, "-v", "mover", "2"])
        assert res.exit_code == 1 and "is also an input of this command; nlmd never writes over its inputs" in res.output
        assert inp.read_text() == text
    res = CliRunner().invoke(main, ["run", str(inp), "-o", str(tmp_path / "t.h5"), "--log",
                                    str(tmp_path / "no" / "t.log")])
    assert res.exit_code == 1
    assert res.output == f"nlmd: error: --log {tmp_path / 'no' / 't.log'}: the directory {tmp_path / 'no'} does not exist\n"
    assert not (tmp_path / "t.h5").exists()


def test_import_needs_force_and_never_replaces_its_input(tmp_path):
    import ase.io
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from click.testing import CliRunner

    from nlmd.cli import main

    atoms = bulk("SrO", "rocksalt", a=5.2, cubic=True)
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)))
    src = tmp_path / "a.xyz"
    ase.io.write(src, [atoms])
    text = src.read_text()
    res = CliRunner().invoke(main, ["import", str(src), "-o", str(src), "--force"])
    assert res.exit_code == 1 and "is also an input of this command" in res.output and src.read_text() == text
    out = tmp_path / "a.h5"
    out.write_text("keep me")
    res = CliRunner().invoke(main, ["import", str(src), "-o", str(out)])
    assert res.exit_code == 1 and f"{out} exists; pass --force to overwrite it" in res.output
    assert out.read_text() == "keep me"
    res = CliRunner().invoke(main, ["import", str(src), "-o", str(out), "--force"])
    assert res.exit_code == 0, res.output
    with TrajectoryReader(out) as r:
        assert r.n_frames == 1


def test_compare_checks_its_json_path_first_and_writes_it_with_the_umask(tmp_path, monkeypatch):
    import os
    import stat

    from click.testing import CliRunner

    import nlmd.compare
    from nlmd.cli import main

    a = sro_frames(tmp_path / "a.h5", 2)
    calls = []
    monkeypatch.setattr(nlmd.compare, "compare_files", lambda *args, **kw: calls.append(args))
    bad = tmp_path / "a.h5"
    res = CliRunner().invoke(main, ["compare", str(a), str(a), "--json", str(bad)])
    assert res.exit_code == 1 and "--json" in res.output and "is also an input" in res.output and calls == []
    res = CliRunner().invoke(main, ["compare", str(a), str(a), "--by", "time", "--time-tol", "-1"])
    assert res.exit_code == 2 and "--time-tol" in res.output and calls == []
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path / "ro")
    (tmp_path / "ro").mkdir()
    res = CliRunner().invoke(main, ["compare", str(a), str(a), "--json", str(tmp_path / "ro" / "r.json")])
    assert res.exit_code == 1 and calls == []
    assert res.output == f"nlmd: error: --json {tmp_path / 'ro' / 'r.json'}: the directory {tmp_path / 'ro'} is not writable\n"
    old = os.umask(0o022)
    try:
        nlmd.compare.write_report({"x": 1}, tmp_path / "r.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("command", ["import", "rescore"])
def test_unwritable_output_directory_is_named_not_a_temporary_file(tmp_path, monkeypatch, command):
    import os

    import ase.io
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from click.testing import CliRunner

    from nlmd.cli import main

    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != ro and real_access(path, mode))
    if command == "import":
        atoms = bulk("SrO", "rocksalt", a=5.2, cubic=True)
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)))
        ase.io.write(tmp_path / "a.xyz", [atoms])
        args = ["import", str(tmp_path / "a.xyz")]
    else:
        args = ["rescore", str(sro_frames(tmp_path / "f.h5", 1)), "--potential", str(REPO / "potentials/sro-rigid-ion")]
    res = CliRunner().invoke(main, [*args, "-o", str(ro / "x.h5")])
    assert res.exit_code == 1
    assert res.output == f"nlmd: error: -o {ro / 'x.h5'}: the directory {ro} is not writable\n"


# --------------------------------------------------------------------------------------------------
# silent mistakes


def test_run_refuses_a_variable_the_input_does_not_know(tmp_path):
    from click.testing import CliRunner

    from nlmd.cli import main

    inp = REPO / "lammps_inputs/sro_rfix.in"
    out = tmp_path / "t.h5"
    res = CliRunner().invoke(main, ["run", str(inp), "-o", str(out), "-v", "temprature", "300"])
    assert res.exit_code == 1 and not out.exists()
    assert res.output == (f"nlmd: error: -v temprature: {inp} neither defines nor uses a variable 'temprature'; "
                          "did you mean -v temp?\n")


def test_variables_of_an_input_and_of_its_literal_includes(tmp_path):
    from nlmd.md.script import InputScript

    (tmp_path / "part.in").write_text("print ${from_include}\n")
    text = ('variable a index 1\nprint "${b} $c v_d"  # ${not_a_comment}\nif "$(is_defined(variable,e))" then &\n'
            '  "variable f equal 2"\ninclude part.in\ninclude ${potential}/pair.lmp\nrun 1\n')
    script = InputScript.parse(text, tmp_path / "in.x")
    assert script.variable_names() == {"a", "b", "c", "d", "e", "f", "from_include", "potential"}


def test_a_corrupt_manifest_stops_the_run(tmp_path):
    import shutil

    from nlmd.errors import InputError
    from nlmd.md.driver import stream_trajectory as run_input

    pot = tmp_path / "pot"
    shutil.copytree(REPO / "potentials/sro-rigid-ion", pot)
    (pot / "manifest.json").write_text('{"elements": ["Sr", "O"], "units": ')
    out = tmp_path / "t.h5"
    with pytest.raises(InputError, match=rf"the potential directory {pot} is broken: {pot}/manifest.json: not valid JSON"):
        run_input(REPO / "lammps_inputs/sro_rfix.in", out, variables={"potential": str(pot), "time": "0.002"},
                  quiet=True, log=tmp_path / "t.log")
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# VASP files ASE reads without a word: built here as VASP writes them (vasprun.xml 6.x layout)


def vasprun_text(n_frames: int, *, incar: dict[str, str] | None = None, initial_flags: bool = True,
                 final_flags: bool = True, seed: int = 0) -> str:
    """A vasprun.xml of an NVT MD run of rocksalt SrO (8 atoms), atom 1 fixed by selective dynamics."""
    from ase.build import bulk

    atoms = bulk("SrO", "rocksalt", a=5.2, cubic=True)
    rng = np.random.default_rng(seed)
    symbols = atoms.get_chemical_symbols()
    cell = atoms.cell.array
    v = lambda row: "<v>" + " ".join(f"{x:16.8f}" for x in row) + " </v>"  # noqa: E731
    flags = "\n".join(f"<v type=\"logical\"> {'F  F  F' if i == 0 else 'T  T  T'} </v>" for i in range(len(atoms)))

    def structure(name: str | None, scaled, with_flags: bool) -> str:
        attr = f' name="{name}"' if name else ""
        sel = f'<varray name="selective" type="logical">\n{flags}\n</varray>' if with_flags else ""
        return (f"<structure{attr}><crystal><varray name=\"basis\">{''.join(v(r) for r in cell)}</varray>"
                f"<i name=\"volume\">{atoms.get_volume():.6f}</i></crystal>"
                f"<varray name=\"positions\">{''.join(v(r) for r in scaled)}</varray>{sel}</structure>")

    params = {"IBRION": "0", "POTIM": "2.0", **(incar or {})}
    incar_xml = "".join(f'<i name="{k}">{val}</i>' for k, val in params.items())
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<modeling>',
        '<generator><i name="program" type="string">vasp </i><i name="version" type="string">6.4.2 </i></generator>',
        f"<incar>{incar_xml}</incar>",
        '<kpoints><generation param="Gamma"><v type="int" name="divisions"> 1 1 1 </v></generation>'
        '<varray name="kpointlist"><v> 0 0 0 </v></varray><varray name="weights"><v> 1 </v></varray></kpoints>',
        f'<parameters><separator name="ionic"><i type="int" name="IBRION"> 0</i><i name="POTIM"> 2.0</i>'
        f'</separator></parameters>',
        '<atominfo><atoms>8</atoms><types>2</types><array name="atoms"><dimension dim="1">ion</dimension>'
        '<field type="string">element</field><field type="int">atomtype</field><set>'
        + "".join(f"<rc><c>{s:2s}</c><c>{1 if s == 'Sr' else 2}</c></rc>" for s in symbols)
        + "</set></array></atominfo>",
        structure("initialpos", atoms.get_scaled_positions(), initial_flags),
    ]
    for k in range(n_frames):
        scaled = atoms.get_scaled_positions() + rng.normal(scale=0.005, size=(len(atoms), 3))
        forces = rng.normal(size=(len(atoms), 3))
        e = -40.0 - 0.1 * k
        parts.append(
            "<calculation>" + structure(None, scaled, False)
            + f"<varray name=\"forces\">{''.join(v(r) for r in forces)}</varray>"
            + f'<scstep><energy><i name="e_fr_energy">{e:.8f}</i><i name="e_0_energy">{e + 0.01:.8f}</i></energy></scstep>'
            + f'<energy><i name="e_fr_energy">{e:.8f}</i><i name="e_wo_entrp">{e:.8f}</i>'
            + f'<i name="e_0_energy">{e + 0.01:.8f}</i></energy></calculation>'
        )
    parts.append(structure("finalpos", atoms.get_scaled_positions(), final_flags))
    parts.append("</modeling>\n")
    return "\n".join(parts)


def test_a_complete_vasprun_imports_every_frame(tmp_path):
    from nlmd.importers import import_files

    src = tmp_path / "vasprun.xml"
    src.write_text(vasprun_text(3))
    result = import_files([src], tmp_path / "v.h5", dt_fs=2.0)
    assert result.n_frames == 3 and result.fixed_core is not None and list(result.fixed_core.core_ids) == [1]


def test_a_truncated_vasprun_is_refused(tmp_path):
    from nlmd.errors import InputError
    from nlmd.importers import import_files

    text = vasprun_text(3)
    cut = text.index("<calculation>", text.index("<calculation>", text.index("<calculation>") + 1) + 1) + 300
    src = tmp_path / "vasprun.xml"
    src.write_text(text[:cut])  # VASP killed while writing the third frame
    out = tmp_path / "v.h5"
    with pytest.raises(InputError, match=r"vasprun.xml: the XML ends early .*only its 2 complete frames"):
        import_files([src], out)
    assert not out.exists()


def test_a_machine_learning_vasp_run_is_refused(tmp_path):
    from nlmd.errors import InputError
    from nlmd.importers import import_files

    src = tmp_path / "vasprun.xml"
    src.write_text(vasprun_text(3, incar={"ML_LMLFF": "T", "ML_MODE": "train"}))
    with pytest.raises(InputError, match="a VASP machine-learning run .* cannot give them steps or times"):
        import_files([src], tmp_path / "v.h5")


def test_selective_dynamics_only_in_the_final_structure(tmp_path):
    from nlmd.importers import import_files

    src = tmp_path / "vasprun.xml"
    src.write_text(vasprun_text(2, initial_flags=False, final_flags=True))
    result = import_files([src], tmp_path / "v.h5", dt_fs=2.0)
    assert result.fixed_core is not None and list(result.fixed_core.core_ids) == [1]
    with TrajectoryReader(tmp_path / "v.h5") as r:
        assert list(r.fixed_core.core_ids) == [1]


# --------------------------------------------------------------------------------------------------
# other writers' files, other readers


def test_scalar_step_and_time_of_h5md_11_are_read(tmp_path):
    """H5MD 1.1 lets step and time be a fixed interval (scalar datasets, znh5md writes them so)."""
    import h5py

    path = sro_frames(tmp_path / "f.h5", 4)
    with h5py.File(path, "r+") as f:
        pos = f["particles/trajectory/position"]
        for name in ("step", "time"):
            for group in list(f["particles/trajectory"].values()) + list(f["observables/trajectory"].values()
                                                                          if "observables" in f else []):
                if isinstance(group, h5py.Group) and name in group:
                    del group[name]
        pos["step"] = np.int64(5)
        pos["step"].attrs["offset"] = np.int64(100)
        pos["time"] = 0.005
    with TrajectoryReader(path) as r:
        assert r.n_frames == 4
        assert list(r.steps) == [100, 105, 110, 115]
        np.testing.assert_allclose(r.times, [0.0, 0.005, 0.01, 0.015])
        assert r.frame(2).step == 110


def test_mdanalysis_gets_the_files_dt_and_right_periodic_distances(tmp_path):
    from ase.build import bulk
    from ase.geometry import get_distances
    from MDAnalysis.lib.distances import distance_array
    from nlmd.h5md import Frame, TrajectoryWriter, open_mdanalysis

    # a triclinic cell as VASP would hand it over: rotated, rows not lower-triangular
    atoms = bulk("SrO", "rocksalt", a=5.2).repeat((2, 2, 2))
    rot, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(3, 3)))  # a random orthogonal matrix ...
    rot *= np.sign(np.linalg.det(rot))  # ... turned proper
    cell = atoms.cell.array @ rot
    rng = np.random.default_rng(1)
    frac = atoms.get_scaled_positions() + rng.normal(scale=0.02, size=(len(atoms), 3))
    pos = frac @ cell
    forces = rng.normal(size=(len(atoms), 3))
    path = tmp_path / "v.h5"
    ids = np.arange(1, len(atoms) + 1)
    with TrajectoryWriter(path) as w:
        for i in range(3):
            w.write(Frame(step=2 * i, time=0.004 * i, box=cell, ids=ids, species=atoms.numbers, positions=pos,
                          forces=forces))
    u = open_mdanalysis(path, convert_units=False)
    assert u.trajectory.dt == pytest.approx(0.004)
    u.trajectory[1]
    _, expected = get_distances(pos[:5], pos, cell=cell, pbc=True)
    got = distance_array(u.atoms.positions[:5], u.atoms.positions, box=u.dimensions)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # forces turn with the positions: |F| and F . r_ij are those of the file
    np.testing.assert_allclose(np.linalg.norm(u.atoms.forces, axis=1), np.linalg.norm(forces, axis=1), rtol=1e-5)
    d_file = pos[1] - pos[0]
    d_mda = u.atoms.positions[1] - u.atoms.positions[0]
    np.testing.assert_allclose(forces[0] @ d_file, u.atoms.forces[0] @ d_mda, rtol=1e-4, atol=1e-5)


def test_author_email_is_written(tmp_path, monkeypatch):
    import h5py

    monkeypatch.setenv("NLMD_AUTHOR_EMAIL", "someone@example.org")
    path = sro_frames(tmp_path / "f.h5", 1)
    with h5py.File(path, "r") as f:
        assert f["h5md/author"].attrs["email"] == "someone@example.org"
        assert f["h5md/creator"].attrs["name"] == "nlmd"


def test_paths_with_spaces_are_refused_in_one_sentence(tmp_path):
    """LAMMPS splits ${potential} and ${prefix} at spaces (it substitutes outside quotes only)."""
    import shutil

    from click.testing import CliRunner

    from nlmd.cli import main

    pot = tmp_path / "my pots" / "rigid"
    shutil.copytree(REPO / "potentials/sro-rigid-ion", pot)
    inp = REPO / "lammps_inputs/sro_rfix.in"
    res = CliRunner().invoke(main, ["run", str(inp), "-o", str(tmp_path / "t.h5"), "-v", "potential", str(pot)])
    assert res.exit_code == 1 and f"-v potential '{pot}' contains a space: LAMMPS splits it" in res.output
    (tmp_path / "out dir").mkdir()
    out = tmp_path / "out dir" / "t.h5"
    res = CliRunner().invoke(main, ["run", str(inp), "-o", str(out), "-v", "potential", str(REPO / "potentials/sro-rigid-ion")])
    assert res.exit_code == 1 and "-v prefix (the input's dump files; from -o)" in res.output and not out.exists()
    res = CliRunner().invoke(main, ["deploy", "7net-0", "-o", str(tmp_path / "my pot"), "--no-aot"])
    assert res.exit_code == 1 and "the potential directory" in res.output and "contains a space" in res.output


def test_a_plugin_that_does_not_load_is_named_with_the_reason(tmp_path):
    """In a fresh process (a process that already loaded the plugin keeps its pair styles)."""
    import os
    import subprocess
    import sys

    broken = tmp_path / "lib"
    broken.mkdir()
    (broken / "nlmdplugin.so").write_text("not a shared object")
    env = {k: v for k, v in os.environ.items() if k != "LAMMPS_PLUGIN_PATH"}
    env["NLMD_PLUGIN_DIR"] = str(broken)
    inp = tmp_path / "in.e3gnn"
    inp.write_text("units metal\nregion b block 0 5 0 5 0 5\ncreate_box 1 b\nmass 1 1.0\npair_style e3gnn\nrun 1\n")
    res = subprocess.run([sys.executable, "-m", "nlmd", "run", str(inp), "-o", str(tmp_path / "t.h5"), "--quiet"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr[-2000:]
    msg = res.stderr
    assert "Unrecognized pair style 'e3gnn'" in msg
    assert f"the nlmd plugin {broken / 'nlmdplugin.so'} did not load (" in msg and "file too short" in msg
