"""`adaptrec serve`: every registered adapter over HTTP on one backbone."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .. import api
from .options import BackboneOpt, QuantOpt, TemplateOpt


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    preload: Optional[List[str]] = typer.Option(None, "--preload", help="adapter refs to load at start (repeatable)"),
    max_resident: int = typer.Option(8, "--max-resident", help="LRU cap on adapters held in memory"),
    max_prompt_tokens: int = typer.Option(1024, "--max-prompt-tokens"),
    max_candidates: int = typer.Option(100, "--max-candidates"),
    queue_timeout: float = typer.Option(5.0, "--queue-timeout", help="seconds a request may wait before it is refused"),
    max_batch: int = typer.Option(16, "--max-batch"),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms"),
    template: str = TemplateOpt,
    registry: Optional[Path] = typer.Option(None, "--registry", help="registry folder (default: $ADAPTREC_HOME)"),
    backbone: str = BackboneOpt,
    quantization: str = QuantOpt,
) -> None:
    """Serve every registered adapter over HTTP on one backbone (docs/serving.md); admin token: $ADAPTREC_ADMIN_TOKEN."""
    api.serve(host=host, port=port, preload=preload or [], max_resident=max_resident,
              max_prompt_tokens=max_prompt_tokens, max_candidates=max_candidates, queue_timeout=queue_timeout,
              max_batch=max_batch, max_wait_ms=max_wait_ms, template=template, registry_home=registry,
              backbone=backbone, quantization=quantization)
