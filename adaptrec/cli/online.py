"""`adaptrec update` and `adaptrec drift`: the offline half of the online loop (docs/online.md)."""

from __future__ import annotations

import typer

from .. import api
from .options import SetOpt


def register(app: typer.Typer) -> None:
    app.command()(update)


def update(
    ref: str = typer.Argument(..., help="the registered adapter to start from (name or name:version)"),
    data: str = typer.Option(..., "--data", help="SPEC of the new labelled cases, e.g. feedback:movie:1733300000"),
    replay: float = typer.Option(0.2, "--replay", help="share of the training mix drawn from REF's original "
                                 "training data (0: none)"),
    steps: int | None = typer.Option(None, "--steps", help="optimizer steps (default: REF's recipe's)"),
    set_: list[str] | None = SetOpt,
) -> None:
    """Warm-start from REF, train on --data mixed with replay, register the next version of REF's name."""
    result = api.update(ref, data=data, replay=replay, steps=steps, overrides=set_ or [])
    typer.echo(f"registered {result.record.ref} (updated from {result.record.lineage['updated_from']} on "
               f"{result.new_cases} new + {result.replay_cases} replayed cases, {result.train.steps} steps); "
               f"gate it: adaptrec registry promote {result.record.ref} --if-better --data SPEC")
