"""``nlmd experiment``: the paper's experiments end to end (train, reference MD, rescore, compare, figures)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group(name="experiment", context_settings={"help_option_names": ["-h", "--help"]})
def command() -> None:
    """The paper's experiments, run with nlmd's own commands (docs/experiment.md)."""


def training_options(*, jobs: int, seeds: str):
    """The options every training command shares: -o, --ship, --jobs, --seed, --epochs."""
    options = [
        click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Working directory: the training set (DIR/data/), SevenNet's runs (DIR/L<n>/)."),
        click.option("--ship", "ship_to", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Where the checkpoints go, one directory per model [default: DIR/models]."),
        click.option("--jobs", type=click.IntRange(min=1), default=jobs, show_default=True,
                     help="Models trained at once (one thread each)."),
        click.option("--seed", type=int, default=None, help=f"Override the recipe's seed ({seeds})."),
        click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the recipe's epochs."),
    ]

    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def extra_models(specs: tuple[str, ...]) -> list:
    """``--model NAME=DIR`` options as experiment models."""
    from nlmd.errors import InputError
    from nlmd.experiments.sro_rfix import Model

    models = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--model {spec!r}: expected NAME=DIR, e.g. --model mine=potentials/mine")
        models.append(Model.from_directory(name, path))
    return models


@command.command(name="sro-train")
@click.option("--budget", type=click.Choice(["full", "tiny"]), default="full", show_default=True,
              help="full: the recipe of the shipped models (~1 h on 2 cores); tiny: the same steps in seconds.")
@click.option("--layers", type=click.IntRange(min=1), multiple=True, default=(1, 2, 3), show_default=True,
              help="Numbers of message-passing layers, one model each (repeatable).")
@training_options(jobs=3, seeds="MD velocities, split, SevenNet")
def sro_train(budget: str, layers: tuple[int, ...], output: Path, ship_to: Path | None, jobs: int,
              seed: int | None, epochs: int | None) -> None:
    """Train SevenNet models of 1, 2, 3 layers on crystal MD of the SrO reference (sevenn's trainer)."""
    from nlmd.experiments.training import RECIPES, train, with_overrides
    from nlmd.outputs import command_line

    recipe = with_overrides(RECIPES[budget], seed=seed, epochs=epochs)
    train(recipe, layers, output, ship_to, jobs=jobs, echo=click.echo, command=command_line(defaults=True))


@command.command(name="sro-rfix")
@click.option("--budget", type=click.Choice(["demo", "full", "tiny"]), default="demo", show_default=True,
              help="demo: the paper's three R_fix, 1 ps each (minutes); full: five R_fix in the paper's cell for 6 ps "
                   "and four around 2·r_c = 10 A in a 24 A cell (about an hour on 2 cores); tiny: a test budget.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory: trajectories per cell and R_fix, results.json, fig5c.png, fig5b.png.")
@click.option("--model", "extra", multiple=True, metavar="NAME=DIR",
              help="A potential directory to compare as NAME (repeatable), besides the shipped models.")
@click.option("--shipped/--no-shipped", default=True, show_default=True,
              help="Compare the models trained by nlmd's recipe (potentials/trained/, deployed on first use).")
@click.option("--sevennet0/--no-sevennet0", default=True, show_default=True,
              help="Also compare SevenNet-0 (potentials/7net-0, made by the setup), on every 100th step of the "
                   "paper's cell (it costs about a second per frame).")
@click.option("--seed", "seeds", type=click.IntRange(min=1), multiple=True,
              help="Seeds of the reference runs (repeatable) [default: 1].")
@click.option("--reference", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="The reference potential directory [default: potentials/sro-rigid-ion].")
def sro_rfix(budget: str, output: Path, extra: tuple[str, ...], shipped: bool, sevennet0: bool,
             seeds: tuple[int, ...], reference: Path | None) -> None:
    """Fig. 5 of the paper against an exact reference: reference MD at 4000 K per R_fix, every model rescored on
    exactly those frames, compared; prints the table and writes results.json and the figures."""
    from dataclasses import replace

    from nlmd.errors import InputError
    from nlmd.experiments import sro_rfix as X
    from nlmd.outputs import command_line

    chosen = X.BUDGETS[budget]
    if seeds:
        chosen = replace(chosen, seeds=tuple(seeds))
    models = X.shipped_models(echo=click.echo) if shipped else []
    models += extra_models(extra)
    seven = X.REPO / "potentials/7net-0"
    if sevennet0 and chosen.sevennet0_cells:
        if not (seven / "manifest.json").is_file():
            raise InputError(f"{seven}: SevenNet-0 is not deployed (run `bash .ci/setup` or `nlmd deploy 7net-0`), "
                             "or pass --no-sevennet0")
        models.append(X.Model.from_directory("7net-0", seven, every=chosen.sevennet0_every,
                                             cells=chosen.sevennet0_cells))
    kwargs = {} if reference is None else {"reference": reference}
    results = X.run_experiment(output, models, chosen, echo=click.echo, command=command_line(defaults=True), **kwargs)
    click.echo(X.format_table(results))
    click.echo(f"results: {output / 'results.json'}; figures: {', '.join(results['figures'].values())}")


@command.command(name="point-charges-train")
@click.option("--budget", type=click.Choice(["full", "tiny"]), default="full", show_default=True,
              help="full: the recipe of the shipped models (about 1.5 h on 2 cores); tiny: the same steps in seconds.")
@click.option("--layers", type=click.IntRange(min=1), multiple=True, default=(3, 5), show_default=True,
              help="Numbers of message-passing layers, one model each (repeatable).")
@training_options(jobs=2, seeds="configurations, split, SevenNet")
@click.option("--configs", type=click.IntRange(min=1), default=None,
              help="Override the random configurations per training distance (three structures each; paper: ~67).")
@click.option("--lmax", type=click.IntRange(min=1), default=None, help="Override the recipe's l_max (paper: 3).")
@click.option("--channel", type=click.IntRange(min=1), default=None,
              help="Override the recipe's features per l (paper: 32).")
def point_charges_train(budget: str, layers: tuple[int, ...], output: Path, ship_to: Path | None, jobs: int,
                        seed: int | None, epochs: int | None, configs: int | None, lmax: int | None,
                        channel: int | None) -> None:
    """Train SevenNet models of 3 and 5 layers on the paper's point-charge toy model (sevenn's trainer)."""
    from nlmd.experiments import point_charges as X
    from nlmd.outputs import command_line

    from nlmd.experiments.training import with_overrides

    recipe = with_overrides(X.RECIPES[budget], seed=seed, epochs=epochs, configs=configs, lmax=lmax,
                            channel=channel)
    X.train(recipe, layers, output, ship_to, jobs=jobs, echo=click.echo, command=command_line(defaults=True))


@command.command(name="point-charges")
@click.option("--budget", type=click.Choice(["demo", "full", "tiny"]), default="full", show_default=True,
              help="full: d = 4, 5, ..., 24 A with 20 test pairs each (the paper's range); demo: 7 distances x 5 "
                   "pairs; tiny: a test budget.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory: the labelled test set, results.json, fig2b.png, fig3.png, fig4.png.")
@click.option("--model", "extra", multiple=True, metavar="NAME=DIR",
              help="A potential directory to probe as NAME (repeatable), besides the shipped models.")
@click.option("--shipped/--no-shipped", default=True, show_default=True,
              help="Probe the point-charge models nlmd's recipe trained (potentials/trained/point-charges-*, "
                   "deployed on first use).")
@click.option("--pairs", type=click.IntRange(min=1), default=None, help="Override the test pairs per distance.")
@click.option("--seed", type=int, default=None, help="Override the test configurations' seed.")
def point_charges(budget: str, output: Path, extra: tuple[str, ...], shipped: bool, pairs: int | None,
                  seed: int | None) -> None:
    """Figs. 2-4 of the paper: F(+1e, I) - F(+1e, II) against k/d² for d = 4-24 A, per model and the exact
    reference; prints the table and writes results.json and the figures."""
    from nlmd.experiments import point_charges as X
    from nlmd.experiments.training import with_overrides
    from nlmd.outputs import command_line

    chosen = with_overrides(X.BUDGETS[budget], pairs=pairs, seed=seed)
    models = X.shipped(echo=click.echo) if shipped else []
    models += extra_models(extra)
    results = X.probe(models, chosen, output, echo=click.echo, command=command_line(defaults=True))
    click.echo(X.format_table(results))
    click.echo(f"results: {output / 'results.json'}; figures: {', '.join(results['figures'].values())}")
