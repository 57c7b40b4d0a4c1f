"""`adaptrec plot …`: PNG figures of result files (learning curves, AUC against shots, the cross-domain heat map,
benchmark bars, drift between two windows); each command prints the path it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import api

plot_app = typer.Typer(no_args_is_help=True, help="Draw PNG figures of result files (matplotlib).")

Out = Annotated[Path | None, typer.Option("--out", "-o", help="the PNG to write (default: ./KIND.png)")]
Title = Annotated[str | None, typer.Option("--title", help="the figure's title (default: named after the data)")]


def register(app: typer.Typer) -> None:
    app.add_typer(plot_app, name="plot")


@plot_app.command("curves")
def plot_curves(
    runs: Annotated[list[Path], typer.Argument(help="run folders ($ADAPTREC_HOME/runs/<name>-<hash>/), their "
                                                    "metrics.jsonl, or run names")],
    out: Out = None,
    title: Title = None,
) -> None:
    """Learning curves: train loss per optimizer step and validation AUC, one colour per run."""
    typer.echo(api.plot("curves", runs, out, title=title))


@plot_app.command("shots")
def plot_shots(
    grid: Annotated[Path, typer.Argument(help="the TALLRec grid's results (experiments/results/tallrec_grid.jsonl)")],
    backend: Annotated[str | None, typer.Option(help="the int8 backend's rows (default: the most runs')")] = None,
    budget: Annotated[int | None, typer.Option(help="the step budget's rows (default: the most runs')")] = None,
    out: Out = None,
    title: Title = None,
) -> None:
    """Test AUC against shots per adapter type, every run with its 95% CI, beside the baselines."""
    typer.echo(api.plot("shots", [grid], out, backend=backend, budget=budget, title=title))


@plot_app.command("transfer")
def plot_transfer(
    result: Annotated[Path, typer.Argument(help="the cross-domain experiment's JSON "
                                                "(experiments/results/cross_domain.json)")],
    out: Out = None,
    title: Title = None,
) -> None:
    """The cross-domain matrix as a heat map: every row by metric, per direction, against the untuned backbone."""
    typer.echo(api.plot("transfer", [result], out, title=title))


@plot_app.command("bench")
def plot_bench(
    results: Annotated[list[Path], typer.Argument(help="benchmark JSONs, or a folder of them (bench/results)")],
    out: Out = None,
    title: Title = None,
) -> None:
    """Latency and throughput bars: adaptrec beside the same run's baseline, with each benchmark's target."""
    typer.echo(api.plot("bench", results, out, title=title))


@plot_app.command("drift")
def plot_drift(
    report: Annotated[Path, typer.Argument(help="a drift report (`adaptrec drift --json > drift.json`)")],
    out: Out = None,
) -> None:
    """Two windows' reliability curves and AUCs from a saved drift report (as `drift --plot` draws them)."""
    typer.echo(api.plot("drift", [report], out))
