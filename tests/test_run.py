"""``nlmd run`` and the nlmd.md package: one LAMMPS run streamed to H5MD, checked against LAMMPS's own output.

Most runs use the rigid-ion reference (potentials/sro-rigid-ion: no torch, any number of ranks, a few ms
per step); one uses the tiny SevenNet potential. In-process runs call :func:`nlmd.md.driver.stream_trajectory`; the
signal tests and the MPI test start real processes.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO, lmp_env, which

from nlmd import structures as S
from nlmd.cli import main
from nlmd.errors import InputError, SimulationError
from nlmd.h5md import TrajectoryReader
from nlmd.md.driver import stream_trajectory
from nlmd.outputs import summary_path
from nlmd.md.loop import Observer, StreamedRun
from nlmd.md.script import InputScript, split_commands

RFIX_IN = REPO / "lammps_inputs/sro_rfix.in"
RIGID = REPO / "potentials/sro-rigid-ion"


def rigid(**variables) -> dict[str, str]:
    return {"potential": str(RIGID), **{k: str(v) for k, v in variables.items()}}


def read_center_dump(path: Path) -> dict[int, np.ndarray]:
    """step -> (x y z fx fy fz) of the one atom of ``${prefix}.center.dump``."""
    out: dict[int, np.ndarray] = {}
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line == "ITEM: TIMESTEP":
            step = int(lines[i + 1])
            cols = lines[i + 8].split()[2:]
            row = dict(zip(cols, lines[i + 9].split()))
            out[step] = np.array([float(row[k]) for k in ("x", "y", "z", "fx", "fy", "fz")])
    return out


def nlmd_command(*args: str, ranks: int = 0) -> list[str]:
    cmd = [sys.executable, "-m", "nlmd", "run", *args]
    return [which("mpirun"), "-np", str(ranks), *cmd] if ranks else cmd


# --------------------------------------------------------------------------------------------------
# the input file


def test_split_commands_joins_continuations_and_strips_comments():
    text = 'units metal  # a comment\n\nif "${a} > 1" then &\n   "print \'# not a comment\'" &\n   "run 5"\n# run 3\nrun ${n} # last\n'
    cmds = split_commands(text)
    assert [c.name for c in cmds] == ["units", "if", "run"]
    assert (cmds[1].first_line, cmds[1].last_line) == (3, 5)
    assert "# not a comment" in cmds[1].text and cmds[2].words == ["run", "${n}"]


def test_input_script_finds_the_final_top_level_run(tmp_path):
    script = InputScript.read(RFIX_IN)
    assert script.final_run.words == ["run", "${nsteps}"]
    assert script.head.rstrip().endswith("dump_modify traj sort id format float %.10g\"")
    assert script.tail.strip() == ""
    s = InputScript.parse("run 5\nrun 7 post no\nwrite_data x.data\n")
    assert s.final_run.words == ["run", "7", "post", "no"] and s.head == "run 5" and s.tail == "write_data x.data"


@pytest.mark.parametrize(
    "text, message",
    [
        ("units metal\n", "has no top-level `run` command"),
        ('if "1 > 0" then "run 5"\n', "has no top-level `run` command"),
        ("label loop\nrun 5\nnext i\njump SELF loop\n", "`label` moves execution"),
        ("run 100 every 10 \"print hi\"\n", "splits it into several runs"),
    ],
)
def test_input_script_refuses_what_it_cannot_stream(text, message):
    with pytest.raises(InputError, match=message):
        InputScript.parse(text, "in.test")


# --------------------------------------------------------------------------------------------------
# a fixed-core run with the rigid-ion reference (run once, checked by several tests)


@pytest.fixture(scope="module")
def rfix_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rfix") / "traj.h5"
    summary = stream_trajectory(RFIX_IN, out, every=5, variables=rigid(time=0.1), quiet=True, command="nlmd run test")
    return out, summary


def test_run_writes_the_layout_of_h5md_md(rfix_run):
    out, summary = rfix_run
    with h5py.File(out, "r") as f:
        assert list(f["h5md"].attrs["version"]) == [1, 1]
        assert f["h5md/creator"].attrs["name"] == "nlmd"
        root = f["particles/trajectory"]
        for name, unit in [("position", "Angstrom"), ("velocity", "Angstrom ps-1"), ("force", "eV Angstrom-1"),
                           ("energies", "eV"), ("species", None), ("id", None)]:
            grp = root[name]
            assert grp["value"].shape[:2] == (21, 144), name
            assert grp["step"] == root["position/step"] and grp["time"] == root["position/time"]  # hard links
            if unit:
                assert grp["value"].attrs["unit"] == unit
        assert root["box/edges/value"].shape == (21, 3, 3)
        assert list(root["box"].attrs["boundary"]) == ["periodic"] * 3
        assert list(root["position/step"][:4]) == [0, 5, 10, 15]
        assert np.allclose(root["position/time"][:4], [0.0, 0.005, 0.010, 0.015])
        obs = f["observables/trajectory"]
        assert set(obs) == {"potential_energy", "temperature", "f_center", "stress"}
        assert obs["temperature/value"].attrs["unit"] == "K" and obs["potential_energy/value"].shape == (21,)
        assert obs["stress/value"].shape == (21, 6) and obs["stress/value"].attrs["unit"] == "eV Angstrom-3"
        p = f["parameters"]
        assert p.attrs["units"] == "metal" and p.attrs["source"] == "lammps"
        assert p.attrs["command"] == "nlmd run test"
        assert p.attrs["input_script"] == RFIX_IN.read_text()
        assert json.loads(p.attrs["model"])["name"] == "sro-rigid-ion"
        assert json.loads(p.attrs["variables"])["time"] == "0.1"
        assert p.attrs["lammps_version"] == 20250722 and p.attrs["temperature_compute"] == "tmob"
        assert p["fixed_core"].attrs["center_id"] == 1 and p["fixed_core"].attrs["rfix"] == 5.82
        assert list(p["fixed_core/core_ids"][()]) == list(range(1, 58))
    with TrajectoryReader(out) as r:
        assert r.n_frames == 21 and r.fixed_core.core_ids.size == 57
        assert list(np.unique(r.species)) == [8, 38] and r.species[0] == 38  # the centre is Sr
        assert np.array_equal(r.ids, np.arange(1, 145))
    assert summary["status"] == "completed" and summary["frames"] == 21 and summary["steps"] == 100
    on_disk = json.loads(summary_path(out).read_text())
    assert on_disk["file_size_bytes"] == out.stat().st_size and on_disk["ranks"] == 1
    assert on_disk["steps_per_s"] > 0 and on_disk["wall_time_s"] > 0 and on_disk["frames"] == 21
    assert (out.parent / "traj.log").is_file() and (out.parent / "traj.center.dump").is_file()


def test_core_atoms_do_not_move(rfix_run):
    with TrajectoryReader(rfix_run[0]) as r:
        core = r.fixed_core.core_ids - 1
        pos, vel = r.read("position"), r.read("velocity")
    assert np.array_equal(pos[:, core], np.broadcast_to(pos[0, core], pos[:, core].shape))
    assert not np.any(vel[:, core])
    mobile = np.setdiff1d(np.arange(144), core)
    assert np.all(np.abs(pos[-1, mobile] - pos[0, mobile]).max(axis=1) > 0)


def test_centre_force_equals_lammps_dump_at_the_same_steps(rfix_run):
    out = rfix_run[0]
    dump = read_center_dump(out.parent / "traj.center.dump")  # the input's own dump, every `every` steps
    with TrajectoryReader(out) as r:
        steps, pos, force = r.steps, r.read("position")[:, 0], r.read("force")[:, 0]
        fcen = r.observable("f_center")
    assert sorted(dump) == list(steps)
    for k, step in enumerate(steps):
        ref = dump[step]  # written with %.10g
        np.testing.assert_allclose(pos[k], ref[:3], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(force[k], ref[3:], rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(fcen, np.linalg.norm(force, axis=1), rtol=1e-12)


def test_energies_and_thermo_are_those_of_the_same_step(rfix_run):
    out = rfix_run[0]
    log = (out.parent / "traj.log").read_text().splitlines()
    start = max(i for i, line in enumerate(log) if line.split()[:1] == ["Step"])
    thermo = {}
    for line in log[start + 1:]:
        if line.startswith("Loop time"):
            break
        v = line.split()
        thermo[int(v[0])] = (float(v[2]), float(v[3]))  # Temp (of the mobile atoms), PotEng
    with TrajectoryReader(out) as r:
        e_atom = r.read("energies")
        pe, temp, steps = r.observable("potential_energy"), r.observable("temperature"), r.steps
    np.testing.assert_allclose(e_atom.sum(axis=1), pe, rtol=1e-10)
    for k, step in enumerate(steps):
        if step in thermo:  # thermo every 10 steps, frames every 5
            np.testing.assert_allclose([temp[k], pe[k]], thermo[step], rtol=1e-6)


def test_mdanalysis_reads_the_run(rfix_run):
    pytest.importorskip("MDAnalysis")
    from nlmd.h5md import open_mdanalysis

    u = open_mdanalysis(rfix_run[0], convert_units=False)
    with TrajectoryReader(rfix_run[0]) as r:
        force, pos = r.read("force"), r.read("position")
    assert len(u.trajectory) == 21 and len(u.atoms) == 144
    u.trajectory[7]
    np.testing.assert_allclose(u.atoms.forces, force[7], rtol=1e-6)
    np.testing.assert_allclose(u.atoms.positions, pos[7], rtol=1e-6)  # MDAnalysis keeps float32
    assert u.atoms.elements[0] == "Sr"


def test_mobile_temperature_near_target_on_average(tmp_path):
    out = tmp_path / "t.h5"
    stream_trajectory(RFIX_IN, out, every=20, variables=rigid(time=1.5, temp=4000), quiet=True)
    with TrajectoryReader(out) as r:
        temp, t = r.observable("temperature"), r.times
    late = temp[t >= 0.5]  # after the hot transient of the random start (docs/experiment.md)
    assert late.size == 51
    assert abs(late.mean() - 4000) < 400, late.mean()


# --------------------------------------------------------------------------------------------------
# any input: a previous run, commands after the final run, no `elements`, observers


def crystal_input(tmp_path: Path, tail: str = "") -> Path:
    from ase.build import bulk

    atoms = bulk("SrO", "rocksalt", a=5.2, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=1)
    S.write_lammps_data(atoms, tmp_path / "crystal.data", elements=["Sr", "O"])
    text = f"""# a plain NVE input without nlmd's conventions (no `elements`, no fixed core)
