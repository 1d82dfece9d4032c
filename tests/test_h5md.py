"""nlmd.h5md: round trips, layout conformance with docs/h5md.md, validation, crash safety, MDAnalysis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import nlmd
from nlmd import h5md
from nlmd.errors import InputError
from nlmd.h5md import FixedCore, Frame, TrajectoryReader, TrajectoryWriter

N = 12
T = 23


def make_frame(i: int, n: int = N, *, optional: bool = True, rng=None) -> Frame:
    """A frame whose content is a pure function of ``i`` (so a reader can check it was not torn)."""
    rng = rng if rng is not None else np.random.default_rng(i)
    ids = np.arange(1, n + 1, dtype=np.int64) * 2  # ids need not be 1..N, only ascending
    return Frame(
        step=10 * i,
        time=0.002 * i,
        box=np.diag([13.63, 13.63, 13.63]) + 0.01 * i,
        ids=ids,
        species=np.where(np.arange(n) % 2 == 0, 38, 8).astype(np.int32),
        positions=rng.normal(size=(n, 3)),
        forces=rng.normal(size=(n, 3)) if optional else None,
        velocities=rng.normal(size=(n, 3)) if optional else None,
        energies=rng.normal(size=n) if optional else None,
        observables={"potential_energy": -100.0 - i, "temperature": 4000.0 + i, "stress": np.full(6, float(i))}
        if optional
        else {},
    )


def write(path: Path, frames: list[Frame], **kw) -> None:
    with TrajectoryWriter(path, **kw) as w:
        for f in frames:
            w.write(f)
        assert w.n_written == len(frames)
    assert w.n_flushed == len(frames)


@pytest.mark.parametrize("optional", [True, False])
def test_round_trip(tmp_path, optional):
    frames = [make_frame(i, optional=optional) for i in range(T)]
    path = tmp_path / "t.h5"
    write(path, frames, flush_every=4)
    with TrajectoryReader(path) as r:
        assert (r.n_frames, r.n_atoms, len(r)) == (T, N, T)
        assert r.file.id.get_mdc_config().max_size == h5md.READER_METADATA_CACHE_BYTES
        np.testing.assert_array_equal(r.steps, [f.step for f in frames])
        np.testing.assert_array_equal(r.times, [f.time for f in frames])
        np.testing.assert_array_equal(r.ids, frames[0].ids)
        np.testing.assert_array_equal(r.species, frames[0].species)
        assert r.ids.dtype == np.int64 and r.species.dtype == np.int32
        for series in ("velocity", "force", "energies"):
            assert r.has(series) is optional
        np.testing.assert_array_equal(r.read("position"), np.stack([f.positions for f in frames]))
        np.testing.assert_array_equal(r.read("box", 3, 7), np.stack([f.box for f in frames[3:7]]))
        if optional:
            np.testing.assert_array_equal(r.read("force", -5), np.stack([f.forces for f in frames[-5:]]))
            np.testing.assert_array_equal(r.read("velocity"), np.stack([f.velocities for f in frames]))
            np.testing.assert_array_equal(r.read("energies"), np.stack([f.energies for f in frames]))
            assert r.observable_names == ["potential_energy", "stress", "temperature"]
            np.testing.assert_array_equal(r.observable("temperature"), [4000.0 + i for i in range(T)])
            assert r.observable("stress").shape == (T, 6)
            assert r.units["potential_energy"] == "eV" and r.units["temperature"] == "K"
        else:
            assert r.observable_names == []
            with pytest.raises(InputError, match="has no 'force' series"):
                r.read("force")
        got = list(r)
        assert len(got) == T
        for a, b in zip(got, frames):
            assert (a.step, a.time) == (b.step, b.time)
            np.testing.assert_array_equal(a.positions, b.positions)
            if optional:
                np.testing.assert_array_equal(a.forces, b.forces)
                assert a.observables["potential_energy"] == b.observables["potential_energy"]
                np.testing.assert_array_equal(a.observables["stress"], b.observables["stress"])
            else:
                assert a.forces is None and a.velocities is None and a.energies is None
        last = r.frame(-1)
        assert last.step == frames[-1].step
        np.testing.assert_array_equal(last.box, frames[-1].box)
        with pytest.raises(IndexError):
            r.frame(T)


def test_layout_conforms_to_spec(tmp_path):
    path = tmp_path / "t.h5"
    write(path, [make_frame(i) for i in range(3)], author="tester", boundary=("periodic", "periodic", "none"))
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["h5md"].attrs["version"], [1, 1])
        assert f["h5md"].attrs["version"].dtype == np.int32
        assert f["h5md/author"].attrs["name"] == "tester"
        assert f["h5md/creator"].attrs["name"] == "nlmd"
        assert f["h5md/creator"].attrs["version"] == nlmd.__version__
        assert list(f["particles"]) == ["trajectory"]
        root = f["particles/trajectory"]
        step, tds = root["position/step"], root["position/time"]
        assert step.dtype == np.int64 and tds.dtype == np.float64 and tds.attrs["unit"] == "ps"

        elements = ["box/edges", "velocity", "force", "species", "energies", "id"]
        groups = [root[e] for e in elements] + [f["observables/trajectory"][k] for k in f["observables/trajectory"]]
        assert len(groups) == len(elements) + 3
        for g in groups:
            for name, target in (("step", step), ("time", tds)):
                assert isinstance(g.get(name, getlink=True), h5py.HardLink), (g.name, name)
                assert g[name].id == target.id, (g.name, name)  # the same object, not a copy

        units = {
            "position": "Angstrom", "velocity": "Angstrom ps-1", "force": "eV Angstrom-1",
            "energies": "eV", "box/edges": "Angstrom",
        }
        for element, unit in units.items():
            assert root[element]["value"].attrs["unit"] == unit
        assert "unit" not in root["species/value"].attrs and "unit" not in root["id/value"].attrs
        assert f["observables/trajectory/potential_energy/value"].attrs["unit"] == "eV"
        assert f["observables/trajectory/temperature/value"].attrs["unit"] == "K"

        for element in ("position", "velocity", "force"):
            ds = root[element]["value"]
            assert ds.dtype == np.float64 and ds.shape == (3, N, 3)
            assert ds.chunks == (1, N, 3) and ds.maxshape == (None, N, 3)
            assert ds.compression is None
        for element, dtype in (("energies", np.float64), ("species", np.int32), ("id", np.int64)):
            ds = root[element]["value"]
            assert ds.dtype == dtype and ds.chunks == (1, N) and ds.maxshape == (None, N)
        assert root["box/edges/value"].shape == (3, 3, 3)
        assert root["box/edges/value"].dtype == np.float64

        box = root["box"]
        assert box.attrs["dimension"] == 3 and box.attrs["dimension"].dtype == np.int32
        boundary = box.attrs["boundary"]
        assert h5py.check_string_dtype(box.attrs.get_id("boundary").dtype).length is None  # variable length
        assert list(boundary) == ["periodic", "periodic", "none"]
        assert f["parameters"].attrs["units"] == "metal"
    with TrajectoryReader(path) as r:
        assert r.boundary == ("periodic", "periodic", "none")
        assert r.units["force"] == "eV Angstrom-1" and r.units["time"] == "ps"


def test_parameters_model_and_fixed_core(tmp_path):
    path = tmp_path / "t.h5"
    core = FixedCore(center_id=7, rfix=3.68, core_ids=np.array([9, 7, 1, 3]))
    model = {"name": "7net-0", "cutoff": 5.0, "elements": ["Sr", "O"], "num_layers": 5}
    params = {"source": "lammps", "command": "nlmd run in.lmp", "seed": 12, "temperature": 4000.0,
              "flags": [1, 2, 3], "names": ["a", "b"]}
    write(path, [make_frame(0)], parameters=params, model=model, fixed_core=core)
    with TrajectoryReader(path) as r:
        assert r.model == model
        assert r.fixed_core.center_id == 7 and r.fixed_core.rfix == 3.68
        np.testing.assert_array_equal(r.fixed_core.core_ids, [1, 3, 7, 9])
        assert r.fixed_core.core_ids.dtype == np.int64
        p = r.parameters
        assert p["units"] == "metal" and p["source"] == "lammps" and p["command"] == "nlmd run in.lmp"
        assert p["seed"] == 12 and isinstance(p["seed"], int) and p["temperature"] == 4000.0
        assert list(p["flags"]) == [1, 2, 3] and p["names"] == ["a", "b"]
        assert json.loads(p["model"]) == model
    with h5py.File(path, "r") as f:
        fc = f["parameters/fixed_core"]
        assert fc["core_ids"].dtype == np.int64 and fc.attrs["center_id"] == 7


def test_writer_rejects_inconsistent_frames(tmp_path):
    path = tmp_path / "t.h5"
    with TrajectoryWriter(path) as w:
        bad = make_frame(0)
        bad.ids = bad.ids[::-1].copy()
        with pytest.raises(InputError, match=r"t\.h5: frame 0 .*strictly ascending"):
            w.write(bad)
        w.write(make_frame(0))
        with pytest.raises(InputError, match="has 13 atoms but the file was started with 12"):
            w.write(make_frame(1, n=N + 1))
        no_forces = make_frame(1)
        no_forces.forces = None
        with pytest.raises(InputError, match="forces is missing but the first frame had them"):
            w.write(no_forces)
        other_obs = make_frame(1)
        other_obs.observables = {"potential_energy": 1.0}
        with pytest.raises(InputError, match="observables"):
            w.write(other_obs)
        wrong_shape = make_frame(1)
        wrong_shape.box = np.eye(2)
        with pytest.raises(InputError, match="box has shape"):
            w.write(wrong_shape)
        w.write(make_frame(1))
    with TrajectoryReader(path) as r:
        assert r.n_frames == 2
    with pytest.raises(InputError, match="parameter 'bad'"):
        TrajectoryWriter(tmp_path / "p.h5", parameters={"bad": {"nested": 1}})
    with pytest.raises(InputError, match="boundary"):
        TrajectoryWriter(tmp_path / "b.h5", boundary=("periodic", "open", "none"))
    with pytest.raises(ValueError, match="closed"):
        w.write(make_frame(2))
    w.close()  # idempotent


def test_flush_policy_and_discard(tmp_path):
    path = tmp_path / "t.h5"
    with TrajectoryWriter(path, flush_every=3) as w:
        for i in range(4):
            w.write(make_frame(i))
        assert (w.n_written, w.n_flushed) == (4, 3)
        w.flush()
        assert w.n_flushed == 4
    with TrajectoryWriter(path, flush_every=1000, flush_seconds=0.0) as w:  # time-based flush
        w.write(make_frame(0))
        w.write(make_frame(1))
        assert w.n_flushed == 2
    w = TrajectoryWriter(path)
    w.write(make_frame(0))
    w.discard()
    assert not path.exists()


def test_write_copies_unless_told_not_to_and_checks_ids_once_per_array(tmp_path):
    path = tmp_path / "t.h5"
    with TrajectoryWriter(path, flush_every=10) as w:
        a = make_frame(0)
        w.write(a)  # copied: changing the frame afterwards does not change the file
        a.positions[:] = 7.0
        b = make_frame(1)
        w.write(b, copy=False)  # kept as it is until the flush: the caller promised not to change it
        b.positions[:] = 9.0
    with TrajectoryReader(path) as r:
        pos = r.read("position")
    assert np.array_equal(pos[0], make_frame(0).positions) and np.all(pos[1] == 9.0)

    ids = np.arange(1, N + 1, dtype=np.int64)
    ids.flags.writeable = False  # one read-only ids array for every frame (nlmd run): checked once
    with TrajectoryWriter(tmp_path / "u.h5") as w:
        for i in range(3):
            fr = make_frame(i)
            fr.ids = ids
            w.write(fr, copy=False)
        bad = make_frame(3)
        bad.ids = ids[::-1].copy()
        bad.ids.flags.writeable = False
        with pytest.raises(InputError, match="strictly ascending"):  # another array: checked
            w.write(bad)
        mutable = np.arange(1, N + 1, dtype=np.int64)
        fr = make_frame(4)
        fr.ids = mutable
        w.write(fr)
        mutable[:2] = mutable[1::-1]  # the same array object, writable, now out of order: checked again
        with pytest.raises(InputError, match="strictly ascending"):
            w.write(fr)


def test_per_atom_series_bypass_the_chunk_cache(tmp_path):
    """Whole one-frame chunks go straight to the file (no copy through HDF5's chunk cache)."""
    path = tmp_path / "t.h5"
    with TrajectoryWriter(path, flush_every=2) as w:
        for i in range(3):
            w.write(make_frame(i))
        # the datasets the writer holds open, seen through HDF5's own list of open objects
        from h5py import h5f, h5i

        caches = {
            h5i.get_name(d).decode().removeprefix("/particles/trajectory/"): d.get_access_plist().get_chunk_cache()[1]
            for d in h5f.get_obj_ids(types=h5f.OBJ_DATASET) if Path(h5f.get_name(d).decode()) == path
        }
    assert all(caches[f"{name}/value"] == 0 for name in ("position", "velocity", "force", "energies", "species", "id"))
    assert caches["box/edges/value"] > 0 and caches["position/step"] > 0  # small partial chunks keep theirs
    with TrajectoryReader(path) as r:
        np.testing.assert_array_equal(r.read("force"), np.stack([make_frame(i).forces for i in range(3)]))
        assert r.file["particles/trajectory/position/value"].attrs["unit"] == "Angstrom"


def test_reader_explains_a_file_written_without_energies(tmp_path):
    frames = [make_frame(i, optional=False) for i in range(2)]
    plain, no_e = tmp_path / "plain.h5", tmp_path / "no_e.h5"
    write(plain, frames)
    write(no_e, frames, parameters={"energies": False})
    with TrajectoryReader(no_e) as r:
        assert r.without_energies
        with pytest.raises(InputError, match=r"has no 'energies' series: it was written by `nlmd run --no-energies`"):
            r.read("energies")
        with pytest.raises(InputError, match=r"no_e\.h5: has no observable 'potential_energy' \(it has none\): it was"):
            r.observable("potential_energy")
        with pytest.raises(InputError, match=r"has no 'energies' series: it was written"):
            r.frame_bytes(["energies"])
        with pytest.raises(InputError, match=r"has no 'force' series$"):  # not an energy: no such hint
            r.read("force")
    with TrajectoryReader(plain) as r:
        assert not r.without_energies
        with pytest.raises(InputError, match=r"has no 'energies' series$"):
            r.read("energies")


def test_iter_blocks_covers_every_frame_once(tmp_path, monkeypatch):
    path = tmp_path / "t.h5"
    frames = [make_frame(i) for i in range(T)]
    write(path, frames)
    with TrajectoryReader(path) as r:
        for block_frames in (1, 5, T, 100):
            seen = []
            for start, block in r.iter_blocks(("position", "force", "step"), block_frames=block_frames):
                k = block["position"].shape[0]
                assert 1 <= k <= block_frames and block["force"].shape == (k, N, 3)
                np.testing.assert_array_equal(block["step"], r.steps[start : start + k])
                seen.extend(range(start, start + k))
            assert seen == list(range(T))
        # default block size: bounded by BLOCK_BYTES of the requested series
        frame_bytes = r.frame_bytes(("position", "force"))
        assert frame_bytes == 2 * N * 3 * 8
        monkeypatch.setattr(h5md, "BLOCK_BYTES", 4 * frame_bytes + 1)
        sizes = [b["position"].shape[0] for _, b in r.iter_blocks(("position", "force"))]
        assert max(sizes) == 4 and sum(sizes) == T


def test_reader_errors_name_file_and_field(tmp_path):
    not_h5 = tmp_path / "x.h5"
    not_h5.write_text("hello")
    with pytest.raises(InputError, match=r"x\.h5: cannot be opened as an HDF5 file"):
        TrajectoryReader(not_h5)
    with pytest.raises(InputError, match="no such file"):
        TrajectoryReader(tmp_path / "missing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_group("h5md").attrs["version"] = [1, 1]
        f.create_group("particles/all")
    with pytest.raises(InputError, match=r"other\.h5: missing particles group 'trajectory' \(found \['all'\]\)"):
        TrajectoryReader(other)
    path = tmp_path / "t.h5"
    write(path, [make_frame(0)])
    with h5py.File(path, "a") as f:
        del f["particles/trajectory/species"]
    with pytest.raises(InputError, match=r"t\.h5: missing particles/trajectory/species/value"):
        TrajectoryReader(path)
    empty = tmp_path / "empty.h5"
    TrajectoryWriter(empty).close()
    with pytest.raises(InputError, match="holds no frames"):
        TrajectoryReader(empty)


def test_reader_ignores_torn_trailing_frames(tmp_path):
    """Simulate what a crash between resize and write can leave: longer datasets or unwritten steps."""
    path = tmp_path / "t.h5"
    write(path, [make_frame(i) for i in range(5)])
    with h5py.File(path, "a") as f:
        f["particles/trajectory/force/value"].resize(7, axis=0)  # data extended, step not
    with TrajectoryReader(path) as r:
        assert r.n_frames == 5
    with h5py.File(path, "a") as f:
        for name in ("position", "velocity", "force", "species", "energies", "id", "box/edges"):
            f[f"particles/trajectory/{name}/value"].resize(6, axis=0)
        for name in f["observables/trajectory"]:
            f[f"observables/trajectory/{name}/value"].resize(6, axis=0)
        f["particles/trajectory/position/time"].resize(6, axis=0)
        f["particles/trajectory/position/step"].resize(6, axis=0)  # extent on disk, value still the fill
    with TrajectoryReader(path) as r:
        assert r.n_frames == 5 and list(r.steps) == [0, 10, 20, 30, 40]


CHILD = textwrap.dedent(
    """
    import signal, sys, time
    import numpy as np
    # Ctrl-C the way nlmd run handles it: the handler only sets a flag, the loop stops between frames and
    # the `with` closes the writer. (A KeyboardInterrupt raised at an arbitrary point inside h5py can leave
    # HDF5's library state half-updated; the writer is not meant to be interrupted mid-call.)
    stop = []
    signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))  # even if the parent ignores SIGINT
    sys.path.insert(0, {tests!r})
    from test_h5md import make_frame
    from nlmd.h5md import TrajectoryWriter
    n = int(sys.argv[2])
    i = 0
    with TrajectoryWriter(sys.argv[1], flush_every=5) as w:
        while not stop:
            w.write(make_frame(i, n=n))
            i += 1
            if w.n_written == w.n_flushed:
                print("flushed", w.n_flushed, flush=True)
            time.sleep(float(sys.argv[3]))
    print("closed", w.n_written, w.n_flushed, flush=True)
    """
)


def _spawn(tmp_path: Path, n: int, pause: float) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent)))
    out = tmp_path / f"child-{n}.h5"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), str(n), str(pause)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc, out


