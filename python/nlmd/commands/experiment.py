"""``nlmd experiment``: the paper's experiments end to end (train, reference MD, rescore, compare, figures)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click


@click.group(name="experiment", context_settings={"help_option_names": ["-h", "--help"]})
def command() -> None:
    """The paper's experiments, run with nlmd's own commands (docs/experiment.md)."""


@command.command(name="sro-train")
@click.option("--budget", type=click.Choice(["full", "tiny"]), default="full", show_default=True,
              help="full: the recipe of the shipped models (~1 h on 2 cores); tiny: the same steps in seconds.")
@click.option("--layers", type=click.IntRange(min=1), multiple=True, default=(1, 2, 3), show_default=True,
              help="Numbers of message-passing layers, one model each (repeatable).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Working directory: the training set, SevenNet's runs (DIR/L<n>/).")
@click.option("--ship", "ship_to", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the checkpoints go, one directory per model [default: DIR/models].")
@click.option("--jobs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Models trained at once (one thread each).")
@click.option("--seed", type=int, default=None, help="Override the recipe's seed (MD velocities, split, SevenNet).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the recipe's epochs.")
def sro_train(budget: str, layers: tuple[int, ...], output: Path, ship_to: Path | None, jobs: int,
              seed: int | None, epochs: int | None) -> None:
    """Train SevenNet models of 1, 2, 3 layers on crystal MD of the SrO reference (sevenn's trainer)."""
    from dataclasses import replace

    from nlmd.experiments.training import RECIPES, train

    recipe = RECIPES[budget]
    if seed is not None:
        recipe = replace(recipe, seed=seed)
    if epochs is not None:
        recipe = replace(recipe, epochs=epochs)
    cmd = shlex.join(["nlmd", "experiment", *sys.argv[sys.argv.index("sro-train"):]]) if "sro-train" in sys.argv \
        else None
    train(recipe, layers, output, ship_to, jobs=jobs, echo=click.echo, command=cmd)
