"""`adaptrec update` and `adaptrec drift`: the offline half of the online loop (docs/online.md)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .. import api
from .options import MadeForBackboneOpt, MadeForQuantOpt, SeedOpt, SetOpt, echo_json, path_option, strictly


def register(app: typer.Typer) -> None:
    app.command()(update)
    app.command()(drift)


def update(
    ref: str = typer.Argument(..., help="the registered adapter to start from (name or name:version)"),
    data: str = typer.Option(..., "--data", help="SPEC of the new labelled cases, e.g. feedback:movie:1733300000"),
    replay: float = typer.Option(0.2, "--replay", min=0.0, max=1.0, callback=strictly(below=1.0),
                                 help="share of the training mix drawn from REF's original training data, from 0 "
                                 "(none) to below 1"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="optimizer steps (default: REF's recipe's)"),
    set_: Optional[List[str]] = SetOpt,
) -> None:
    """Warm-start from REF, train on --data mixed with replay, register the next version of REF's name."""
    result = api.update(ref, data=data, replay=replay, steps=steps, overrides=set_ or [])
    if result.replay_short:
        typer.echo(f"note: {result.replay_cases} replayed cases are {result.replay_share:.0%} of the mix, not the "
                   f"{replay:.0%} asked: {ref}'s training data holds no more", err=True)
    typer.echo(f"registered {result.record.ref} (updated from {result.record.lineage['updated_from']} on "
               f"{result.new_cases} new + {result.replay_cases} replayed cases, {result.train.steps} steps); "
               f"gate it: adaptrec registry promote {result.record.ref} --if-better --data SPEC")


def drift(
    domain: str = typer.Argument(..., help="the domain whose champion is compared across the two windows"),
    before: str = typer.Option(..., "--before", help="SPEC of the earlier window, e.g. "
                               "feedback:movie:1733000000[0:300]"),
    after: str = typer.Option(..., "--after", help="SPEC of the later window"),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="score with this ref instead of the champion"),
    limit: Optional[int] = typer.Option(None, "--limit", min=0,
                                        help="a seeded, label-stratified subset of each window (default, or 0: all "
                                        "cases)"),
    seed: int = SeedOpt,
    as_json: bool = typer.Option(False, "--json", help="print the whole report as JSON"),
    plot: Optional[Path] = path_option(None, "--plot", help="also draw the reliability curves and the AUC of "
                                        "each window to this PNG"),
    backbone: Optional[str] = MadeForBackboneOpt,
    quantization: Optional[str] = MadeForQuantOpt,
) -> None:
    """Compare two windows: score distribution (PSI, KS), calibration (reliability, ECE), AUC beside the baselines."""
    from ..online.drift import summary

    report = api.drift(domain, before=before, after=after, adapter=adapter, limit=limit, seed=seed, plot=plot,
                       backbone=backbone, quantization=quantization)
    echo_json(report) if as_json else typer.echo(summary(report))