def _check_intact(path: Path, n: int, at_least: int) -> int:
    with TrajectoryReader(path) as r:
        assert r.n_frames >= at_least
        for i, frame in enumerate(r):  # every frame complete and equal to what the child wrote
            expected = make_frame(i, n=n)
            assert frame.step == expected.step
            np.testing.assert_array_equal(frame.positions, expected.positions)
            np.testing.assert_array_equal(frame.forces, expected.forces)
            np.testing.assert_array_equal(frame.energies, expected.energies)
            np.testing.assert_array_equal(frame.ids, expected.ids)
            assert frame.observables["temperature"] == expected.observables["temperature"]
        return r.n_frames


@pytest.mark.parametrize("n, pause, kill_after", [(N, 0.002, 10), (3000, 0.0, 15)])
def test_sigkill_keeps_every_flushed_frame(tmp_path, n, pause, kill_after):
    proc, out = _spawn(tmp_path, n, pause)
    flushed = 0
    try:
        for line in proc.stdout:
            flushed = int(line.split()[1])
            if flushed >= kill_after:
                break
        os.kill(proc.pid, signal.SIGKILL)  # mid-run: the child keeps writing until the signal lands
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert flushed >= kill_after
    _check_intact(out, n, flushed)


def test_sigint_closes_a_complete_file(tmp_path):
    proc, out = _spawn(tmp_path, N, 0.002)
    try:
        for line in proc.stdout:
            if int(line.split()[1]) >= 10:
                break
        time.sleep(0.013)  # land between flushes, with frames in the buffer
        os.kill(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        last = rest.strip().splitlines()[-1].split()
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == 0 and last[0] == "closed"
    n_written = int(last[1])
    assert _check_intact(out, N, n_written) == n_written


def test_mdanalysis_reads_the_file(tmp_path):
    pytest.importorskip("MDAnalysis")
    from MDAnalysis import units

    frames = [make_frame(i) for i in range(4)]
    path = tmp_path / "t.h5"
    write(path, frames)
    u = h5md.open_mdanalysis(path, convert_units=False)
    assert len(u.atoms) == N and len(u.trajectory) == 4
    assert list(u.atoms.elements[:2]) == ["Sr", "O"]
    np.testing.assert_array_equal(u.atoms.ids, frames[0].ids)
    from MDAnalysis.lib.mdamath import triclinic_vectors

    for ts, frame in zip(u.trajectory, frames):
        # MDAnalysis holds the cell as lengths and angles (a along x, b in xy): the frame comes rotated into
        # that cell by the rotation q with box @ q = MDAnalysis's cell (identity for the first, diagonal box)
        q = np.linalg.solve(frame.box, triclinic_vectors(ts.dimensions))
        np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-5)
        np.testing.assert_allclose(ts.positions, frame.positions @ q, rtol=1e-5, atol=1e-5)  # float32
        np.testing.assert_allclose(ts.forces, frame.forces @ q, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ts.velocities, frame.velocities @ q, rtol=1e-5, atol=1e-5)
        assert ts.time == pytest.approx(frame.time)
    np.testing.assert_allclose(u.trajectory[0].positions, frames[0].positions, rtol=1e-6, atol=1e-6)
    u.trajectory.close()
    # with MDAnalysis's unit conversion: forces in kJ/(mol Angstrom)
    u = h5md.open_mdanalysis(path)
    u.trajectory[2]
    factor = units.get_conversion_factor("force", "eV/Angstrom", "kJ/(mol*Angstrom)")
    assert factor == pytest.approx(96.485, rel=1e-4)
    np.testing.assert_allclose(np.linalg.norm(u.trajectory.ts.forces, axis=1),
                               np.linalg.norm(frames[2].forces, axis=1) * factor, rtol=1e-5, atol=1e-4)
    u.trajectory.close()
    # through a reader of its own: MDAnalysis's H5MD reader is left as it was, and "H5MD" is still it
    from MDAnalysis.coordinates.H5MD import H5MDReader
    from MDAnalysis.core._get_readers import get_reader_for

    assert "eV Angstrom-1" not in H5MDReader._unit_translation["force"]
    assert get_reader_for(str(path), format="H5MD") is H5MDReader


def test_to_atoms(tmp_path):
    from ase.units import fs as ase_fs

    frame = make_frame(3)
    atoms = h5md.to_atoms(frame, boundary=("periodic", "periodic", "none"))
    np.testing.assert_array_equal(atoms.numbers, frame.species)
    np.testing.assert_array_equal(atoms.positions, frame.positions)
    np.testing.assert_array_equal(atoms.get_forces(), frame.forces)
    np.testing.assert_allclose(atoms.get_velocities() * ase_fs * 1000, frame.velocities)
    assert atoms.get_potential_energy() == frame.observables["potential_energy"]
    assert list(atoms.pbc) == [True, True, False] and atoms.info["step"] == 30
    np.testing.assert_array_equal(atoms.get_array("id"), frame.ids)


def test_reader_explains_a_file_locked_by_its_writer(tmp_path):
    path = tmp_path / "t.h5"
    code = (
        "import sys\nfrom nlmd.h5md import TrajectoryReader\n"
        "try:\n    TrajectoryReader(sys.argv[1])\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    with TrajectoryWriter(path, flush_every=1) as w:
        w.write(make_frame(0))
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert "InputError" in out.stdout and "open for writing by another process" in out.stdout, out.stderr
