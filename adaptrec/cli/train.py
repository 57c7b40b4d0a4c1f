"""`adaptrec train`, `train-cf`, `demo` and `recipes`: train an adapter from a recipe or a collaborative encoder;
list and show the shipped recipes."""

from __future__ import annotations

from typing import List, Optional

import typer

from .. import api
from .options import SeedOpt, SetOpt

recipes_app = typer.Typer(no_args_is_help=True, help="The recipes shipped with adaptrec.")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command("train-cf")(train_cf)
    app.command()(demo)
    app.add_typer(recipes_app, name="recipes")


def train(
    recipe: str = typer.Argument(..., help="a recipe file, or the name of a shipped one (`adaptrec recipes list`)"),
    set_: Optional[List[str]] = SetOpt,
    resume: bool = typer.Option(False, "--resume", help="continue from the run's latest checkpoint"),
    restart: bool = typer.Option(False, "--restart", help="discard the run's checkpoints and start over"),
    promote: bool = typer.Option(False, "--promote", help="make the new adapter the one that serves its domain"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate, resolve data and backbone, print the plan; "
                                 "train nothing"),
) -> None:
    """Train an adapter from a recipe, evaluate it beside the baselines, and register it."""
    if dry_run:
        typer.echo(api.plan(recipe, set_ or [], resume=resume, restart=restart).describe())
        return
    result = api.train(recipe, set_ or [], resume=resume, restart=restart, promote=promote)
    if result.report is None:  # another process of a multi-process launch: the main one reports
        return
    typer.echo(result.report.markdown())
    typer.echo(f"\nregistered {result.record.ref} (run folder {result.train.run_dir})")
    if promote:
        typer.echo(f"promoted {result.record.ref} for domain {result.record.domain}")


def train_cf(
    kind: str = typer.Argument(..., help="mf-bias, bpr, als, lightgcn or sasrec"),
    data: str = typer.Option(..., "--data", help="interaction source: movielens:100k, movielens:100k:loo or amazon"),
    name: Optional[str] = typer.Option(None, "--name", help="registry name (default KIND-SOURCE)"),
    dim: Optional[int] = typer.Option(None, "--dim", min=1, help="vector size (default: the encoder's)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="epochs, or iterations for bpr/als (default: "
                                        "the encoder's)"),
    seed: int = SeedOpt,
) -> None:
    """Fit a collaborative encoder on a source's training interactions, measure it on validation, register it."""
    record = api.train_cf(kind, data=data, name=name, dim=dim, epochs=epochs, seed=seed)
    shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.metrics.items())
    typer.echo(f"registered encoder {record.ref} ({record.kind} on {record.data}: {record.window}); {shown}")


def demo(limit: int = typer.Option(200, "--limit", min=2,
                                   help="test cases, a seeded label-stratified subset (at least 2)")) -> None:
    """The main job on the embedded default: train movie-lora (64 shots), evaluate, register and promote."""
    train(recipe="movie-lora", set_=[f"evaluation.limit={limit}"], resume=False, restart=True, promote=True,
          dry_run=False)


@recipes_app.command("list")
def recipes_list() -> None:
    """The shipped recipes, each with what it trains (`adaptrec train NAME` runs one)."""
    shipped = api.recipes()
    width = max(map(len, shipped), default=0)
    for name, summary in shipped.items():
        typer.echo(f"{name:<{width}}  {summary}")


@recipes_app.command("show")
def recipes_show(name: str = typer.Argument(..., help="a shipped recipe's name, or a recipe file")) -> None:
    """Print a recipe (copy it, edit it, and train from the copy)."""
    typer.echo(api.recipe_text(name), nl=False)
