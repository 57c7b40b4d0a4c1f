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

BackboneOpt = typer.Option("embedded:smollm2", "--backbone", help="embedded:smollm2, a Hub id or a local folder")
QuantOpt = typer.Option("8bit", "--quantization", "-q", help="8bit | 4bit | none")
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
    template: str = typer.Option("tallrec", "--template", help="tallrec | chat"),
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
    from .home import adaptrec_home
    from .registry import Registry
    from .score_cache import ScoreCache

    _check_choice("--score", score, ("pyes", "tallrec"))
    dataset = load_spec(data, seed=seed)
    bb = load_backbone(backbone, quantization)
    common = dict(registry=Registry(), adapters=adapters or [], limit=limit or None, seed=seed, mode=score,
                  template=template, batch_size=batch_size, cache=ScoreCache(adaptrec_home() / "score_cache.db"))
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
    from .atomic import write_text
    from .backbone import load_backbone
    from .data.spec import load_spec
    from .evaluation import llm_variants, select_cases
    from .home import adaptrec_home
    from .registry import Registry
    from .score_cache import ScoreCache
    from .scoring import backbone_scorer, to_scores

    dataset = load_spec(data, seed=seed)
    cases = select_cases(dataset, limit, seed) if limit else dataset.cases
    bb = load_backbone(backbone, quantization)
    _, key, model = next(llm_variants(bb, Registry(), [adapter] if adapter else [], include_untuned=not adapter))
    scorer = backbone_scorer(bb, model, key, template=template, batch_size=batch_size,
                             cache=ScoreCache(adaptrec_home() / "score_cache.db"))
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
    from .backbone import load_backbone
    from .data.history_file import read_history_file
    from .evaluation import llm_variants
    from .registry import Registry
    from .scoring import backbone_scorer

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
        mark = "*" if r.ref in promoted else " "
        typer.echo(f"{mark} {r.ref:28} {r.domain:10} {r.kind:9} {r.adapter_type:8} auc={auc if auc is None else f'{auc:.3f}'}  {r.created}")


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


@registry_app.command("gc")
def registry_gc() -> None:
    """Delete adapter folders that no registry row points to."""
    from .registry import Registry

    removed = Registry().gc()
    typer.echo(f"removed {len(removed)} unreferenced folder(s)")


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AdaptrecError(f"{option} {value!r}: expected one of {', '.join(choices)}")


def main() -> None:
    try:
        app()
    except AdaptrecError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
