"""`nlmd info`: versions, the plugin and what it registers, whether `lmp` finds it, CUDA."""

from __future__ import annotations

import click


@click.command("info")
def command() -> None:
    """Print versions, the plugin file and its styles, whether `lmp` loads it, and CUDA availability.

    Exits with status 1 when the plugin cannot be loaded, saying why.
    """
    from nlmd.info import collect

    report = collect()
    width = max(len(k) for k, _ in report.rows)
    for key, value in report.rows:
        click.echo(f"{key:<{width}}  {value}")
    if report.problems:
        for p in report.problems:
            click.echo(f"nlmd: error: {p}", err=True)
        raise SystemExit(1)
