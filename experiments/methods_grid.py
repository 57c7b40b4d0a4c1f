"""The training-methods comparison behind docs/methods.md: each method recipe against plain LoRA at equal
data, steps and test subset (the method recipes copy `data`, `training` and `evaluation` from the plain one).

Each recipe runs through `run_recipe` (train -> evaluate -> register) unless its run folder already holds
a report; results go to experiments/results/methods.json and the "Results" section of docs/methods.md
is re-rendered from it. A method evaluated on another test SPEC than plain LoRA (distillation on the
cold-start slice) gets plain LoRA's adapter evaluated on that SPEC too, on the same seeded subset.

    python experiments/methods_grid.py [--groups movie,office] [--render-only]

Runs in $ADAPTREC_HOME (default experiments/home).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from pathlib import Path

from report import STARTED, banner, cell, machine, read_json, scored_before, table, write_regions, write_results

from adaptrec import scripts
from adaptrec.errors import AdaptrecError

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "methods.json"
DOC = HERE.parent / "docs" / "methods.md"
REGION = "methods-grid"  # the region of DOC between its `<!-- methods-grid:start/end -->` markers
# group -> (plain recipe, method recipes, --set overrides shared by all of them)
GROUPS = {
    "movie": ("movie-lora", ["movie-joint", "movie-blend", "movie-stats", "movie-book-multitask"], []),
    # the cross-domain experiment's settings, so the office-lora it registers is the plain row
    "office": ("office-lora", ["office-joint", "office-blend", "arts-office-multitask", "office-distill"],
               ["data.max_prompt_tokens=320", "evaluation.limit=100"]),
}


def recipe_report(name: str, sets: list[str]) -> dict:
    """The run's report.json (train summary + evaluation), running the recipe first if it has none.

    A report made under another backend, dtype, device or package version than this run would use is not
    reused: its scores are not comparable with the rest of the table (`check_environment`)."""
    from adaptrec.config import load_recipe
    from adaptrec.train.recipe import run_dir_for, run_recipe

    recipe, text = load_recipe(name, sets)
    path = run_dir_for(recipe) / "report.json"
    if path.is_file():
        check_environment(path, json.loads(path.read_text())["eval"], current_environment(recipe))
    else:
        run_recipe(recipe, text, resume=True)
    return {"recipe": name, "sets": sets, "method": recipe.method.type, "template": recipe.data.template,
            "test": recipe.data.test,
            **json.loads(path.read_text())}


@functools.cache
def _environment(name: str, quantization: str) -> dict:
    from adaptrec.backbone import load_backbone

    return load_backbone(name, quantization).environment()


def current_environment(recipe) -> dict:
    """What a report made now by `recipe` would record (`Backbone.environment`)."""
    return _environment(recipe.backbone.name, recipe.backbone.quantization)


def check_environment(path: Path, report: dict, current: dict) -> None:
    """Refuse (one line, exit 2) a stored report whose recorded environment differs from `current`."""
    recorded = report.get("environment") or {}
    diff = {k: (recorded.get(k), v) for k, v in current.items() if recorded.get(k) != v}
    if diff:
        what = ", ".join(f"{k} {old!r} here {new!r}" for k, (old, new) in sorted(diff.items()))
        raise AdaptrecError(f"{path} was made with {what}; delete its run folder to re-run it here")


def plain_on(spec: str, plain: dict) -> dict:
    """Plain LoRA's registered adapter evaluated on another test SPEC (same limit and seed as its own report)."""
    from adaptrec.backbone import load_backbone
    from adaptrec.data.spec import load_spec
    from adaptrec.evaluation import run_eval
    from adaptrec.registry import Registry
    from adaptrec.score_cache import ScoreCache

    ev = plain["eval"]
    max_tokens = next((int(s.split("=")[1]) for s in plain["sets"] if s.startswith("data.max_prompt_tokens=")), 512)
    report = run_eval(load_backbone(), load_spec(spec, seed=ev["seed"]), registry=Registry(), adapters=[plain["record"]],
                      limit=ev["limit"], seed=ev["seed"], mode=ev["score_mode"], max_prompt_tokens=max_tokens,
                      cache=ScoreCache.default())
    return {"recipe": plain["recipe"], "record": plain["record"], "test": spec, "eval": report.to_dict()}


def _shared_cell(row: dict) -> str:
    """A baseline's or the untuned row's AUC; n/a where it has none, or where every bootstrap resample read exactly
    0.5 (a baseline that scores every case alike: reports from before such rows were shown as not applicable)."""
    auc = row["metrics"].get("auc")
    if auc is None or (row["kind"] == "baseline" and auc["value"] == auc["ci_low"] == auc["ci_high"] == 0.5):
        return "n/a (it scores every case alike)" if auc is not None else "n/a"
    return cell(auc)


