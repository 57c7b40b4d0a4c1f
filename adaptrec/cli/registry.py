"""`adaptrec registry …` and `export`: the adapter registry under $ADAPTREC_HOME."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from .. import api
from ..errors import AdaptrecError, ConfigError
from ..userfiles import MAX_SEED
from .options import MadeForBackboneOpt, MadeForQuantOpt, echo_json, path_option

registry_app = typer.Typer(no_args_is_help=True, help="The adapter registry under $ADAPTREC_HOME.")


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")
    app.command()(export)


def _auc(metrics: dict | None):
    entry = (metrics or {}).get("auc")
    return entry.get("value") if isinstance(entry, dict) else entry


def _auc_cell(record) -> str:
    for label, value in (("auc", _auc(record.metrics)), ("claimed auc", _auc(record.claimed_metrics))):
        if value is not None:  # a number, or as stored (was: a format error halfway through the list)
            return f"{label}={value:.3f}" if isinstance(value, (int, float)) else f"{label}={value!r}"
    return "auc=None"


@registry_app.command("list")
def registry_list(domain: Optional[str] = typer.Option(None, "--domain", help="only adapters of this domain"),
                  as_json: bool = typer.Option(False, "--json", help="print the records as JSON (without their "
                                               "recipe text; `registry show` has it), with the domains each serves")
                  ) -> None:
    """List registered adapters (promoted ones are marked with *)."""
    reg = api.registry()
    aliases = reg.aliases()
    promoted = set(aliases.values())
    records = reg.list(domain=domain)
    if as_json:
        echo_json([{**{k: v for k, v in r.to_dict().items() if k != "recipe_text"},
                    "promoted_for": sorted(d for d, ref in aliases.items() if ref == r.ref)} for r in records])
        return
    if not records:
        typer.echo("no adapters registered" + (f" for domain {domain!r}" if domain is not None else ""))
    for r in records:
        mark = "*" if r.ref in promoted else " "
        typer.echo(f"{mark} {r.ref:28} {r.domain:10} {r.kind:9} {r.adapter_type:8} {_auc_cell(r)}  {r.created}")


RefArg = typer.Argument(..., metavar="REF", help="an adapter version: NAME (its latest), NAME:VERSION or NAME:latest")


@registry_app.command("show")
def registry_show(ref: str = RefArg) -> None:
    """Everything recorded about one adapter version."""
    echo_json(api.registry().show(ref))


@registry_app.command("promote")
def registry_promote(
    ref: str = RefArg,
    domain: Optional[str] = typer.Option(None, "--domain", help="default: REF's own domain"),
    if_better: bool = typer.Option(False, "--if-better", help="promote only if REF passes the gate against the "
                                   "domain's champion on --data (docs/online.md)"),
    data: Optional[str] = typer.Option(None, "--data", help="SPEC of the recent cases the gate compares on"),
    margin: Optional[float] = typer.Option(None, "--margin", help="non-inferiority margin in AUC (0: superiority; "
                                           "default 0.005)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=0,
                                        help="a seeded, label-stratified subset of --data (default, or 0: all "
                                        "cases)"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, max=MAX_SEED,
                                       help="the subset's and the bootstrap's seed (default 0)"),
    backbone: Optional[str] = MadeForBackboneOpt,
    quantization: Optional[str] = MadeForQuantOpt,
    as_json: bool = typer.Option(False, "--json", help="print the outcome as JSON: promoted, challenger (REF), the "
                                 "champion it was compared with or replaced, the gate's evidence"),
) -> None:
    """Make REF the adapter that serves its domain (the router's default); with --if-better only if it passes the
    gate. Every decision is recorded: `adaptrec registry history DOMAIN`."""
    gate_options = {"--data": data, "--margin": margin, "--limit": limit, "--seed": seed, "--backbone": backbone,
                    "--quantization": quantization}
    if if_better:
        if data is None:
            raise ConfigError("--if-better needs --data SPEC (the recent cases to compare on)")
        result = api.promote_if_better(ref, data=data, domain=domain, margin=margin, limit=limit, seed=seed or 0,
                                       backbone=backbone, quantization=quantization)
        echo_json(asdict(result)) if as_json else typer.echo(result.summary())
        raise typer.Exit(0 if result.promoted else 1)
    given = [option for option, value in gate_options.items() if value is not None]
    if given:  # without --if-better nothing reads them: REF would be promoted ungated
        raise ConfigError(f"{', '.join(given)}: only the gate reads {'these' if len(given) > 1 else 'this'}; add "
                          "--if-better, or drop them to promote unconditionally")
    reg = api.registry()
    record = reg.resolve(ref)
    target = record.domain if domain is None else domain
    before = reg.promoted(target)
    promoted = reg.promote(record.ref, target).ref
    if as_json:
        return echo_json({"promoted": True, "challenger": promoted, "champion": before and before.ref,
                          "evidence": None})
    typer.echo(f"promoted {promoted} for domain {target}")


@registry_app.command("history")
def registry_history(domain: str = typer.Argument(..., help="the domain whose champion decisions to list"),
                     as_json: bool = typer.Option(False, "--json", help="print the decisions as JSON")) -> None:
    """Every champion decision of DOMAIN, oldest first: promotions, refused challengers, rollbacks, forced removals."""
    decisions = api.registry().history(domain)
    if as_json:
        echo_json([d.to_dict() for d in decisions])
        return
    if not decisions:
        typer.echo(f"no decisions recorded for domain {domain!r}")
    for d in decisions:
        e = d.evidence
        gated = all(isinstance(e.get(k), (int, float)) for k in ("diff", "ci_low", "ci_high"))  # the gate's test
        test = f"  diff {e['diff']:+.4f} [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]" if gated else ""
        test += f" on {e['cases']} cases" if gated and "cases" in e else ""
        test += f", {e['test']}" if gated and "test" in e else ""
        typer.echo(f"{d.seq:4} {d.at}  {d.action:8} {d.ref:24} (was {d.previous or '-'}) by {d.by}{test}")


@registry_app.command("encoders")
def registry_encoders(name: Optional[str] = typer.Option(None, "--name", help="only versions of this encoder name"),
                      as_json: bool = typer.Option(False, "--json", help="print the records as JSON")) -> None:
    """Registered collaborative encoders (`adaptrec train-cf`), newest version first."""
    records = api.registry().encoders(name)
    if as_json:
        echo_json([r.to_dict() for r in records])
        return
    if not records:
        typer.echo("no encoders registered" + (f" named {name!r}" if name is not None else ""))
    for r in records:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in r.metrics.items() if isinstance(v, float))
        typer.echo(f"{r.ref:28} {r.kind:9} {r.data:20} {r.created_at}  {shown}")


@registry_app.command("rollback")
def registry_rollback(domain: str = typer.Argument(..., help="the domain whose champion to roll back")) -> None:
    """Restore DOMAIN's previous champion (repeat to go further back)."""
    typer.echo(f"rolled back {domain}: {api.registry().rollback(domain).ref} serves it again")


ForceOpt = typer.Option(False, "--force", help="also remove a promoted adapter, a mix's source, or a version "
                        "others came from")


@registry_app.command("remove")
def registry_remove(ref: str = typer.Argument(..., metavar="REF", help="the version to remove: NAME:VERSION or "
                                              "NAME:latest"),
                    force: bool = ForceOpt) -> None:
    """Remove one adapter version (refused for a promoted one, a source of a score-level mix, or one other versions
    were updated, exported, composed or distilled from, unless --force)."""
    typer.echo(f"removed {api.registry().remove(ref, force=force)}")


@registry_app.command("verify")
def registry_verify() -> None:
    """Re-hash every registered adapter and encoder version, name mixes whose sources are gone, and report orphan or
    unfinished folders (writes nothing; waits for a registration in flight; exit 1 on a problem)."""
    reg = api.registry()
    problems = reg.verify()
    for line in problems:
        typer.echo(f"problem: {line}", err=True)
    versions, encoders = reg.counts()
    typer.echo(f"checked {versions} version(s) and {encoders} encoder(s): "
               + (f"{len(problems)} problem(s)" if problems else "all intact"))
    if problems:
        raise typer.Exit(1)


@registry_app.command("gc")
def registry_gc() -> None:
    """Delete adapter and encoder folders no registry row points to, unfinished `.tmp` folders, and the work folders
    under $ADAPTREC_HOME/tmp (pulls', registrations') whose process is gone (one without a lock: once a day old)."""
    typer.echo(f"removed {len(api.registry().gc())} unreferenced folder(s)")


def export(
    adapter: str = typer.Argument(..., help="a registered adapter: AdaLoRA (--to-lora), LoRA or AdaLoRA (--to vllm)"),
    to_lora: bool = typer.Option(False, "--to-lora", help="register the exact plain-LoRA form of an AdaLoRA adapter"),
    to: Optional[str] = typer.Option(None, "--to", help="write a folder for a serving engine: vllm"),
    out: Optional[Path] = path_option(None, "--out", help="the folder --to writes (must not exist)"),
    name: Optional[str] = typer.Option(None, "--name", help="registry name of the --to-lora result (NAME-lora)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON: the registered ref and its "
                                 "source (--to-lora), or the folder, rank and vLLM's --max-lora-rank (--to vllm)"),
) -> None:
    """Convert a registered adapter: AdaLoRA to an exact plain LoRA in the registry (--to-lora), or a LoRA folder
    that vLLM loads (--to vllm --out DIR; see docs/serving.md)."""
    if to is None:
        if not to_lora:
            raise AdaptrecError("export: nothing to do; pass --to-lora, or --to vllm --out DIR")
        if out is not None:
            raise AdaptrecError(f"export --to-lora --out {out}: --to-lora registers its result; --out goes with --to")
        record = api.export_lora(adapter, name)
        source = record.lineage["parents"][0]
        if as_json:
            return echo_json({"ref": record.ref, "exported_from": source})
        typer.echo(f"registered {record.ref} (plain LoRA, exact export of {source})")
        return
    if to != "vllm":
        raise AdaptrecError(f"export --to {to}: the one target is vllm")
    if to_lora or out is None or name is not None:
        raise AdaptrecError("export: --to takes vllm, needs --out DIR, and goes without --to-lora and --name")
    result = api.export_vllm(adapter, out)
    if as_json:
        return echo_json({"path": str(result.path), "rank": result.rank, "max_lora_rank": result.max_lora_rank,
                          "prompt": result.prompt})
    prompt = result.prompt
    length = (f"cut to {prompt['max_prompt_tokens']} tokens" if "max_prompt_tokens" in prompt
              else "its trained length unknown")
    rendered = (f"render its requests' prompts with template {prompt['template']!r}, {length}" if "template" in prompt
                else "the prompt it trained with is unknown: render the one its publisher names")
    typer.echo(f"wrote {result.path} (LoRA rank {result.rank}); serve it with vllm serve BASE --enable-lora "
               f"--max-lora-rank {result.max_lora_rank} --lora-modules {adapter.split(':')[0]}={result.path}; "
               f"{rendered} (docs/serving.md)")
