"""nlmd.outputs: atomic writes, summaries, the reproducing command line, the communicator, the progress line."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nlmd import outputs
from nlmd.errors import InputError


def test_atomic_write_renames_a_complete_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.txt.") and tmp.name.endswith(".part")
        assert target.read_text() == "old"  # the target is untouched while the new one is written
        tmp.write_text("new")

    assert outputs.atomic_write(target, write) == target
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    assert not seen[0].exists()


def test_atomic_write_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def write(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        outputs.atomic_write(target, write)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_two_writers_of_one_target_get_different_temporaries(tmp_path):
    """The fixed '.name.part' of before collided when two runs wrote the same output at once."""
    target = tmp_path / "summary.json"
    with outputs.atomic_path(target) as a, outputs.atomic_path(target) as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a"  # b was renamed first (inner block), then a: the last rename wins
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_atomic_directory_replaces_an_existing_one(tmp_path):
    out = tmp_path / "pot"
    out.mkdir()
    (out / "stale").write_text("x")
    with outputs.atomic_path(out, directory=True) as tmp:
        assert tmp.is_dir() and not (tmp / "stale").exists()
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pot"]


def test_atomic_path_refuses_a_missing_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        outputs.write_text(tmp_path / "nope" / "x.txt", "x")


def test_summary_beside_the_output(tmp_path):
    out = tmp_path / "traj.h5"
    path = outputs.write_summary(out, {"frames": 3})
    assert path == tmp_path / "traj.h5.summary.json" == outputs.summary_path(out)
    assert json.loads(path.read_text()) == {"frames": 3} and path.read_text().endswith("}\n")


@click.group()
def _cli():
    pass


@_cli.command(name="demo")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--every", type=int, default=10)
@click.option("-v", "--var", "variables", type=(str, str), multiple=True)
@click.option("--scan", nargs=2, type=(float, int), default=(1.5, 3))
@click.option("--aot/--no-aot", default=True)
@click.option("--force", is_flag=True)
@click.option("--name", default=None)
def _demo(files, output, every, variables, scan, aot, force, name):
    click.echo(outputs.command_line())
    click.echo(outputs.command_line(defaults=True, ranks=4))


def test_command_line_rebuilds_what_was_typed():
    args = ["demo", "a b.h5", "c.h5", "--no-aot", "-v", "T", "300", "--force", "--output", "o.h5",
            "-v", "seed", "2", "--every", "5"]
    result = CliRunner().invoke(_cli, args)
    assert result.exit_code == 0, result.output
    typed, full = result.output.splitlines()
    # declaration order, the first name of each option, defaults left out, the space quoted
    assert typed == "nlmd demo 'a b.h5' c.h5 -o o.h5 --every 5 -v T 300 -v seed 2 --no-aot --force"
    assert shlex.split(full) == ["mpirun", "-np", "4", "nlmd", "demo", "a b.h5", "c.h5", "-o", "o.h5",
                                 "--every", "5", "-v", "T", "300", "-v", "seed", "2", "--scan", "1.5", "3",
                                 "--no-aot", "--force"]
    # what it records runs the same command again
    again = CliRunner().invoke(_cli, shlex.split(typed)[1:])
    assert again.output.splitlines()[0] == typed


def test_world_comm_gives_the_communicator_it_is_given():
    sentinel = object()
    assert outputs.world_comm(sentinel) is sentinel
    comm = outputs.world_comm()
    assert comm.Get_size() >= 1 and 0 <= comm.Get_rank() < comm.Get_size()


def test_progress_live_line(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(outputs.time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    bar = outputs.Progress("nlmd run: step", unit="steps", stream=stream, live=True, refresh=0.0)
    bar.update(10, 0, 50)           # the rate counts from here
    now[0] += 4.0
    bar.update(30, 0, 50, "3 frames")  # 20 steps in 4 s: 5 steps/s, 20 steps left: 4 s
    bar.close()
    text = stream.getvalue()
    assert "\rnlmd run: step 30/50  60.0% | 5 steps/s | left 0:04 | 3 frames" in text
    assert text.endswith("\n") and text.count("\n") == 1


def test_progress_plain_lines_once_per_tenth(monkeypatch):
    stream = io.StringIO()
    bar = outputs.Progress("rescore f.h5:", unit="frames", stream=stream, live=False)
    for done in range(1, 21):
        bar.update(done, 0, 20)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [ln.split()[2] for ln in lines] == [f"{2 * k}/20" for k in range(1, 11)]
    assert all(ln.startswith("rescore f.h5: ") and " frames, " in ln for ln in lines)


def test_progress_is_live_on_a_terminal_only():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert outputs.Progress("x", stream=Tty()).live and not outputs.Progress("x", stream=io.StringIO()).live
