"""`adaptrec serve`: every registered adapter over HTTP on one backbone."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .. import api
from .options import BackboneOpt, QuantOpt, TemplateOpt, path_option, strictly


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="port to listen on (0: any free one)"),
    preload: Optional[List[str]] = typer.Option(None, "--preload", help="adapter refs to load at start (repeatable); "
                                                "anonymous requests may name these and promoted ones"),
    allow_any_adapter: bool = typer.Option(False, "--allow-any-adapter", help="let anonymous requests name any "
                                           "registered adapter"),
    max_resident: int = typer.Option(8, "--max-resident", min=1, help="LRU cap on adapters held in memory"),
    max_prompt_tokens: int = typer.Option(1024, "--max-prompt-tokens", min=1,
                                          help="longer prompts are refused (413), never cut"),
    max_candidates: int = typer.Option(100, "--max-candidates", min=1,
                                       help="items per /v1/score, candidates per /v1/recommend"),
    max_history: int = typer.Option(200, "--max-history", min=0, help="history items per request"),
    max_text_chars: int = typer.Option(2000, "--max-text-chars", min=1,
                                       help="characters in any one string of a request"),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", min=1,
                                       help="request bodies over this get 413 unread"),
    prefix_cache_mb: int = typer.Option(256, "--prefix-cache-mb", min=0, help="MiB of shared-prefix KV caches kept"),
    queue_timeout: float = typer.Option(5.0, "--queue-timeout", callback=strictly(above=0.0),
                                        help="seconds (above 0) a request may wait before it is refused"),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", min=1,
                                            help="rows merged across requests (default: 1 on "
                                            "CPU, 16 on an accelerator)"),
    max_padding: float = typer.Option(0.1, "--max-padding", min=0.0, max=1.0,
                                      help="largest padding share a merged batch may have"),
    max_wait_ms: float = typer.Option(0.0, "--max-wait-ms", min=0.0,
                                      help="how long a request waits for others to merge with"),
    request_log: bool = typer.Option(True, "--request-log/--no-request-log", help="log each answer with a request_id "
                                     "in $ADAPTREC_HOME/online.db and accept POST /v1/feedback"),
    explore: Optional[List[str]] = typer.Option(None, "--explore", help="DOMAIN=EPSILON: share of /v1/recommend "
                                                "slots filled by ε-greedy exploration (repeatable; default: none)"),
    watch_promotions: float = typer.Option(1.0, "--watch-promotions", min=0.0, help="seconds between checks for a new "
                                           "champion, which is loaded before routing switches to it (0: off)"),
    template: str = TemplateOpt,
    registry: Optional[Path] = path_option(None, "--registry", help="registry folder (default: $ADAPTREC_HOME); the "
                                            "request log goes beside it (DIR/online.db), where commands run with ADAPTREC_HOME=DIR "
                                            "read it"),
    backbone: str = BackboneOpt,
    quantization: str = QuantOpt,
) -> None:
    """Serve every registered adapter over HTTP on one backbone (docs/serving.md); admin token: $ADAPTREC_ADMIN_TOKEN."""
    from ..serve.engine import Limits

    limits = Limits(max_prompt_tokens, max_candidates, queue_timeout, max_body_bytes, max_history, max_text_chars,
                    prefix_cache_mb << 20)
    api.serve(host=host, port=port, preload=preload or [], max_resident=max_resident, limits=limits,
              max_batch=max_batch, max_padding=max_padding, max_wait_ms=max_wait_ms,
              allow_any_adapter=allow_any_adapter, request_log=request_log, exploration=api.parse_exploration(explore or []),
              watch_promotions=watch_promotions,
              template=template, registry_home=registry, backbone=backbone,
              quantization=quantization)