units metal
atom_style charge
atom_modify map array
boundary p p p
read_data {tmp_path / 'crystal.data'}
variable potential string {RIGID}
include ${{potential}}/pair.lmp
timestep 0.002
velocity all create 600 42 dist gaussian
fix nve all nve
thermo 5
run 7
run &
   13
{tail}
"""
    path = tmp_path / "in.crystal"
    path.write_text(text)
    return path


def test_final_run_after_a_previous_run_and_the_tail(tmp_path):
    path = crystal_input(tmp_path, tail=f"write_data {tmp_path / 'after.data'}")
    out = tmp_path / "c.h5"
    summary = stream_trajectory(path, out, every=5, quiet=True)
    with TrajectoryReader(out) as r:
        assert list(r.steps) == [10, 15, 20]  # the final run is steps 7..20
        np.testing.assert_allclose(r.times, [0.02, 0.03, 0.04])
        assert list(np.unique(r.species)) == [8, 38]  # from the masses
        assert r.fixed_core is None and "f_center" not in r.observable_names
        assert r.parameters["temperature_compute"] == "thermo_temp"
    assert (tmp_path / "after.data").is_file()  # the commands after the final run ran
    assert summary["first_step"] == 7 and summary["last_step"] == 20 and summary["frames"] == 3


def test_attach_functions_and_observers_and_stop_from_an_observer(tmp_path):
    path = crystal_input(tmp_path)
    seen, every_other = [], []

    class StopAfterThree(Observer):
        def start(self, run):
            self.run = run

        def frame(self, frame):
            seen.append(frame.step)
            if len(seen) == 3:
                self.run.request_stop("enough")

    with StreamedRun(path, every=1, log=tmp_path / "log.lammps") as run:
        run.setup()
        assert (run.first_step, run.last_step, run.n_atoms) == (7, 20, 64)
        run.attach(StopAfterThree())
        run.attach(lambda fr: every_other.append(fr.step), interval=2)
        result = run.stream()
    # frames of steps 7, 8, 9 seen; the stop is agreed in the callback of step 10, which then completes
    assert seen == [7, 8, 9, 10] and every_other == [7, 9]
    assert result.status == "stopped" and result.stop_reason == "enough" and result.last_step == 10


def test_progress_line(tmp_path):
    stream = io.StringIO()
    stream_trajectory(crystal_input(tmp_path), tmp_path / "p.h5", every=5, progress_stream=stream)
    text = stream.getvalue()
    assert "\rnlmd run: step 20/20 100.0%" in text and "steps/s" in text and "3 frames" in text
    assert text.endswith("\n")
    quiet = io.StringIO()
    stream_trajectory(crystal_input(tmp_path), tmp_path / "q.h5", every=5, progress_stream=quiet, quiet=True)
    assert quiet.getvalue() == ""


# --------------------------------------------------------------------------------------------------
# SevenNet (the tiny random model through the plugin's e3gnn)


def test_tiny_sevenn_potential(tiny_potential, tmp_path):
    out = tmp_path / "s.h5"
    res = CliRunner().invoke(main, ["run", str(RFIX_IN), "-o", str(out), "-v", "potential", str(tiny_potential),
                                    "-v", "time", "0.004", "--every", "1", "-v", "rfix", "3.68"])
    assert res.exit_code == 0, res.output
    assert "5 frames x 144 atoms" in res.output
    dump = read_center_dump(tmp_path / "s.center.dump")
    with TrajectoryReader(out) as r:
        assert r.model["kind"] == "sevenn" and r.model["pair_style"] == "e3gnn"
        assert r.fixed_core.core_ids.size == 19
        force, e_atom = r.read("force"), r.read("energies")
        # the model computes in float32: per-atom energies add up to the total within its rounding
        np.testing.assert_allclose(e_atom.sum(axis=1), r.observable("potential_energy"), rtol=1e-6)
        for k, step in enumerate(r.steps):
            np.testing.assert_allclose(force[k, 0], dump[step][3:], rtol=1e-8, atol=1e-9)
        assert np.abs(force).max() > 0


# --------------------------------------------------------------------------------------------------
# frames without energies (--no-energies); the writer thread


def test_no_energies_frames_are_those_with_energies_less_the_energies(tmp_path):
    variables = rigid(time=0.02)
    with_e = tmp_path / "e.h5"
    stream_trajectory(RFIX_IN, with_e, every=2, variables=variables, quiet=True)
    without = tmp_path / "n.h5"
    args = [a for k, v in variables.items() for a in ("-v", k, v)]
    res = CliRunner().invoke(main, ["run", str(RFIX_IN), "-o", str(without), *args, "--every", "2", "--no-energies"])
    assert res.exit_code == 0, res.output
    assert "11 frames x 144 atoms" in res.output
    with TrajectoryReader(with_e) as a, TrajectoryReader(without) as b:
        assert np.array_equal(a.steps, b.steps) and b.steps[0] == 0  # the set-up frame included
        for series in ("position", "velocity", "force", "box", "species", "id"):
            assert np.array_equal(a.read(series), b.read(series)), series  # the same numbers, bit for bit
        assert not b.has("energies") and b.observable_names == ["f_center"]
        assert np.array_equal(a.observable("f_center"), b.observable("f_center"))
        assert b.parameters["energies"] is False and a.parameters["energies"] is True
        assert b.parameters["temperature_compute"] == "" and "--no-energies" in b.parameters["command"]
        assert b.without_energies and not a.without_energies
        for read in (lambda: b.read("energies"), lambda: b.observable("potential_energy"),
                     lambda: b.observable("temperature")):
            with pytest.raises(InputError, match=r"written by `nlmd run --no-energies`"):
                read()
    summary = json.loads(summary_path(without).read_text())
    assert summary["energies"] is False and summary["frames"] == 11


def test_no_energies_does_not_make_lammps_tally_energies(tmp_path):
    """With energies every frame step tallies energy (pe/atom, thermo pe); without, only the input's own
    thermo steps do -- not even the sampling of positions, velocities and forces (an ave/atom of x, v, f
    alone would, in this LAMMPS)."""
    path = crystal_input(tmp_path)  # thermo 5; the final run is steps 7..20

    class Spy(Observer):
        def start(self, run):
            self.run, self.tallied = run, []

        def step(self, step):  # LAMMPS's post-force stage of `step`
            if int(self.run.lmp.extract_global("eflag_global")) == step:
                self.tallied.append(step)

    tallied = {}
    for energies in (True, False):
        spy = Spy()
        with StreamedRun(path, every=1, log=tmp_path / "log.lammps", energies=energies) as run:
            run.setup()
            run.attach(spy)
            assert run.stream().frames == 14
        tallied[energies] = spy.tallied
    assert tallied[True] == list(range(7, 21))
    assert tallied[False] == [7, 10, 15, 20]  # set-up and thermo steps only


def test_no_energies_box_of_a_triclinic_barostat(tmp_path):
    """The box changes inside every step (npt) and at its end (deform); a thermostat acts at the end of the
    step: the frames without energies still equal those with, set-up frame included."""
    path = tmp_path / "npt.in"
    path.write_text("""units metal
