"""The online loop replayed on MovieLens-100K by time: does updating an adapter on new feedback beat a static one?

Four consecutive time windows (quarters of ML-100K's ~90K rated positions with 10 earlier ratings), each a seeded
draw of 300 cases plus 150 held-out gate cases, are logged as served requests with their ratings as feedback
(`$ADAPTREC_HOME/online.db`, feedback time = rating time). A fresh LoRA adapter (movie-lora's settings, 32 steps)
is trained on window 0 and starts as the champion of every row. At each later window every row's champion scores
the window before seeing it (the AUC per window), then each row updates on it with the same 32-step budget, the
gate compares challenger and champion on the window's gate cases (non-inferiority, margin 0.005) and promotes or
refuses, and every row's champion is scored on window 0's gate cases (forgetting). Rows:

* static: the window-0 adapter, never updated;
* update + replay: `adaptrec update CHAMPION --data WINDOW --replay 0.2 --steps 32`;
* update, no replay: the same with `--replay 0`;
* retrain on all so far: a fresh adapter on windows 0..t (the same recipe, 32 steps), validated on window t-1's
  gate cases (the gate refuses data a checkpoint was chosen on; the stored results validated on window t's own,
  which chose nothing: one validation, at the last step).

The like-ratio and popularity rows (popularity counted over the earlier windows) score each window beside them.

    python experiments/online_replay.py                  # run (resumes after an interruption), write docs/online.md
    python experiments/online_replay.py --render-only    # re-render the docs region and figure from the JSON

Runs in $ADAPTREC_HOME (default experiments/home; its adapters and log domains are named online-* and ml-sim-*).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import numpy as np
from report import (ROOT, STARTED, banner, cell, machine, read_json, scored_before, signed, table, write_regions,
                    write_results)

from adaptrec import scripts
from adaptrec.errors import AdaptrecError

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "online_replay.json"
DOC = ROOT / "docs" / "online.md"
FIGURE = ROOT / "docs" / "figures" / "online_replay.png"
COMMAND = "python experiments/online_replay.py"
WINDOWS, WINDOW, GATE, STEPS, REPLAY, SEED = 4, 300, 150, 32, 0.2, 0  # the gate's margin: its default (MARGIN)
LOG, GATE_LOG = "ml-sim", "ml-sim-gate"  # the log's domains: window cases, gate cases
ROWS = {"static": "ml-sim-static", "update + replay": "ml-sim-replay", "update, no replay": "ml-sim-noreplay",
        "retrain on all so far": "ml-sim-retrain"}  # row -> the registry domain whose champion it follows
BASE_SETS = [f"training.max_steps={STEPS}", f"training.eval_every={STEPS}", "training.patience=null",
             "training.val_limit=16", "training.checkpoint_every=8", "data.shots=null", "evaluation.limit=16"]


def draw_windows() -> list[dict]:
    """Each window: its time span and its seeded window and gate cases (disjoint, oldest first)."""
    from adaptrec.data.movielens import timed_cases

    timed = timed_cases()
    size = len(timed) // WINDOWS
    out = []
    for w in range(WINDOWS):
        chunk = timed[w * size:(w + 1) * size]
        picked = sorted(random.Random(SEED + w).sample(range(len(chunk)), WINDOW + GATE))
        gate = set(random.Random(SEED + 100 + w).sample(picked, GATE))
        out.append({"start": chunk[0][0], "end": chunk[-1][0],
                    "cases": [chunk[i] for i in picked if i not in gate],
                    "gate": [chunk[i] for i in picked if i in gate]})
    return out


def log_windows(windows: list[dict]) -> None:
    """Log every case as a served request with its rating as feedback at the rating's time (once)."""
    from adaptrec.data.online_log import LoggedItem, OnlineLog

    log = OnlineLog()
    expected = {LOG: (WINDOWS * WINDOW,) * 2, GATE_LOG: (WINDOWS * GATE,) * 2}
    have = {d: (len(log.requests(d)), len(log.cases(d))) for d in expected}  # requests, and their feedback
    if have == expected:
        return
    if any(any(n) for n in have.values()):
        raise AdaptrecError(f"{log.path} holds a partial log ({have}); remove it and run again")
    for w in windows:
        for domain, key in ((LOG, "cases"), (GATE_LOG, "gate")):
            for t, c in w[key]:
                rid = log.log_request(domain, c.user_id, c.noun, c.history, [LoggedItem(c.target, c.target_id)],
                                      ["replay-simulation"], "score", created=t)
                log.add_feedback(rid, c.target, label=c.label, created=t)


