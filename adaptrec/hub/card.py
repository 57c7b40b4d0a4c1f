"""The model card (`README.md`) of a pushed adapter: Hub YAML metadata, then what it is for and how to use it.

Metadata: `base_model` (the backbone's Hub id, when it has one), `library_name: peft`, `pipeline_tag`,
`tags` and `model-index` with every registry metric, grouped by the data SPEC it was measured on, its protocol
(limit, seed, ...) in `args`, under the same task type as `pipeline_tag`. There is no `datasets` key: the Hub
reads it as Hub dataset ids, and adaptrec's SPECs (`tallrec:movie`, ...) are not; no Hub dataset is known to hold
these splits as adaptrec reads them. The body's Data section says what each source is.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Sequence

import yaml

from ..backbone import EMBEDDED, EMBEDDED_MODELS
from ..data.prompts import TEMPLATES
from ..registry.records import EXPORT_METHODS
from .common import is_repo_id

_SLICE_RE = re.compile(r"\[[^\]]*\]$")
PIPELINE_TAG = "text-generation"  # a causal LM answering "Yes."/"No."; the model-index task type says the same
# What each data source of a SPEC is (docs/data.md), for the card's Data section
_AMAZON = "Amazon Arts <-> Office, URLLM's cross-domain split: implicit feedback with sampled negatives"
_SOURCES = {
    "tallrec:movie": "TALLRec's movie files: MovieLens-100K ratings as Yes/No prompts (github.com/SAI990323/TALLRec)",
    "tallrec:book": "TALLRec's book files: Book-Crossing ratings as Yes/No prompts (github.com/SAI990323/TALLRec)",
    "movielens:100k": "TALLRec's movie prompts rebuilt from MovieLens-100K (GroupLens), with real user and item ids",
    "amazon:arts": _AMAZON,
    "amazon:office": _AMAZON,
}


def _spec_public(spec: str) -> str:
    """A SPEC as it may appear in public: a local file path is reduced to its file name."""
    base = _SLICE_RE.sub("", spec)
    if base.endswith((".json", ".jsonl")):
        return PurePosixPath(base.replace("\\", "/")).name + spec[len(base):]
    return spec


def _spec_source(spec: str) -> str:
    """The data set a SPEC draws from: 'tallrec:movie:test[0:50]' -> 'tallrec:movie'."""
    public = _SLICE_RE.sub("", _spec_public(spec))
    if public.endswith((".json", ".jsonl")):
        return public
    return ":".join(public.split(":")[:2])


def _spec_split(spec: str) -> str | None:
    parts = _SLICE_RE.sub("", spec).split(":")
    return parts[2] if len(parts) >= 3 and parts[2] in ("train", "valid", "test") else None


def _scalar(v) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


def _template(meta: dict) -> str:
    """The prompt template the adapter's recipe names (`data.template`), else the one a composition's lineage records
    of its sources (`prompt`), else `tallrec`; any recipe text (a pulled one is the publisher's) reads as one."""
    if meta.get("recipe"):
        try:
            parsed = yaml.safe_load(meta["recipe"])
        except (yaml.YAMLError, RecursionError):  # a pulled text nested past the parser's depth too
            parsed = None
        data = parsed.get("data") if isinstance(parsed, dict) else None
    else:
        lineage = meta.get("lineage")
        data = lineage.get("prompt") if isinstance(lineage, dict) else None
    template = data.get("template") if isinstance(data, dict) else None
    return template if template in TEMPLATES else "tallrec"  # a publisher's text goes into no card unchecked


def _identity(meta: dict) -> tuple[str, str, str]:
    """The adapter's name, domain and adapter type, with the card's placeholders for missing ones."""
    return meta.get("name", "adapter"), meta.get("domain", "?"), meta.get("adapter_type", "?")


def card_metadata(meta: dict) -> dict:
    """The YAML front matter of the card, as a dict."""
    name, domain, adapter_type = _identity(meta)
    base_model = (meta.get("base") or {}).get("base_model") or ""
    metrics: dict = meta.get("metrics") or {}
    data: dict = {}
    if is_repo_id(base_model):
        data["base_model"] = base_model
    derived = meta.get("derived_from") if isinstance(meta.get("derived_from"), list) else [base_model]
    if licenses := sorted({m.hub_license for m in EMBEDDED_MODELS.values() if m.hub_license and m.hub_id in derived}):
        data["license"] = licenses[0] if len(licenses) == 1 else "other"
    data["library_name"] = "peft"
    data["pipeline_tag"] = PIPELINE_TAG
    domain_tag = re.sub(r"[^a-z0-9-]+", "-", domain.lower()).strip("-")  # empty for a domain of other scripts
    tags = ["adaptrec", "peft", adapter_type, "recommendation", "tallrec", f"domain-{domain_tag}" if domain_tag else ""]
    data["tags"] = list(dict.fromkeys(t for t in tags if t))
    by_spec: dict[str, list[tuple[str, dict]]] = {}
    for key, m in sorted(metrics.items()):
        by_spec.setdefault(_spec_public(str(m.get("data", "?"))), []).append((key, m))
    if by_spec:
        results = []
        for spec, items in by_spec.items():
            dataset = {"type": _spec_source(spec), "name": spec}
            if _spec_split(spec):
                dataset["split"] = _spec_split(spec)
            rows = []
            for key, m in items:
                row = {"type": key, "value": m["value"], "name": key, "verified": False}
                args = {k: v for k, v in m.items() if k not in ("value", "data") and _scalar(v)}
                args.update(_ci(m))
                if args:
                    row["args"] = args
                rows.append(row)
            task = f"Recommendation ({domain}): will the user like the item? (P(Yes))"
            results.append({
                "task": {"type": PIPELINE_TAG, "name": task},
                "dataset": dataset,
                "metrics": rows,
            })
        data["model-index"] = [{"name": name, "results": results}]
    return data


def _ci(metric: dict) -> dict:
    """`{"ci_low", "ci_high"}` of a registry metric's 95% CI (`"ci": [low, high]`); empty when it has none."""
    ci = metric.get("ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return {"ci_low": ci[0], "ci_high": ci[1]}
    return {}


def _data(metrics: dict) -> list[str]:
    """What each data source of the metrics is (local files by name only)."""
    sources = sorted({_spec_source(str(m.get("data", "?"))) for m in metrics.values()})
    if not sources:
        return []
    lines = ["## Data", ""]
    for source in sources:
        if source.endswith((".json", ".jsonl")):
            what = f"the publisher's own {'interaction log' if source.endswith('.jsonl') else 'TALLRec-style file'}"
        else:
            what = _SOURCES.get(source, "an adaptrec data source")
        lines.append(f"- `{source}`: {what}")
    return [*lines, "", "The data SPECs are adaptrec's names (docs/data.md), not Hub dataset ids.", ""]


def _example_prompt(domain: str) -> str:
    from ..data.prompts import render_prompt
    from ..data.records import Case, HistoryItem

    hist = (HistoryItem('"Liked item A"', True), HistoryItem('"Disliked item B"', False), HistoryItem('"Liked item C"', True))
    return render_prompt(Case("u", domain, domain, hist, '"Target item"'), "tallrec")


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _base_model(meta: dict) -> str:
    """The base model the card names: its Hub id or folder, or a placeholder when none is recorded."""
    return (meta.get("base") or {}).get("base_model") or "<the base model's Hub id or folder>"


def _made(meta: dict) -> str:
    """How the adapter came to be, from its kind: trained, composed from its lineage's parents (or an exact export of
    one), or pulled and published again."""
    kind, lineage = meta.get("kind"), meta.get("lineage")
    lineage = lineage if isinstance(lineage, dict) else {}
    parents = lineage.get("parents")
    named = (", ".join(f"`{p}`" for p in parents) if isinstance(parents, list) and parents
             and all(isinstance(p, str) for p in parents) else "registered adapters")
    method = lineage.get("method")
    if kind == "composed" and method in EXPORT_METHODS:
        return f"the exact plain-LoRA form of {named} (`{method}`), exported by adaptrec"
    if kind == "composed":
        how = f" (method `{method}`)" if isinstance(method, str) and re.fullmatch(r"[\w.-]+", method) else ""
        return f"composed by adaptrec from {named}{how} on a frozen base model, without training of its own"
    if kind == "pulled":
        return "made by another publisher, pulled with adaptrec and published again unchanged"
    return "trained with adaptrec on a frozen base model"


def _about(meta: dict) -> list[str]:
    """Title, what the adapter does, and the base model it needs."""
    name, domain, adapter_type = _identity(meta)
    base = meta.get("base") or {}
    return [
        f"# {name}: a {adapter_type} adapter for {domain} recommendation",
        "",
        f"A `{adapter_type}` adapter (peft) for **{domain}** recommendation, {_made(meta)}. "
        "Given a user's liked and disliked items, the model answers whether the user will like a target item "
        "(\"Yes.\" or \"No.\"); the score is P(Yes) at the answer position (TALLRec's protocol).",
        "",
        "## Base model",
        "",
        f"- **`{_base_model(meta)}`**: the adapter only makes sense on top of this base model.",
        f"- family fingerprint `{base.get('family', '?')}` (architecture, parameter shapes, tokenizer): "
        "`adaptrec hub pull` refuses the adapter on a backbone of another family.",
        f"- exact fingerprint `{base.get('exact', '?')}` (the weights and quantization it was trained with): "
        "on another build of the same family it loads, and scores may shift slightly.",
        "",
    ]


def _evaluation(metrics: dict) -> list[str]:
    """A table of the registry's metrics, each with its data SPEC and protocol."""
    lines = ["## Evaluation", ""]
    if not metrics:
        return [*lines, "No metrics were recorded for this adapter.", ""]
    lines += ["| metric | value | data (SPEC) | limit | protocol |", "|---|---|---|---|---|"]
    for key, m in sorted(metrics.items()):
        extra = ", ".join(f"{k}={_fmt(v)}" for k, v in m.items() if k not in ("value", "data", "limit") and _scalar(v))
        ci = _ci(m)
        value = f"{_fmt(m['value'])} [{_fmt(ci['ci_low'])}, {_fmt(ci['ci_high'])}]" if ci else _fmt(m["value"])
        spec = _spec_public(str(m.get("data")))
        lines.append(f"| {key} | {value} | `{spec}` | {m.get('limit') or 'all'} | {extra or '-'} |")
    note = "`limit`: a seeded, label-stratified subset of that many cases (see adaptrec's docs/data.md for SPECs)."
    return [*lines, "", note, ""]


def _peft_usage(meta: dict, src: str) -> list[str]:
    """A plain-peft snippet that prints P(yes) for an example prompt, then notes on the template and layout."""
    name, domain, adapter_type = _identity(meta)
    lines = [
        "## Use it with plain peft",
        "",
        "```python",
        "import torch",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'base_id = "{_base_model(meta)}"',
        "tokenizer = AutoTokenizer.from_pretrained(base_id)",
        "base = AutoModelForCausalLM.from_pretrained(base_id)",
        f"model = PeftModel.from_pretrained(base, {src}).eval()",
        "",
        f"prompt = {json.dumps(_example_prompt(domain))}",
        "n = len(tokenizer(prompt).input_ids)  # the answer's first token, as it follows the prompt:",
        "yes, no = (tokenizer(prompt + a).input_ids[n] for a in (\"Yes.\", \"No.\"))",
        "with torch.no_grad():",
        "    logits = model(**tokenizer(prompt, return_tensors=\"pt\")).logits[0, -1]",
        "print(\"P(yes) =\", torch.softmax(logits[[yes, no]], dim=0)[0].item())",
        "```",
        "",
    ]
    template = _template(meta)
    if template != "tallrec":
        lines += [f"This adapter was trained with the `{template}` prompt template: wrap the prompt text the same way.", ""]
    if adapter_type == "lora":
        lines += ["The folder is the standard peft LoRA layout (`adapter_config.json`, `adapter_model.safetensors`), "
                  "which peft loads as is. Multi-LoRA servers such as vLLM and LoRAX take one rank and one scaling per "
                  f"adapter: `adaptrec export {name} --to vllm --out DIR` writes a folder they load (per-module "
                  "ranks folded in), or names what they would refuse.", ""]
    if adapter_type == "collab":
        lines += ["**A collaborative adapter:** besides its LoRA weights it carries one soft token per item "
                  "(`collab.safetensors`: the collaborative encoder's item table, its rows continued by the items' "
                  "title embeddings when the recipe sets `adapter.content`, and the projector into the "
                  "token-embedding space; `collab.json`: the item ids and the encoder's record). Plain peft, vLLM "
                  "and LoRAX load the LoRA part only and score without the item tokens, which is not what was "
                  "measured: load it with adaptrec (below), which puts the tokens after each item that carries an id "
                  "(the `-items` templates).", ""]
    return lines


def _pull_backbone(meta: dict) -> str:
    """The `--backbone` a pull of the adapter needs: none for the embedded default, else its embedded alias, its Hub
    id, or a placeholder for a base loaded from a local folder."""
    base = (meta.get("base") or {}).get("base_model") or ""
    alias = next((a for a, m in EMBEDDED_MODELS.items() if m.hub_id == base), None)
    if alias is not None:
        return "" if alias == EMBEDDED else f" --backbone {alias}"
    return f" --backbone {base}" if is_repo_id(base) else " --backbone PATH_TO_THE_BASE_MODEL"


def _adaptrec_usage(name: str, pull: str, adapter_type: str | None = None) -> list[str]:
    """The `adaptrec hub pull` and `adaptrec predict` commands for the adapter (with item ids for a collab one)."""
    ids = adapter_type == "collab"
    return [
        "## Use it with adaptrec",
        "",
        "```bash",
        f"{pull}        # verifies hashes and the base fingerprint, then registers it",
        f'adaptrec predict {name} --history history.json --item "Target item"' + (" --item-id ITEM_ID" if ids else ""),
        "```",
        "",
        *(['Give each history item its catalogue id (`{"title": ..., "liked": true, "item_id": ...}`): an id the '
           "encoder does not know leaves the item to its title.", ""] if ids else []),
        "`adaptrec.json` holds the domain, both fingerprints, the training recipe, the metrics with their data SPECs, "
        "the lineage and the sha256 of every adapter file.",
        "",
    ]


def _provenance(meta: dict, licences: Sequence[str]) -> list[str]:
    """The licences that reach the adapter, its lineage and its training recipe, each when there is one."""
    lines: list[str] = []
    if licences:
        lines += ["## Licence", "", "This adapter derives from " + ", ".join(licences) + " (its base model, a distillation "
                  "teacher, or a parent's). Those terms apply to it: their text and `NOTICE` are published with it.", ""]
    lineage = meta.get("lineage")
    if lineage:  # the logged events it trained and validated on are in the metadata file; the card counts them
        counted = {k: len(lineage[k]) for k in ("events", "valid_events") if k in lineage}
        shown = {**lineage, **counted} if counted else lineage
        lines += ["## Lineage", "", f"`{json.dumps(shown, sort_keys=True)}`", ""]
    if meta.get("recipe"):
        lines += ["## Training recipe", "", "```yaml", meta["recipe"].rstrip("\n"), "```", ""]
    return lines


def model_card(meta: dict, repo_id: str, revision: str, *, mirror: bool = False, licences: Sequence[str] = ()) -> str:
    """The full README.md for a pushed adapter (`meta`: the pushed adaptrec.json; `licences`: base-model terms
    that reach it, whose texts and NOTICE are published beside it)."""
    front = yaml.safe_dump(card_metadata(meta), sort_keys=False, allow_unicode=True, width=1000)
    src = f'"{repo_id}", revision="{revision}"' if not mirror else f'"<mirror>/{repo_id}/{revision}"'
    pull = ("adaptrec hub pull " + (f"{repo_id}@{revision}" if not mirror else f"<mirror>/{repo_id}@{revision}")
            + _pull_backbone(meta))
    sections = [
        ["---", front.rstrip("\n"), "---", ""],
        _about(meta),
        _evaluation(meta.get("metrics") or {}),
        _data(meta.get("metrics") or {}),
        _peft_usage(meta, src),
        _adaptrec_usage(_identity(meta)[0], pull, meta.get("adapter_type")),
        _provenance(meta, licences),
    ]
    return "\n".join(line for section in sections for line in section)
