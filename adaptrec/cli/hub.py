"""`adaptrec hub push|pull`: share adapters on the Hugging Face Hub or an offline mirror folder."""

from __future__ import annotations

from typing import Optional

import typer

from .. import api
from .options import BackboneOpt, QuantOpt

hub_app = typer.Typer(no_args_is_help=True, help="Share adapters on the Hugging Face Hub or an offline mirror folder.")

_MATCH_NOTES = {"exact": "", "family": "; same base family as the local backbone, another build: scores may shift slightly",
                "none": "; made for ANOTHER base family (--force): loads on this backbone will refuse it"}


def register(app: typer.Typer) -> None:
    app.add_typer(hub_app, name="hub")


@hub_app.command("push")
def hub_push(
    adapter: str = typer.Argument(..., help="a registered adapter NAME[:VERSION]"),
    repo: Optional[str] = typer.Option(None, "--repo", help="Hub repo ORG/NAME (with --to: the mirror folder name, default NAME)"),
    to: Optional[str] = typer.Option(None, "--to", help="write to an offline mirror folder (adapters_hub/ layout) "
                                     "instead of the Hub"),  # text: typer reads '' as the path '.
    public: bool = typer.Option(False, "--public", help="create the Hub repo public (default: private)"),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub branch (default main); mirror revision folder (default vVERSION)"),
) -> None:
    """Publish an adapter: peft files, adaptrec.json and a model card (token: HF_TOKEN or `hf auth login`)."""
    res = api.push(adapter, repo=repo, to=to, public=public, revision=revision)
    if to is not None:
        typer.echo(f"wrote {res.ref} to {res.url}")
    else:
        kept = f"; kept {len(res.kept)} file(s) no adaptrec push wrote: {', '.join(res.kept)}" if res.kept else ""
        typer.echo(f"pushed {res.ref} to {res.url} (branch {res.revision}, commit {res.commit}){kept}")


@hub_app.command("pull")
def hub_pull(
    source: str = typer.Argument(..., help="ORG/NAME\\[@REVISION] on the Hub, or a mirror PATH\\[@REVISION]"),
    name: Optional[str] = typer.Option(None, "--name", help="registry name (default: the published name)"),
    force: bool = typer.Option(False, "--force", help="register even if made for another base-model family"),
    backbone: str = BackboneOpt,
    quantization: str = QuantOpt,
) -> None:
    """Download, verify (safetensors only, safe paths, hashes, base family) and register as kind 'pulled'."""
    res = api.pull(source, name=name, force=force, backbone=backbone, quantization=quantization)
    typer.echo(f"pulled {res.origin['repo']}@{res.origin['revision']} as {res.record.ref}{_MATCH_NOTES[res.match]}")
