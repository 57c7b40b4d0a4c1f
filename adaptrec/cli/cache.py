"""`adaptrec cache …`: what $ADAPTREC_HOME holds, and clearing its caches."""

from __future__ import annotations

import typer

from .. import api
from .options import echo_json

cache_app = typer.Typer(no_args_is_help=True, help="What $ADAPTREC_HOME holds; clear its caches.")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


@cache_app.command("info")
def cache_info(as_json: bool = typer.Option(False, "--json", help="print the stores as JSON")) -> None:
    """Each store under $ADAPTREC_HOME: entries and size; the caches `adaptrec cache clear` takes are marked *."""
    found = api.stores()
    if as_json:
        return echo_json([s.to_dict() for s in found])
    for s in found:
        unread = f" ({s.unread:,} of an earlier key format, never read)" if s.unread else ""
        typer.echo(f"{'*' if s.clearable else ' '} {s.name:10} {s.entries:>9,} {_mib(s.bytes):>12}  {s.path}{unread}")


@cache_app.command("clear")
def cache_clear(
    name: str = typer.Argument(..., metavar="CACHE", help="scores | encoders | embeddings"),
    earlier: bool = typer.Option(False, "--earlier-formats", help="scores: only the rows of earlier key formats, "
                                 "which no version reads"),
) -> None:
    """Delete a cache's entries; what they held is computed again when next needed (scores: every prompt is scored
    again). Best run while no other adaptrec process uses the home."""
    removed, freed = api.clear_cache(name, earlier_only=earlier)
    typer.echo(f"cleared {removed:,} entr{'y' if removed == 1 else 'ies'} of {name}, {_mib(freed)} freed")