atom_style atomic
lattice fcc 5.26
region box prism 0 3 0 3 0 3 0.2 0.1 0.0
create_box 1 box
create_atoms 1 box
mass 1 39.948
pair_style lj/cut 8.0
pair_coeff 1 1 0.0104 3.40
timestep 0.002
velocity all create 100 4928 dist gaussian
fix npt all npt temp 100 300 0.1 tri 0 4000 0.5
fix ber all temp/berendsen 100 300 0.05
thermo 7
run 4
run 17
""")
    files = {}
    for energies in (True, False):
        files[energies] = tmp_path / f"b{energies}.h5"
        stream_trajectory(path, files[energies], every=2, energies=energies, quiet=True)
    with TrajectoryReader(files[True]) as a, TrajectoryReader(files[False]) as b:
        assert list(b.steps) == list(range(4, 22, 2))
        box = b.read("box")
        assert np.abs(box[:, 1, 0]).min() > 0  # tilted
        assert len({float(x) for x in box[:, 0, 0]}) == b.n_frames  # and changing
        for series in ("position", "velocity", "force", "box"):
            assert np.array_equal(a.read(series), b.read(series)), series


def test_writer_thread_writes_the_same_file_and_restores_the_switch_interval(tmp_path):
    path = crystal_input(tmp_path)
    before = sys.getswitchinterval()
    seen = []

    class SwitchSpy(Observer):
        def step(self, step):
            seen.append(sys.getswitchinterval())

    files = {}
    for thread in (True, False):
        files[thread] = tmp_path / f"w{thread}.h5"
        with StreamedRun(path, every=1, log=tmp_path / "log.lammps") as run:
            run.setup()
            from nlmd.h5md import TrajectoryWriter
            from nlmd.md.stream import TrajectoryStream

            writer = TrajectoryWriter(files[thread], parameters=run.parameters(), flush_every=3)
            stream = TrajectoryStream(writer, background=thread)
            run.attach(stream)
            if thread:
                run.attach(SwitchSpy())
            run.stream()
            assert stream._thread is None and writer.n_written == 14  # drained and joined by finish
            writer.close()
    assert seen and max(seen) <= 2e-4 and sys.getswitchinterval() == before
    with TrajectoryReader(files[True]) as a, TrajectoryReader(files[False]) as b:
        assert a.n_frames == b.n_frames == 14
        for series in ("position", "velocity", "force", "energies", "box", "id", "species"):
            assert np.array_equal(a.read(series), b.read(series)), series


def test_writer_thread_error_stops_the_run_and_keeps_the_flushed_frames(tmp_path, monkeypatch):
    import threading

    from nlmd.h5md import TrajectoryWriter

    write = TrajectoryWriter.write
    threads = set()

    def failing_write(self, frame, **kw):
        threads.add(threading.current_thread().name)
        if self.n_written == 5:  # the 6th frame
            raise OSError(28, "No space left on device")
        write(self, frame, **kw)

    monkeypatch.setattr(TrajectoryWriter, "write", failing_write)
    out = tmp_path / "f.h5"
    with pytest.raises(SimulationError, match=r"OSError: \[Errno 28\] No space left on device; 5 frames were written"):
        stream_trajectory(crystal_input(tmp_path), out, every=1, flush_every=2, quiet=True)
    assert threads == {"nlmd-writer"}
    summary = json.loads(summary_path(out).read_text())
    assert summary["status"] == "failed" and summary["frames"] == 5
    with TrajectoryReader(out) as r:
        assert list(r.steps) == [7, 8, 9, 10, 11]  # the frames before the error; the file is closed and complete


def test_writer_thread_flushes_after_flush_seconds_without_new_frames(tmp_path):
    from nlmd.h5md import Frame, TrajectoryWriter
    from nlmd.md.stream import TrajectoryStream

    writer = TrajectoryWriter(tmp_path / "t.h5", flush_every=100, flush_seconds=0.2)
    stream = TrajectoryStream(writer, background=True)
    stream.start(None)
    try:
        ids = np.arange(1, 4)
        stream.frame(Frame(step=0, time=0.0, box=np.eye(3), ids=ids, species=np.full(3, 18),
                           positions=np.zeros((3, 3))))
        t_end = time.monotonic() + 10
        while writer.n_flushed == 0 and time.monotonic() < t_end:
            time.sleep(0.02)
        assert writer.n_flushed == 1  # by the thread's clock, no frame or step after it
    finally:
        stream.stop()
        writer.close()


def test_close_after_failure_ends_the_writer_thread_first(tmp_path):
    """When a run fails without reaching its observers' finish, the failure path itself must drain and end
    the writer thread before it closes the file (the thread owns the file until then)."""
    from nlmd.h5md import Frame, TrajectoryWriter
    from nlmd.md.stream import TrajectoryStream, close_after_failure

    writer = TrajectoryWriter(tmp_path / "t.h5", flush_every=100)
    stream = TrajectoryStream(writer, background=True)
    stream.start(None)
    ids = np.arange(1, 4)
    for step in range(3):
        stream.frame(Frame(step=step, time=0.0, box=np.eye(3), ids=ids, species=np.full(3, 18),
                           positions=np.zeros((3, 3))))
    assert close_after_failure(writer, stream) == 3
    assert stream._thread is None and writer.closed
    with TrajectoryReader(tmp_path / "t.h5") as r:
        assert list(r.steps) == [0, 1, 2]


def test_failed_run_hands_its_writer_thread_to_the_failure_path(tmp_path, monkeypatch):
    import nlmd.md.driver
    from nlmd.h5md import TrajectoryWriter
    from nlmd.md.stream import TrajectoryStream

    def failing_write(self, frame, **kw):
        raise OSError(28, "No space left on device")

    seen = []
    close = nlmd.md.driver.close_after_failure
    monkeypatch.setattr(TrajectoryWriter, "write", failing_write)
    monkeypatch.setattr(nlmd.md.driver, "close_after_failure", lambda w, s=None: seen.append(s) or close(w, s))
    with pytest.raises(SimulationError, match="No space left on device"):
        stream_trajectory(crystal_input(tmp_path), tmp_path / "f.h5", every=1, quiet=True)
    assert len(seen) == 1 and isinstance(seen[0], TrajectoryStream) and seen[0]._thread is None


def test_rescore_and_compare_a_file_without_energies(tmp_path):
    path = crystal_input(tmp_path)
    frames = tmp_path / "n.h5"
    stream_trajectory(path, frames, every=5, energies=False, quiet=True)
    rescored = tmp_path / "r.h5"
    res = CliRunner().invoke(main, ["rescore", str(frames), "--potential", str(RIGID), "-o", str(rescored), "-q"])
    assert res.exit_code == 0, res.output
    with TrajectoryReader(frames) as a, TrajectoryReader(rescored) as b:
        assert b.has("energies") and "potential_energy" in b.observable_names and not b.without_energies
        np.testing.assert_allclose(b.read("force"), a.read("force"), rtol=1e-9, atol=1e-9)
    res = CliRunner().invoke(main, ["compare", str(frames), str(rescored)])
    assert res.exit_code == 0, res.output
    assert f"energy: not compared (no potential_energy in {frames})" in res.output


# --------------------------------------------------------------------------------------------------
# errors


def test_input_error_is_one_sentence_and_leaves_no_file(tmp_path):
    out = tmp_path / "bad.h5"
    with pytest.raises(InputError) as info:
        stream_trajectory(RFIX_IN, out, variables=rigid(rfix=6.1), quiet=True)
    assert str(info.value).startswith("sro_rfix.in: rfix = 6.1 A does not fit")
    assert not out.exists() and not summary_path(out).exists()
    res = CliRunner().invoke(main, ["run", str(RFIX_IN), "-o", str(out), "-v", "potential", "no/such/dir"])
    assert res.exit_code == 1
    assert res.output.startswith("nlmd: error: sro_rfix.in: no/such/dir/pair.lmp not found")
    assert not out.exists()


def test_run_failing_before_the_first_frame_leaves_no_file(tmp_path):
    path = crystal_input(tmp_path)
    # accepted when given, refused when the run initialises: Ewald needs a Coulomb pair style
    path.write_text(path.read_text().replace("run &\n   13", "pair_style zero 3.0\npair_coeff * *\nrun 13"))
    out = tmp_path / "f.h5"
    with pytest.raises(SimulationError, match="the run stopped at step 7 with: KSpace style is incompatible"):
        stream_trajectory(path, out, quiet=True)
    assert not out.exists()


def test_existing_output_needs_force(tmp_path):
    path = crystal_input(tmp_path)
    out = tmp_path / "x.h5"
    out.write_text("keep me")
    res = CliRunner().invoke(main, ["run", str(path), "-o", str(out)])
    assert res.exit_code == 1 and "exists; pass --force to overwrite it" in res.output
    assert out.read_text() == "keep me"
    res = CliRunner().invoke(main, ["run", str(path), "-o", str(out), "--force", "--every", "5"])
    assert res.exit_code == 0, res.output
    with TrajectoryReader(out) as r:
        assert r.n_frames == 3
    res = CliRunner().invoke(main, ["run", str(path), "-o", str(out), "--force", "--every", "5", "-v", "every", "4"])
    assert res.exit_code == 1 and "disagree" in res.output


# --------------------------------------------------------------------------------------------------
# signals (real processes)


def start(out: Path, *extra: str) -> subprocess.Popen:
    # without the equilibration stages: the signal must reach the streamed run, not the equilibration
    cmd = nlmd_command(str(RFIX_IN), "-o", str(out), "-v", "potential", str(RIGID), "-v", "time", "30",
                       "-v", "minsteps", "0", "-v", "eqtime", "0", *extra)
    return subprocess.Popen(cmd, cwd=out.parent, env=lmp_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def wait_for_step(proc: subprocess.Popen, log: Path, step: int, timeout: float = 60) -> None:
    """Wait until the LAMMPS log (thermo flushed every line) shows ``step``."""
    pattern = re.compile(rf"^\s+{step}\s+\S+\s+\S+", re.M)
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        assert proc.poll() is None, proc.communicate()
        if log.exists() and pattern.search(log.read_text(errors="replace")):
            return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"step {step} not reached in {timeout} s")


def test_sigkill_leaves_every_flushed_frame(tmp_path):
    out = tmp_path / "k.h5"
    proc = start(out, "--every", "10")
    try:
        wait_for_step(proc, tmp_path / "k.log", 300)  # >= 30 frames taken, >= 30 flushed (flush_every 10)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    with TrajectoryReader(out) as r:
        n = r.n_frames
        assert n >= 30 and n % 10 == 0  # whole flushed blocks, no torn frame
        assert np.array_equal(r.steps, 10 * np.arange(n))
        pos, force = r.read("position"), r.read("force")
        assert np.all(np.isfinite(pos)) and np.all(np.isfinite(force)) and np.all(np.isfinite(r.observable("temperature")))
        assert np.array_equal(pos[:, :57], np.broadcast_to(pos[0, :57], pos[:, :57].shape))
    assert not summary_path(out).exists()


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_closes_a_complete_file(tmp_path, sig, status):
    out = tmp_path / "i.h5"
    proc = start(out, "--every", "10")
    try:
        wait_for_step(proc, tmp_path / "i.log", 150)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    summary = json.loads(summary_path(out).read_text())
    assert summary["status"] == "interrupted" and summary["stop_reason"] == sig.name
    assert f"interrupted ({sig.name}) at step {summary['last_step']}; {summary['frames']} frames written to" in err
    with h5py.File(out, "r") as f:  # closed cleanly: no lock, opens in any mode
        assert f["particles/trajectory/position/value"].shape[0] == summary["frames"]
    with TrajectoryReader(out) as r:
        assert r.n_frames == summary["frames"] >= 16
        assert r.steps[-1] == summary["last_step"] - summary["last_step"] % 10  # the last sample is in
        assert np.array_equal(r.steps, 10 * np.arange(r.n_frames))
    assert summary["file_size_bytes"] == out.stat().st_size


def test_sigterm_during_the_equilibration_stops_it_and_writes_nothing(tmp_path):
    """The input's own NVT run before the final run (30 ps here: minutes) ends within a step of SIGTERM,
    and the final run never starts: no trajectory, no summary, exit status 143."""
    out = tmp_path / "e.h5"
    cmd = nlmd_command(str(RFIX_IN), "-o", str(out), "-v", "potential", str(RIGID), "-v", "eqtime", "30",
                       "-v", "time", "0.01")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=lmp_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        wait_for_step(proc, tmp_path / "e.log", 300)  # past the minimisation (at most 50 iterations)
        t_signal = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        waited = time.monotonic() - t_signal
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert waited < 30  # not the rest of 30,000 steps
    assert "interrupted before the run started; no file written" in err
    assert not out.exists() and not summary_path(out).exists()
    assert not list(tmp_path.glob(".*part*")) and not (tmp_path / "e.center.dump").exists()
    steps = [int(m) for m in re.findall(r"^\s+(\d+)\s+\S+\s+\S+", (tmp_path / "e.log").read_text(), re.M)]
    assert 300 <= max(steps) < 30_000


# --------------------------------------------------------------------------------------------------
# MPI


@pytest.mark.mpi
def test_two_ranks_stream_the_frames_of_one_rank(tmp_path):
    cell = S.build_fixed_core_cell(5.82, seed=4)
    S.write_lammps_data(cell, tmp_path / "cell.data")
    common = ["-v", "potential", str(RIGID), "-v", "data", str(tmp_path / "cell.data"), "-v", "time", "0.02",
              "-v", "minsteps", "0", "-v", "eqtime", "0", "--every", "2"]
    serial = tmp_path / "one.h5"
    stream_trajectory(RFIX_IN, serial, every=2, variables=rigid(data=tmp_path / "cell.data", time=0.02, minsteps=0, eqtime=0),
              quiet=True)
    two = tmp_path / "two.h5"
    res = subprocess.run(nlmd_command(str(RFIX_IN), "-o", str(two), *common, ranks=2), cwd=tmp_path, env=lmp_env(),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert res.stdout.count("11 frames x 144 atoms") == 1  # rank 0 reports, once
    assert "on 2 ranks" in res.stdout
    with TrajectoryReader(serial) as a, TrajectoryReader(two) as b:
        assert b.parameters["ranks"] == 2 and np.array_equal(a.steps, b.steps)
        for series in ("position", "velocity", "force", "energies", "box", "species", "id"):
            x, y = a.read(series), b.read(series)
            scale = max(1.0, float(np.abs(x).max()))
            assert np.abs(x - y).max() <= 1e-8 * scale, series
        for name in ("potential_energy", "temperature", "f_center"):
            np.testing.assert_allclose(a.observable(name), b.observable(name), rtol=1e-9)
        assert np.array_equal(a.fixed_core.core_ids, b.fixed_core.core_ids)


@pytest.mark.mpi
def test_sigterm_to_rank_0_during_the_equilibration_stops_both_ranks(tmp_path):
    """Rank 0 alone gets the signal (not mpiexec): the ranks agree at the next step of the equilibration
    run, both leave it and neither starts the final run."""
    out = tmp_path / "e.h5"
    cmd = nlmd_command(str(RFIX_IN), "-o", str(out), "-v", "potential", str(RIGID), "-v", "eqtime", "30",
                       "-v", "time", "0.01", ranks=2)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=lmp_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        wait_for_step(proc, tmp_path / "e.log", 300)
        ranks = _ranks_writing(out)
        assert sorted(ranks) == ["0", "1"], ranks
        os.kill(ranks["0"], signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    assert err.count("interrupted before the run started; no file written") == 1  # rank 0 reports
    assert not out.exists() and not summary_path(out).exists()


def _ranks_writing(out: Path) -> dict[str, int]:
    """MPI rank (MPICH's PMI_RANK) -> pid of the processes whose command line names ``out``."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        rank = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"PMI_RANK=")), None)
        if rank is not None and str(out).encode() in cmdline and b"nlmd" in cmdline:
            found[rank] = int(proc.name)
    return found


@pytest.mark.mpi
def test_two_ranks_without_energies(tmp_path):
    """--no-energies on 2 ranks: the box comes from the rank that holds the probe atom, frames as on one."""
    cell = S.build_fixed_core_cell(5.82, seed=4)
    S.write_lammps_data(cell, tmp_path / "cell.data")
    serial = tmp_path / "one.h5"
    stream_trajectory(RFIX_IN, serial, every=2, variables=rigid(data=tmp_path / "cell.data", time=0.02, minsteps=0, eqtime=0),
              quiet=True)
    two = tmp_path / "two.h5"
    cmd = nlmd_command(str(RFIX_IN), "-o", str(two), "-v", "potential", str(RIGID), "-v", "data",
                       str(tmp_path / "cell.data"), "-v", "time", "0.02", "-v", "minsteps", "0", "-v", "eqtime", "0",
                       "--every", "2", "--no-energies", ranks=2)
    res = subprocess.run(cmd, cwd=tmp_path, env=lmp_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    with TrajectoryReader(serial) as a, TrajectoryReader(two) as b:
        assert b.parameters["ranks"] == 2 and b.without_energies and np.array_equal(a.steps, b.steps)
        for series in ("position", "velocity", "force", "box", "species", "id"):
            x, y = a.read(series), b.read(series)
            assert np.abs(x - y).max() <= 1e-8 * max(1.0, float(np.abs(x).max())), series


@pytest.mark.mpi
def test_sevennet_on_two_ranks_streams_the_frames_of_one_rank(tmp_path, tiny_potential):
    """A deployed SevenNet directory under `mpirun -np 2 nlmd run`: pair.lmp switches to e3gnn/parallel, and
    the first frames equal the 1-rank run with e3gnn to float32 precision."""
    cell = S.build_fixed_core_cell(5.82, seed=4)
    S.write_lammps_data(cell, tmp_path / "cell.data")
    variables = {"potential": str(tiny_potential), "data": str(tmp_path / "cell.data"), "time": "0.004",
                 "minsteps": "0", "eqtime": "0"}
    serial = tmp_path / "one.h5"
    stream_trajectory(RFIX_IN, serial, every=2, variables=variables, quiet=True)
    two = tmp_path / "two.h5"
    args = [a for k, v in variables.items() for a in ("-v", k, v)]
    res = subprocess.run(nlmd_command(str(RFIX_IN), "-o", str(two), *args, "--every", "2", ranks=2), cwd=tmp_path,
                         env=lmp_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "pair_style e3gnn/parallel" in (tmp_path / "two.log").read_text()
    with TrajectoryReader(serial) as a, TrajectoryReader(two) as b:
        assert np.array_equal(a.steps, b.steps) and a.n_frames == 3
        assert np.abs(a.read("force") - b.read("force")).max() <= 1e-4  # float32 models, 4 steps of MD
        assert np.abs(a.read("position") - b.read("position")).max() <= 1e-6
        np.testing.assert_allclose(a.observable("potential_energy"), b.observable("potential_energy"), rtol=1e-6)