def _table(reports: list[dict]) -> list[str]:
    """Rows of every report on one test SPEC: baselines and untuned once, then each adapter (and blend) row."""
    first = reports[0]["eval"]
    lines = [f"`{first['spec']}`, seeded label-stratified subset of {first['n']} (seed {first['seed']}), score "
             f"{first['score_mode']}, AUC with 95% bootstrap CIs:", ""]
    shared = [r for r in first["rows"] if r["kind"] == "baseline" or r["name"] == "backbone (untuned)"]
    rows = [[r["name"], "–", _shared_cell(r), "–", "–"] for r in shared]
    templates = {reports[0].get("template", "tallrec")}
    for rep in reports:  # the untuned backbone reads each template's own prompts: a row per template
        template = rep.get("template", "tallrec")
        untuned = [r for r in rep["eval"]["rows"] if r["name"] == "backbone (untuned)"]
        if template not in templates and untuned:
            templates.add(template)
            rows.append([f"backbone (untuned), `{template}` prompt", "–", _shared_cell(untuned[0]), "–", "–"])
    plain_auc = None
    for rep in reports:
        for r in rep["eval"]["rows"]:
            if r in shared or r["kind"] == "baseline" or r["name"] == "backbone (untuned)":
                continue
            auc = r["metrics"]["auc"]
            method = rep.get("method", "plain")
            template = rep.get("template", "tallrec")
            label = method if template == "tallrec" else f"{method}, `{template}` prompt"
            if plain_auc is None and method == "plain":
                plain_auc = auc
                verdict = "–"
            elif plain_auc is None:
                verdict = "?"
            else:
                gap = auc["value"] - plain_auc["value"]
                apart = auc["ci_low"] > plain_auc["ci_high"] or auc["ci_high"] < plain_auc["ci_low"]
                side = "same" if abs(gap) < 5e-4 else "above" if gap > 0 else "below"
                verdict = side + (", CIs apart" if apart else ", CIs overlap" if side != "same" else "")
            rows.append([r["name"], label, cell(auc), rep.get("train", {}).get("steps", "–"), verdict])
    return lines + table(["model", "method", "AUC", "steps", "vs plain LoRA"], "llrrc", rows)


def _run_on(results: dict, group: str) -> dict:
    """The backend and machine a group's reports ran on: its own record, else the file's (stamped by the last run,
    which also recorded each report's environment), for a group whose reports all record theirs; {} for reports
    from before either was recorded."""
    own = results.get("run_on", {}).get(group)
    if own:
        return own
    if all("environment" in rep["eval"] for rep in results["groups"][group]):
        return {"backend": results["backend"], "machine": results["machine"]}
    return {}


def _backbone_line(run_on: dict) -> str:
    if not run_on:
        return ("Backbone: embedded SmolLM2-135M-Instruct, 8-bit; these reports predate recording their backend, "
                "machine and package versions.")
    return f"Backbone: embedded SmolLM2-135M-Instruct, 8-bit ({run_on['backend']}), {run_on['machine']}."


def render(results: dict) -> str:
    """The methods-grid region of DOC: the banner, the backbone, then each group's tables per test SPEC."""
    runs = {group: _run_on(results, group) for group in results["groups"]}
    shared = len({(r.get("backend"), r.get("machine")) for r in runs.values()}) == 1
    lines = [banner("python experiments/methods_grid.py --render-only", [RESULTS]), "",
             *scored_before(results, RESULTS, [results.get("run_on", {}).get(g, {}).get("git_commit")
                                               for g in results["groups"]])]
    if shared:
        lines += [_backbone_line(next(iter(runs.values()))), ""]
    for group, reports in results["groups"].items():
        lines += [f"### {group}", ""] + ([] if shared else [_backbone_line(runs[group]), ""])
        by_spec: dict[str, list[dict]] = {}
        for rep in reports:
            by_spec.setdefault(rep["test"], []).append(rep)
        for spec_reports in by_spec.values():
            lines += _table(spec_reports) + [""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=scripts.names_from(GROUPS), default=list(GROUPS))
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("ADAPTREC_HOME", str(HERE / "home"))
    if not args.render_only:
        from adaptrec.backbone import default_device, resolve_backend

        results = {"groups": {}, "run_on": {}, **read_json(RESULTS)}
        run_on = {"backend": resolve_backend("8bit", default_device()),
                  "machine": machine(), "git_commit": STARTED["git_commit"]}
        for group in args.groups:
            results.setdefault("run_on", {})[group] = run_on  # this run's groups only: the others keep theirs
            plain_name, methods, sets = GROUPS[group]
            plain = recipe_report(plain_name, sets)
            reports = [plain]
            for name in methods:
                rep = recipe_report(name, sets)
                if rep["test"] != plain["test"]:
                    reports.append(plain_on(rep["test"], plain))
                reports.append(rep)
                results["groups"][group] = reports
                write_results(RESULTS, results)
    results = read_json(RESULTS)
    if not results:
        raise AdaptrecError(f"{RESULTS}: no results yet; run without --render-only first")
    write_regions(DOC, {REGION: render(results)})
    print(DOC.read_text())


if __name__ == "__main__":
    scripts.run(main)
