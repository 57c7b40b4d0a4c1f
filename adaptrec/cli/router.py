"""`adaptrec compose`, `route` and `recommend`: combine adapters, decide who serves a user, recommend items."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import api
from ..errors import AdaptrecError
from .options import (
    HISTORY_FILE,
    AdapterTemplateOpt,
    BatchOpt,
    ChampionBackboneOpt,
    ChampionQuantOpt,
    MadeForQuantOpt,
    SeedOpt,
    echo_json,
    path_option,
)

ColdMixOpt = typer.Option(None, "--cold-mix", help="serve cold users a score-level mix of these adapters (comma-separated)")
ColdWeightsOpt = typer.Option(None, "--cold-weights", help="weights of --cold-mix (default equal)")
MinHistoryOpt = typer.Option(3, "--min-target-history", min=0,
                             help="fewer target-domain interactions than this: cold start")
UserOpt = typer.Option(..., "--user", help="the user id (as in --data, or any name with --history)")
DomainOpt = typer.Option(..., "--domain", help="the target domain")


def register(app: typer.Typer) -> None:
    app.command("compose")(compose)
    app.command("route")(route)
    app.command("recommend")(recommend)


def _weights(values) -> str:
    return ", ".join(f"{w:.4g}" for w in values)


def compose(
    from_: str = typer.Option(..., "--from", help="adapters (refs, or domains: their promoted adapter), comma-separated"),
    method: str = typer.Option("cat", "--method", help="cat | svd | ties_svd | dare_linear_svd | dare_ties_svd | "
                               "magnitude_prune_svd | linear | ties | dare_linear | dare_ties | magnitude_prune | mix"),
    weights: Optional[str] = typer.Option(None, "--weights", help="one per adapter, e.g. 0.6,0.4 (default equal)"),
    name: str = typer.Option(..., "--name", help="registry name of the composed adapter"),
    domain: Optional[str] = typer.Option(None, "--domain", help="domain it serves (default: the last source's)"),
    search: bool = typer.Option(False, "--search", help="learn the weights on --shots labelled cases of --data"),
    data: Optional[str] = typer.Option(None, "--data", help="with --search: the target domain's labelled data SPEC"),
    shots: Optional[int] = typer.Option(None, "--shots", min=1, max=32,
                                        help="with --search: labelled target cases (default and most: 32)"),
    budget: Optional[int] = typer.Option(None, "--budget", min=1,
                                         help="with --search: loss evaluations (LoraHub's inference steps; "
                                         "default 20)"),
    l1: Optional[float] = typer.Option(None, "--l1", help="with --search: L1 penalty on the weights (ΔW merges; a mix "
                                      "ignores it; default 0.05)"),
    seed: int = SeedOpt,
    svd_rank: Optional[int] = typer.Option(None, "--svd-rank", min=1,
                                           help="*svd methods (default: sum of ranks, exact for svd)"),
    density: Optional[float] = typer.Option(None, "--density", help="ties/dare/magnitude_prune: share of values kept, "
                                            "above 0 to 1 (default 0.5; 1.0 for magnitude_prune*)"),
    promote_cold: bool = typer.Option(False, "--promote-cold", help="serve cold-start users of DOMAIN with it"),
    into_base: Optional[Path] = path_option(None, "--into-base", help="also write a standalone full-precision model "
                                             "with the composition merged in (safetensors) to this new folder"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="default: the backbone the first adapter was "
                                           "trained on"),
    quantization: Optional[str] = MadeForQuantOpt,
) -> None:
    """Combine adapters (peft ΔW merge, or score-level mix) with given or learned weights; register the result."""
    if search and not data:
        raise AdaptrecError("compose --search: pass --data SPEC with the target domain's labelled cases")
    search_options = {"shots": shots, "budget": budget, "l1": l1}  # None: api.compose's default
    given = [f"--{option}" for option, value in {"data": data, **search_options}.items() if value is not None]
    if given and not search:  # nothing would read them: the weights would be equal, not learned
        several = len(given) > 1
        raise AdaptrecError(f"compose {', '.join(given)}: only the weight search reads {'these' if several else 'this'}"
                            f"; add --search, or drop {'them' if several else 'it'} to compose with --weights")
    res = api.compose(from_, name=name, method=method, weights=weights, domain=domain, search_data=data,
                      **{option: value for option, value in search_options.items() if value is not None}, seed=seed,
                      svd_rank=svd_rank, density=density, promote_cold=promote_cold, into_base=into_base,
                      backbone=backbone, quantization=quantization)
    record, composition = res.record, res.composition
    if res.search is not None:
        typer.echo(f"searched {res.search.evaluations} weightings on {res.shots} shots of {data}: "
                   f"log-loss {res.search.loss:.4f} at weights {_weights(composition.weights).replace(', ', ',')}")
    typer.echo(f"registered {record.ref} ({method} of {', '.join(composition.refs)}, weights "
               f"{_weights(composition.weights)}) for domain {record.domain}")
    if promote_cold:
        typer.echo(f"promoted {record.ref} for cold-start users of {record.domain}")
    if into_base:
        typer.echo(f"wrote {into_base}: full-precision model with {record.ref} merged in (re-quantizing it to 8-bit is lossy)")


def _echo_decision(decision) -> None:
    weights = "" if decision.weights == (1.0,) else f" (score-level weights {', '.join(f'{w:g}' for w in decision.weights)})"
    typer.echo(f"user {decision.user_id}, domain {decision.domain}: {decision.mode}")
    typer.echo(f"adapters: {', '.join(decision.adapters)}{weights}; prompt history: {decision.history_domains}")
    typer.echo(f"reason: {decision.reason}")
    for warning in decision.warnings:  # on stderr, as adaptrec's other warnings
        typer.echo(f"warning: {warning}", err=True)


def route(
    user: str = UserOpt,
    domain: str = DomainOpt,
    data: Optional[str] = typer.Option(None, "--data", help="a data SPEC holding the user's history"),
    history: Optional[Path] = path_option(None, "--history", help=HISTORY_FILE),
    min_target_history: int = MinHistoryOpt,
    cold_mix: Optional[str] = ColdMixOpt,
    cold_weights: Optional[str] = ColdWeightsOpt,
    backbone: Optional[str] = ChampionBackboneOpt,
    quantization: Optional[str] = ChampionQuantOpt,
    json_out: bool = typer.Option(False, "--json", help="print the decision as JSON"),
) -> None:
    """Print which adapter(s) serve USER in DOMAIN (warm: the domain's adapter; cold: the composed one) and why."""
    decision = api.route(user, domain, data=data, history=history, min_target_history=min_target_history,
                         cold_mix=cold_mix, cold_weights=cold_weights, backbone=backbone, quantization=quantization)
    echo_json(decision.to_dict()) if json_out else _echo_decision(decision)


def recommend(
    user: str = UserOpt,
    domain: str = DomainOpt,
    data: str = typer.Option(..., "--data", help="implicit-feedback SPEC: the catalogue (and the user's history)"),
    history: Optional[Path] = path_option(None, "--history", help=f"{HISTORY_FILE}; instead of the user's case in "
                                           "--data"),
    candidates_file: Optional[Path] = path_option(None, "--candidates-file",
                                                   help="candidate lists (candidates.jsonl or .parquet, docs/data.md); "
                                                   "default: retrieve"),
    retrieve: Optional[int] = typer.Option(None, "--retrieve", min=1, help="candidates retrieved with MiniLM when no "
                                           "--candidates-file (default 20)"),
    top_k: int = typer.Option(10, "--top-k", min=1, help="items printed, best first"),
    min_target_history: int = MinHistoryOpt,
    cold_mix: Optional[str] = ColdMixOpt,
    cold_weights: Optional[str] = ColdWeightsOpt,
    template: Optional[str] = AdapterTemplateOpt,
    batch_size: int = BatchOpt,
    backbone: Optional[str] = ChampionBackboneOpt,
    quantization: Optional[str] = ChampionQuantOpt,
    as_json: bool = typer.Option(False, "--json", help="print the decision and the ranked items as JSON"),
) -> None:
    """Recommend: retrieve candidates (MiniLM) or read them, re-rank with the routed adapter(s); titles and scores."""
    rec = api.recommend(user, domain, data=data, history=history, candidates_file=candidates_file,
                        retrieve=retrieve, top_k=top_k, min_target_history=min_target_history, cold_mix=cold_mix,
                        cold_weights=cold_weights, template=template, batch_size=batch_size, backbone=backbone,
                        quantization=quantization)
    if as_json:
        return echo_json(rec.to_dict())
    _echo_decision(rec.decision)
    if rec.retrieval_hit is not None:
        typer.echo(f"retrieval recall@{retrieve or api.RETRIEVE}: {int(rec.retrieval_hit)} (held-out item "
                   f"{rec.case.target_id} {'' if rec.retrieval_hit else 'not '}retrieved)")
    for rank, r in enumerate(rec.result.items, 1):
        sim = "" if r.similarity is None else f"  sim {r.similarity:.3f}"
        typer.echo(f"{rank:3}. {r.score:.4f}{sim}  {r.title}")
