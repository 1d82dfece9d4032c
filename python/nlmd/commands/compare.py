"""``nlmd compare``: forces and energies of a model trajectory against a reference."""

from __future__ import annotations

from pathlib import Path

import click

_FILE = click.Path(dir_okay=False, path_type=Path)  # existence is checked by nlmd.compare (one-line error)


@click.command(
    "compare",
    epilog=(
        "One pair (MODEL REF, or one --pair) prints the error table. Several pairs (--pair repeated, or "
        "--runs DIR with subdirectories holding model.h5 and ref.h5) print the table against R_fix. "
        "See docs/compare.md for the metrics."
    ),
)
@click.argument("files", nargs=-1, type=_FILE, metavar="[MODEL REF]")
@click.option("--pair", "pairs", nargs=2, multiple=True, type=_FILE, metavar="MODEL REF",
              help="A model/reference pair; repeat for an R_fix sweep.")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Every subdirectory of DIR holding model.h5 and ref.h5 is a run named after it.")
@click.option("--by", type=click.Choice(["step", "time"]), default="step", show_default=True,
              help="Match frames by step number or by time.")
@click.option("--time-tol", type=click.FloatRange(min=0), default=1e-6, show_default=True,
              help="Tolerance (ps) for --by time.")
@click.option("--position-tol", type=float, default=1e-4, show_default=True,
              help="Largest position difference (Angstrom) allowed between matched frames.")
@click.option("--shift-energy", is_flag=True,
              help="Remove the mean per-atom energy difference before the energy errors (another energy zero).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Write the report as JSON.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write PNG figures to DIR.")
def command(files, pairs, runs_dir, by, time_tol, position_tol, shift_energy, json_path, plot_dir):
    """Compare forces and energies of MODEL with REF (e.g. DFT) on their common frames."""
    from nlmd import compare
    from nlmd.errors import InputError

    if len(files) not in (0, 2):
        raise InputError(f"give MODEL and REF as two files (got {len(files)}), or use --pair/--runs")
    items: list[tuple] = []
    if files:
        items.append(tuple(files))
    items += [tuple(p) for p in pairs]
    if runs_dir is not None:
        if items:
            raise InputError("--runs cannot be combined with MODEL REF or --pair")
        items = compare.find_runs(runs_dir)
    if not items:
        raise InputError("nothing to compare: give MODEL REF, --pair MODEL REF, or --runs DIR")
    if json_path is not None:  # before the comparison, not after it
        from nlmd.outputs import check_output

        check_output(json_path, option="--json", make_parent=True,
                     inputs=[f for item in items for f in item if isinstance(f, Path)])
    options = dict(by=by, shift_energy=shift_energy, position_tol=position_tol, time_tol=time_tol)

    if len(items) == 1 and runs_dir is None:
        model, ref = items[0]
        report = compare.compare_files(model, ref, plot_dir=plot_dir, **options)
        text = compare.format_report(report)
    else:
        report = compare.compare_runs(items, plot_dir=plot_dir, **options)
        text = compare.format_runs(report)
    click.echo(text)
    if json_path is not None:
        compare.write_report(report, json_path)
        click.echo(f"report: {json_path}")