def window_spec(domain: str, w: dict, n: int) -> str:
    return f"feedback:{domain}:{w['start']}[0:{n}]"


def train_fresh(name: str, train_spec: str, valid_spec: str):
    """A fresh adapter with movie-lora's settings on `train_spec` (32 steps); its record and CPU/wall seconds."""
    from adaptrec.config import load_recipe
    from adaptrec.train.recipe import run_recipe

    sets = BASE_SETS + [f"name={name}", f"domain={ROWS['static']}", f"data.train={train_spec}",
                        f"data.valid={valid_spec}", f"data.test={valid_spec}"]
    recipe, text = load_recipe("movie-lora", sets)
    return timed(lambda: run_recipe(recipe, text, resume=True).record.ref)


def update(champion: str, spec: str, replay: float):
    from adaptrec import api

    return timed(lambda: api.update(champion, data=spec, replay=replay, steps=STEPS).record.ref)


def timed(train_one) -> tuple[str, float, float]:
    """The ref `train_one()` registers, with the CPU seconds (all threads) and wall seconds it took."""
    cpu, wall = time.process_time(), time.perf_counter()
    ref = train_one()
    return ref, time.process_time() - cpu, time.perf_counter() - wall


def auc_of(labels: np.ndarray, scores: np.ndarray, users: list[str]) -> dict:
    from adaptrec.metrics import compute_classification

    m = compute_classification(["auc"], labels, scores, clusters=users)["auc"]
    return {"value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high}


class Scoring:
    """Scores of registered adapters on cases through the one scoring path and the score cache."""

    def __init__(self):
        from adaptrec.backbone import load_backbone
        from adaptrec.registry import Registry
        from adaptrec.score_cache import ScoreCache

        self.backbone = load_backbone("embedded:smollm2", "8bit")
        self.registry, self.cache = Registry(), ScoreCache.default()

    def scores(self, refs: list[str], cases) -> dict[str, np.ndarray]:
        from adaptrec.scoring.variants import component_scores

        unique = list(dict.fromkeys(refs))
        rows = component_scores(self.backbone, self.registry, unique, cases, template="tallrec", max_prompt_tokens=512,
                                batch_size=8, cache=self.cache, progress=False)
        return dict(zip(unique, rows))

    def gate(self, challenger: str, domain: str, cases, spec: str) -> dict:
        from adaptrec.online.gate import MARGIN, gate

        result = gate(self.backbone, self.registry, challenger, domain, cases, spec, MARGIN, SEED, template="tallrec",
                      max_prompt_tokens=512, batch_size=8, cache=self.cache, progress=False)
        return {"promoted": result.promoted, **result.evidence}


def score_window(scoring: Scoring, champions: dict[str, str], cases, popularity) -> dict:
    """AUC (user-clustered CI) of each row's champion and of the non-LLM rows on `cases`; paired differences."""
    from adaptrec.baselines import like_ratio_scores, popularity_scores
    from adaptrec.metrics import paired_difference

    labels, users = np.array([c.label for c in cases]), [c.user_id for c in cases]
    by_ref = scoring.scores(list(champions.values()), cases)
    scores = {row: by_ref[ref] for row, ref in champions.items()}
    scores["like-ratio"] = like_ratio_scores(cases, popularity)
    scores["popularity"] = popularity_scores(cases, popularity)
    out = {row: auc_of(labels, s, users) for row, s in scores.items()}
    bar = max(("like-ratio", "popularity"), key=lambda r: out[r]["value"])
    for row in champions:
        d = paired_difference("auc", labels, scores[row], scores["static"], clusters=users)
        b = paired_difference("auc", labels, scores[row], scores[bar], clusters=users)
        out[row]["vs_static"] = {"value": d.value, "ci_low": d.ci_low, "ci_high": d.ci_high}
        out[row]["vs_bar"] = {"row": bar, "value": b.value, "ci_low": b.ci_low, "ci_high": b.ci_high}
    return {"cases": len(cases), "users": len(set(users)), "auc": out}


RESUMED_SETTINGS = ("windows", "steps", "replay", "margin", "seed", "recipe", "sets")


def check_resumable(done: dict, now: dict) -> None:
    """Refuse (one line, exit 2) unless a results file's finished windows ran with this run's settings: the later
    windows would be trained or gated otherwise, under the file's protocol."""
    changed = [k for k in RESUMED_SETTINGS if done.get(k) != now[k]]
    if changed:
        raise AdaptrecError(f"{RESULTS}: its finished windows ran with other {', '.join(changed)}; move the file away "
                            "to start over")


def check_same_scoring(done: dict, now: dict) -> None:
    """Refuse (one line, exit 2) unless a results file's finished windows were scored with this run's model, backend,
    dtype, device and library versions (`now`: `Backbone.environment()`); its cores and threads may differ."""
    if changed := sorted(k for k, v in now.items() if done.get(k) != v):
        raise AdaptrecError(f"{RESULTS}: its finished windows were scored with another {', '.join(changed)}; move the "
                            "file away to start over")


def run(resume_doc: dict | None) -> dict:
    from adaptrec.data.tallrec import item_popularity
    from adaptrec.online.gate import MARGIN

    windows = draw_windows()
    log_windows(windows)
    cases = [[c for _, c in w["cases"]] for w in windows]
    gates = [[c for _, c in w["gate"]] for w in windows]
    protocol = {"windows": [{"start": w["start"], "end": w["end"], "cases": WINDOW, "gate": GATE} for w in windows],
                "steps": STEPS, "replay": REPLAY, "margin": MARGIN, "seed": SEED, "recipe": "movie-lora",
                "sets": BASE_SETS, "machine": machine(), "command": COMMAND}
    if resume_doc is not None:
        check_resumable(resume_doc["protocol"], protocol)
    doc = resume_doc or {"protocol": protocol, "steps": []}
    scoring = Scoring()
    if resume_doc is not None:  # one model, backend and set of library versions for every window the page reports
        check_same_scoring(resume_doc["protocol"].get("environment", {}), scoring.backbone.environment())
    doc["protocol"]["environment"] = {**scripts.machine(), **scoring.backbone.environment()}
    if not doc["steps"]:
        static, cpu, wall = train_fresh("online-static", window_spec(LOG, windows[0], WINDOW),
                                        window_spec(GATE_LOG, windows[0], GATE))
        for domain in ROWS.values():
            scoring.registry.promote(static, domain, evidence={"reason": "initial champion: trained on window 0"})
        champions = dict.fromkeys(ROWS, static)
        forgetting = score_window(scoring, champions, gates[0], item_popularity(cases[0]))
        doc["steps"].append({"window": 0, "champions": champions, "forgetting": forgetting,
                             "updates": {"static": {"ref": static, "cpu_s": cpu, "wall_s": wall}},
                             "git_commit": STARTED["git_commit"]})  # a resumed run keeps each step's own
        write_results(RESULTS, doc)
    for t in range(len(doc["steps"]), WINDOWS):
        champions = dict(doc["steps"][-1]["champions"])
        for row, domain in ROWS.items():  # a run stopped mid-window may have promoted since the last write: undo it
            if scoring.registry.promoted(domain).ref != champions[row]:
                scoring.registry.promote(champions[row], domain, evidence={"reason": "resumed from the results file"})
        seen = [c for w in cases[:t] for c in w]
        step = {"window": t, "served_by": dict(champions),
                "scored": score_window(scoring, champions, cases[t], item_popularity(seen)), "updates": {}}
        spec, gate_spec = window_spec(LOG, windows[t], WINDOW), window_spec(GATE_LOG, windows[t], GATE)
        for row, replay in (("update + replay", REPLAY), ("update, no replay", 0.0)):
            ref, cpu, wall = update(champions[row], spec, replay)
            step["updates"][row] = {"ref": ref, "cpu_s": cpu, "wall_s": wall,
                                    "gate": scoring.gate(ref, ROWS[row], gates[t], gate_spec)}
        ref, cpu, wall = train_fresh("online-retrain", f"feedback:{LOG}[0:{WINDOW * (t + 1)}]",  # validated on the
                                     window_spec(GATE_LOG, windows[t - 1], GATE))  # last window's gate cases
        step["updates"]["retrain on all so far"] = {
            "ref": ref, "cpu_s": cpu, "wall_s": wall, "gate": scoring.gate(ref, ROWS["retrain on all so far"], gates[t],
                                                                          gate_spec)}
        step["champions"] = {row: scoring.registry.promoted(domain).ref for row, domain in ROWS.items()}
        step["forgetting"] = score_window(scoring, step["champions"], gates[0], item_popularity(cases[0]))
        doc["steps"].append({**step, "git_commit": STARTED["git_commit"]})
        write_results(RESULTS, doc)
    return doc


# ---------------------------------------------------------------- rendering


def _window_label(p: dict, t: int) -> str:
    from datetime import datetime, timezone

    w = p["windows"][t]
    day = lambda s: datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%d")  # noqa: E731
    return f"{t} ({day(w['start'])} – {day(w['end'])})"


MARKERS = {"like-ratio": "s", "popularity": "^"}  # the non-LLM rows: grey, dashed, their own markers


def figure(doc: dict, out: Path) -> None:
    from adaptrec.plots.style import COLORS, NEUTRAL, ci_yerr, legend_below, new_figure, save_png, styled

    @styled
    def draw() -> None:
        later = doc["steps"][1:]
        fig, axes = new_figure(
            3.4, 1, 2, title="Online updates on MovieLens-100K by time",
            subtitle=f"{doc['protocol']['windows'][0]['cases']} cases a window, each row's champion scores the window "
                     f"before training on it; {doc['protocol']['steps']} steps an update", caption="Bars: user-clustered 95% CIs. Left: AUC on each new window "
                     "(prequential). Right: AUC on window 0's held-out gate cases after each window's update "
                     "(forgetting); dotted: chance.")
        for ax, key, steps, xs in ((axes[0][0], "scored", later, [s["window"] for s in later]),
                                   (axes[0][1], "forgetting", doc["steps"], [s["window"] for s in doc["steps"]])):
            rows = list(ROWS) + (["like-ratio", "popularity"] if key == "scored" else [])
            for i, row in enumerate(rows):
                m = [s[key]["auc"][row] for s in steps]
                off = (i - len(rows) / 2) * 0.05
                color = COLORS[i] if row in ROWS else NEUTRAL
                ax.errorbar([x + off for x in xs], [v["value"] for v in m],
                            yerr=ci_yerr(*([v[k] for v in m] for k in ("value", "ci_low", "ci_high"))),
                            color=color, marker=MARKERS.get(row, "o"), ms=3.5, lw=1.2, capsize=2, label=row,
                            ls=MARKERS.get(row) and "--" or "-", alpha=0.9)
            ax.axhline(0.5, color=NEUTRAL, lw=0.8, ls=":")
            ax.set_xticks(xs)
            ax.set_xlabel("window")
        axes[0][0].set_ylabel("AUC on the new window")
        axes[0][1].set_ylabel("AUC on window 0 (held out)")
        legend_below(axes, ncols=6)
        save_png(fig, out)

    draw()


def _resolved(d: dict) -> str:
    return "above" if d["ci_low"] > 0 else "below" if d["ci_high"] < 0 else "not resolved"


def _against_static(step: dict, row: str) -> str:
    """How `row`'s champion compared with static's on a window: the paired CI's side of 0, or the same adapter."""
    if step["served_by"][row] == step["served_by"]["static"]:
        return "same"
    return _resolved(step["scored"]["auc"][row]["vs_static"])


def verdicts(steps: list[dict]) -> list[str]:
    """What the windows say, computed from the paired differences: against static, and against the better
    non-LLM row."""
    later = steps[1:]
    lines = []
    for row in list(ROWS)[1:]:
        calls = [_against_static(s, row) for s in later]
        mean = np.mean([s["scored"]["auc"][row]["vs_static"]["value"] for s in later])
        same = f"; static's own adapter served it in {calls.count('same')}" if "same" in calls else ""
        lines.append(f"* {row} vs static: mean difference {mean:+.3f} over {len(later)} windows; the paired CI is "
                     f"above 0 in {calls.count('above')}, below in {calls.count('below')}, spans 0 in "
                     f"{calls.count('not resolved')}{same}.")
    gates = [u["gate"] for s in later for u in s["updates"].values()]
    lines.append(f"* The gate's {later[0]['updates'][next(iter(later[0]['updates']))]['gate']['cases']}-case windows "
                 f"resolve about ±{np.mean([g['resolution'] for g in gates]):.3f} AUC (mean CI half-width); "
                 f"{sum(g['promoted'] for g in gates)} of {len(gates)} challengers were promoted.")
    for row in ROWS:
        bars = [s["scored"]["auc"][row]["vs_bar"] for s in later]
        calls = [_resolved(b) for b in bars]
        lines.append(f"* {row} vs the better non-LLM row of each window ({', '.join(b['row'] for b in bars)}): "
                     f"{', '.join(format(b['value'], '+.3f') for b in bars)}; above in {calls.count('above')}, below in "
                     f"{calls.count('below')}, not resolved in {calls.count('not resolved')}.")
    return lines


def render(doc: dict) -> str:
    p, steps = doc["protocol"], doc["steps"]
    head = ["window", *ROWS, "like-ratio", "popularity"]
    scored = [[_window_label(p, s["window"]), *(cell(s["scored"]["auc"][r]) for r in head[1:])] for s in steps[1:]]
    forget = [[_window_label(p, s["window"]), *(cell(s["forgetting"]["auc"][r]) for r in ROWS)] for s in steps]
    upd_head = ["after window", "row", "challenger", "CPU s", "wall s", "gate: diff [95% CI]", "decision"]
    upd = []
    for s in steps[1:]:
        for row, u in s["updates"].items():
            g = u["gate"]
            upd.append([s["window"], row, f"`{u['ref']}`", f"{u['cpu_s']:.0f}", f"{u['wall_s']:.0f}",
                        signed({**g, "value": g["diff"]}),
                        "promoted" if g["promoted"] else "refused"])
    taken = {row: sum(s["updates"][row]["gate"]["promoted"] for s in steps[1:]) for row in list(ROWS)[1:]}
    vs_static = {row: [s["scored"]["auc"][row]["vs_static"] for s in steps[1:]] for row in list(ROWS)[1:]}
    first = steps[0]["updates"]["static"]
    env = p["environment"]
    gate = p["windows"][0]["gate"]  # each window's held-out gate cases
    limit = next((x.split("=", 1)[1] for x in p["sets"] if x.startswith("evaluation.limit=")), "the recipe's")
    lines = [
        banner(f"{COMMAND} --render-only", [RESULTS]) if RESULTS.is_relative_to(ROOT) else f"(smoke: {RESULTS})",
        "", *scored_before(doc, RESULTS, [s.get("git_commit") for s in steps]),
        f"Machine: {p['machine']}, adaptrec {env['adaptrec']}, torch {env['torch']}, {env['threads']} threads, device {env['device']}, "
        f"`{env['base_model']}` {env['quantization']} ({env['backend']}, {env['dtype']}), "
        f"transformers {env['transformers']}, peft {env['peft']}. "
        f"The window-0 adapter took {first['cpu_s']:.0f} CPU s ({first['wall_s']:.0f} s wall) with its {limit}-case "
        "evaluation.", "",
        "**AUC on each new window, scored by the row's champion before it trains on it** (user-clustered 95% CI):", "",
        *table(head, "l" + "r" * (len(head) - 1), scored), "",
        f"**Forgetting: AUC on window 0's {gate} held-out gate cases**, by the champion after each window:", "",
        *table(["after window", *ROWS], "l" + "r" * len(ROWS), forget), "",
        f"**Updates and gate decisions** (gate: challenger − champion AUC on the window's {gate} gate cases, "
        f"non-inferiority with margin {p['margin']}):", "",
        *table(upd_head, "llllrrl", upd), "",
        "Promotions taken: " + ", ".join(f"{row} {n} of {len(steps) - 1}" for row, n in taken.items()) + ".", "",
        "Each row against static on the same window (paired, user-clustered): " + "; ".join(
            f"{row}: " + ", ".join(signed(d) for d in ds)
            for row, ds in vs_static.items()) + ".", "",
        *verdicts(steps), "",
        "![AUC per window and on window 0](figures/online_replay.png)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-only", action="store_true", help="re-render docs/online.md from the JSON")
    parser.add_argument("--smoke", type=Path, metavar="DIR", help="a minutes-long run of the whole path (12-case "
                        "windows, 1 step) with its results, figure, page and $ADAPTREC_HOME in DIR, not in "
                        "docs/ or experiments/home")
    args = parser.parse_args()
    if args.smoke:
        global WINDOW, GATE, STEPS, RESULTS, DOC, FIGURE, BASE_SETS
        WINDOW, GATE, STEPS = 12, 12, 1
        from adaptrec.config import step_budget

        BASE_SETS = [*step_budget(STEPS), *(s.replace("=32", "=1").replace("=8", "=1") for s in BASE_SETS[1:])]
        RESULTS, DOC, FIGURE = args.smoke / "online_replay.json", args.smoke / "online.md", args.smoke / "online.png"
        os.environ["ADAPTREC_HOME"] = str(args.smoke / "home")  # its log and adapters too (was: experiments/home)
        DOC.write_text("<!-- online-replay:start -->\n<!-- online-replay:end -->\n")
    if not args.render_only:
        os.environ.setdefault("ADAPTREC_HOME", str(HERE / "home"))
        previous = read_json(RESULTS) if RESULTS.is_file() else None
        doc = run(previous if previous and len(previous.get("steps", ())) < WINDOWS else None)
    else:
        doc = read_json(RESULTS)
        if not doc:
            raise AdaptrecError(f"no results at {RESULTS}: run without --render-only first")
    figure(doc, FIGURE)
    write_regions(DOC, {"online-replay": render(doc)})
    print(render(doc))


if __name__ == "__main__":
    scripts.run(main)
