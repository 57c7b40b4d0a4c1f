"""The collaborative-signal goals on one table: in each arena, the best non-LLM row against the collaborative
adapter, paired on the same users (CIs resample users). Read from the results of `ml100k_loo.py`,
`amazon_collab.py` and `collab_movie.py`; rendered into docs/results.md by `tallrec_grid.py --render-only`, its
figure by `report.py figures`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from report import ROOT, read_json, run_commit, side_of_zero, signed

RESULTS = ROOT / "experiments" / "results"
SECOND_BACKBONE = "Gemma-3-270M"  # TALLRec movie's rows on it are named "<it>: <row>" (collab_movie.py)
ON_GEMMA = f"{SECOND_BACKBONE}: "
SOURCES = (RESULTS / "ml100k_loo.json", RESULTS / "amazon_collab.json", RESULTS / "collab_movie.json")
ADAPTER = "collab adapter"  # the prefix of the Amazon adapter rows' names
FIGURE = "figures/collab_goals.png"  # under docs/
CONTENT = "minilm titles"  # the Amazon content row (titles alone, through MiniLM): a non-LLM row


def stack_row(encoder: str, name: str) -> str:
    """The name of the row stacking `encoder`'s score with row `name`'s (fit on validation)."""
    return f"{encoder} + {name}, stacked on validation"


def content_rows(encoder: str) -> tuple[str, str]:
    """The Amazon non-LLM rows besides popularity and the encoder: the content row, and it stacked with the
    encoder."""
    return CONTENT, stack_row(encoder, CONTENT)


class Arena(NamedTuple):
    cells: tuple[str, ...]  # the goals table's row
    vs_best: dict  # the adapter against the bar, paired
    name: str  # short, for the figure
    stacked: dict | None  # the adapter's score stacked with its encoder (TALLRec movie: the bar's features) against
    # that row alone, paired; None where not measured
    vs_encoder: dict | None = None  # the adapter against its own encoder, paired; None where not measured


def _variant(name: str) -> str:
    """"collab adapter (match token) re-ranks ..." -> "match token"."""
    return name.partition(f"{ADAPTER} (")[2].partition(")")[0]


def _reranker_rows(rows: list[dict]) -> list[dict]:
    """The MovieLens-100K re-ranker rows (not stacked) on the users every variant scored (not the final ones)."""
    return [r for r in rows if r["kind"] == "llm" and "stacked" not in r["name"] and not r.get("final")]


def picked_reranker(rows: list[dict]) -> dict:
    """The MovieLens-100K re-ranker row (`_reranker_rows`) with the best validation AUC among the variants validated
    on random negatives (hard ones validate on harder pairs, whose AUC does not compare)."""
    return max((r for r in _reranker_rows(rows) if r["negatives"].startswith("random")),
               key=lambda r: r["best_val_auc"] or -1.0)  # None: never validated


def _rerankers(doc: dict) -> tuple[dict, list[dict]]:
    """The MovieLens-100K re-ranker rows on the users every variant scored: the picked one, and the others."""
    picked = picked_reranker(doc["rows"])
    return picked, [r for r in _reranker_rows(doc["rows"]) if r is not picked]


def _ml100k_picked(doc: dict) -> tuple[dict, dict, bool]:
    """The picked variant's re-ranker and stacked rows: on every test user when the results have that (True), else
    on the users every variant scored (False)."""
    variant = _variant(picked_reranker(doc["rows"])["name"])
    final = any(r.get("final") for r in doc["rows"])
    adapter, stacked = (next(r for r in doc["rows"] if r["kind"] == "llm" and bool(r.get("final")) == final
                             and _variant(r["name"]) == variant and ("stacked" in r["name"]) == s)
                        for s in (False, True))
    return adapter, stacked, final


def _ml100k(doc: dict) -> list[Arena]:
    p = doc["protocol"]
    adapter, stacked, _ = _ml100k_picked(doc)
    variant = _variant(adapter["name"])
    best = adapter["best_on_same_users"]["value"]
    cells = (f"MovieLens-100K leave-one-out, {adapter['users']} test users, 1 + {p['negatives']} sampled",
             f"{p['best']} {best:.3f}",
             f"{adapter['metrics']['sampled_ndcg@10']['value']:.3f} ({variant})",
             f"{signed(adapter['vs_best'])} ({side_of_zero(adapter['vs_best'])})",
             f"the same row ({p['best']} is its encoder); stacked with it: {signed(stacked['vs_best'])}",
             "docs/leave_one_out.md")
    return [Arena(cells, adapter["vs_best"], "MovieLens-100K", stacked["vs_best"], adapter["vs_best"])]


def picked(doc: dict, domain: str) -> str:
    """The row name of `domain`'s Amazon adapter variant with the best validation AUC (picked before any test)."""
    names = [k.removeprefix(f"{domain}, ") for k in doc["adapters"] if k.startswith(f"{domain}, ")]
    return max(names, key=lambda n: doc["adapters"][f"{domain}, {n}"]["best_val_auc"] or -1.0)  # None: never validated


def _sampled(doc: dict) -> list[dict]:
    """The Amazon blocks where every variant re-ranked the same seeded users (not the picked one's every-user
    blocks)."""
    return [b for b in doc["blocks"] if not b.get("final")]


def _arena_blocks(doc: dict) -> list[dict]:
    """Per Amazon direction and view, the block with the most users: every test user's where there is one."""
    most = {}
    for block in doc["blocks"]:
        key = (block["domain"], block["view"])
        if key not in most or block["users"] >= most[key]["users"]:  # a tie: the later, every-user block
            most[key] = block
    return list(most.values())


def _amazon(doc: dict) -> list[Arena]:
    arenas = []
    encoder = doc["protocol"]["encoder"]
    for block in _arena_blocks(doc):
        rows = {r["name"]: r for r in block["rows"]}
        name = picked(doc, block["domain"])
        adapter = rows[name]
        against = {"popularity": adapter["vs_popularity"], encoder: adapter["vs_encoder"],
                   **adapter.get("vs_non_llm", {})}  # every non-LLM row of the block: the adapter against it
        best = max(against, key=lambda n: rows[n]["ndcg@10"]["value"])
        vs_best = against[best]
        view = "cold (other-domain history only)" if block["view"] == "other" else "warm"
        cells = (f"Amazon {block['domain'].title()}, {view}, {block['users']} test users, 1 + "
                 f"{doc['protocol']['negatives']} sampled", f"{best} {rows[best]['ndcg@10']['value']:.3f}",
                 f"{adapter['ndcg@10']['value']:.3f} ({name.removeprefix(ADAPTER + ' (').removesuffix(')')})",
                 f"{signed(vs_best)} ({side_of_zero(vs_best)})",
                 f"{signed(adapter['vs_encoder'])} ({side_of_zero(adapter['vs_encoder'])})"
                 + "".join(f"; stacked with it: {signed(rows[s]['vs_encoder'])} ({side_of_zero(rows[s]['vs_encoder'])})"
                           for s in block.get("stacks", {}) if ADAPTER in s), "docs/amazon_collab.md")
        stack = rows.get(stack_row(encoder, name), {}).get("vs_encoder")  # the picked adapter's, every-user blocks
        arenas.append(Arena(cells, vs_best, _label(block).removeprefix("Amazon "), stack, adapter["vs_encoder"]))
    return arenas


def _label(block: dict) -> str:
    """"Amazon Office warm", "Amazon Arts cold": a block's direction and view."""
    return f"Amazon {block['domain'].title()} {'cold' if block['view'] == 'other' else 'warm'}"


def _block_stacks(amazon: dict, adapter: bool) -> list[tuple[str, dict]]:
    """(arena, paired difference against the encoder) of the stacked rows in the Amazon arena blocks: the adapter's
    (`adapter`), else the content row's."""
    return [(_label(b), r["vs_encoder"]) for b in _arena_blocks(amazon) for r in b["rows"]
            if r["name"] in b.get("stacks", {}) and (ADAPTER in r["name"]) == adapter]


def _stacked(ml100k: dict, amazon: dict) -> list[tuple[str, dict]]:
    """(arena, paired difference against the encoder) of each adapter's stacked row scored on every test user:
    MovieLens-100K's when its results have the final rows, and those in the Amazon arena blocks."""
    _, stacked, final = _ml100k_picked(ml100k)
    return [*([("MovieLens-100K", stacked["vs_best"])] if final else []), *_block_stacks(amazon, adapter=True)]


def _content(amazon: dict) -> str:
    """A clause on the content row stacked with the encoder (titles through MiniLM, no LLM): whether the titles
    carry signal the encoder lacks, and in those views what the adapter variants that read them got; empty for
    results without it."""
    stacks = _block_stacks(amazon, adapter=False)
    if not stacks:
        return ""
    above = [(where, d) for where, d in stacks if d["ci_low"] > 0]
    return ("; the titles alone (MiniLM title embeddings, no LLM) stacked with the encoder the same way: "
            + ", ".join(f"{where} {signed(d)}" for where, d in stacks)
            + (f": in {len(above)} of {len(stacks)} views ("
               + ", ".join(f"{where}, CI lower bound {d['ci_low']:+.4f}" for where, d in above)
               + f") the CI is above 0, each view tested at 95% with no correction for the {len(stacks)}, so this "
               "suggests, not shows, that the titles carry signal the encoder lacks; the picked adapter's stacked row "
               "there is level with the encoder (a paired test of the two stacked rows was not run)"
               + _titled(amazon, {where for where, _ in above})
               if above else ": the titles add nothing resolvable either"))


def _titled(amazon: dict, views: set[str]) -> str:
    """A clause on the adapter variants whose item vectors carry the titles (their `content`), in `views` (`_label`s)
    where they were scored beside the picked variant: both against the encoder, paired; empty where there is none."""
    parts = []
    for block in (b for b in _sampled(amazon) if _label(b) in views):
        rows = {r["name"]: r for r in block["rows"]}
        info = {n: amazon["adapters"].get(f"{block['domain']}, {n}", {}) for n in rows}
        titled = [n for n in rows if info[n].get("content") == "titles"]
        chosen = picked(amazon, block["domain"]) if titled else None
        parts += [f"{_label(block)}, {block['users']} users, against the encoder: {signed(rows[n]['vs_encoder'])}, "
                  f"its best validation at step {info[n].get('best_step', '?')}; the picked variant, best at step "
                  f"{info[chosen].get('best_step', '?')}: {signed(rows[chosen]['vs_encoder'])}"
                  for n in titled if n != chosen and chosen in rows]
    return ("; nor does the variant whose item vectors also carry the titles pass them on (" + "; ".join(parts)
            + "; validation keeps the picked one)") if parts else ""


def _cold(doc: dict) -> list[str]:
    """A line per cold Amazon view: the picked adapter against the text-only re-rankers of the same prompts."""
    lines = []
    for block in (b for b in _sampled(doc) if b["view"] == "other"):
        row = next(r for r in block["rows"] if r["name"] == picked(doc, block["domain"]))
        cells = ", ".join(f"{name.removesuffix(' (text only)')} {signed(d)} ({side_of_zero(d)})"
                          for name, d in row.get("vs_text_only", {}).items())
        if cells:
            lines.append(f"- Amazon {block['domain'].title()}, cold, {block['users']} users: {row['name']} against "
                         f"{cells}.")
    return lines


def _variants(doc: dict) -> list[str]:
    """A line per Amazon view where other collab variants than the picked one re-ranked the same users."""
    lines = []
    for block in _sampled(doc):
        chosen = picked(doc, block["domain"])
        others = [r for r in block["rows"] if r["name"].startswith(ADAPTER) and r["name"] != chosen]
        if others:
            view = "cold" if block["view"] == "other" else "warm"
            cells = ", ".join(f"{r['name'].removeprefix('collab adapter ')} {r['ndcg@10']['value']:.3f} "
                              f"({signed(r['vs_encoder'])} against the encoder)" for r in others)
            lines.append(f"- Amazon {block['domain'].title()}, {view}, {block['users']} users: {cells}.")
    return lines


def _ml100k_variants(doc: dict) -> list[str]:
    """A line with the MovieLens-100K re-rankers other than the picked one, on the same users."""
    others = _rerankers(doc)[1]
    cells = ", ".join(f"({_variant(r['name'])}) {r['metrics']['sampled_ndcg@10']['value']:.3f} "
                      f"({signed(r['vs_best'])} against the encoder)" for r in others)
    return [f"- MovieLens-100K: {cells}."] if others else []


def _movie_adapters(doc: dict) -> tuple[dict, list[dict]]:
    """The TALLRec movie collab rows: the one with the best validation AUC, and the others."""
    rows = [r for r in doc["rows"] if r["kind"] == "llm" and r["recipe"].endswith("collab")]
    picked = max(rows, key=lambda r: r["best_val_auc"] or -1.0)
    return picked, [r for r in rows if r is not picked]


def _movie_variants(doc: dict) -> list[str]:
    """A line with the TALLRec movie collab rows other than the picked one (test AUC)."""
    others = _movie_adapters(doc)[1]
    cells = ", ".join(f"{r['name']} {r['test']['value']:.3f} ({signed(r['vs_bar'])} against the bar, AUC)"
                      for r in others)
    return [f"- TALLRec movie: {cells}."] if others else []


def _movie(doc: dict) -> list[Arena]:
    rows = {r["name"]: r for r in doc["rows"]}
    bar, encoder = rows["feature regression"], rows["MF with biases (encoder alone)"]
    adapter = _movie_adapters(doc)[0]
    gap = adapter["test"]["value"] - encoder["test"]["value"]
    name = adapter["name"].removeprefix(ON_GEMMA)
    variant = " ({}{})".format(name.removeprefix("collab, ") if name.startswith("collab, ") else "item tokens",
                               f", {SECOND_BACKBONE}" if name != adapter["name"] else "")
    cells = (f"TALLRec movie test, {doc['protocol']['cases']} cases of {doc['protocol']['users']} users, AUC",
             f"feature regression {bar['test']['value']:.3f}", f"{adapter['test']['value']:.3f}{variant}",
             f"{signed(adapter['vs_bar'])} ({side_of_zero(adapter['vs_bar'])})",
             f"{gap:+.3f} (point estimates; MF with biases {encoder['test']['value']:.3f})", "docs/collab.md")
    stacked = rows.get(f"feature regression + {adapter['name']} (stacked on validation)")
    return [Arena(cells, adapter["vs_bar"], "TALLRec movie (AUC)", stacked and stacked["vs_bar"])]


def row_commits() -> tuple[list[str | None], list[str | None]]:
    """The commits the goals' LLM rows were scored at (MovieLens-100K, Amazon, TALLRec movie; each as its page reads
    it), and those of the re-ranked ones (the first two); none while no experiment has results."""
    ml100k, amazon, movie = (read_json(s) for s in SOURCES)
    commits = [ml100k["protocol"].get("llm_rows_commit") if ml100k else None,
               run_commit(amazon, SOURCES[1]) if amazon else None, run_commit(movie, SOURCES[2]) if movie else None]
    present = [c for c, s in zip(commits, SOURCES) if s.is_file()]
    return present, [c for c, s in zip(commits[:2], SOURCES[:2]) if s.is_file()]


def _goals() -> tuple[dict, dict, dict, list[Arena]]:
    """The three experiments' results (MovieLens-100K, Amazon, TALLRec movie) and their arenas, in table order."""
    ml100k, amazon, movie = (read_json(s) for s in SOURCES)
    return ml100k, amazon, movie, [*_ml100k(ml100k), *_amazon(amazon), *_movie(movie)]


def figure(out: Path) -> None:
    """The goals as a forest plot: per arena the adapter against its bar, and its score stacked with its encoder
    against the encoder alone (TALLRec movie: with the bar's features, against the bar), paired 95% CIs."""
    from adaptrec.plots.style import COLORS, NEUTRAL, ci_yerr, legend_below, new_figure, save_png, styled

    *_, arenas = _goals()

    @styled
    def draw() -> None:
        fig, axes = new_figure(
            0.4 * len(arenas) + 1.9, title="Collaborative-signal adapters against the best non-LLM row",
            subtitle="Each arena's picked adapter, paired with the other row on the same users: NDCG@10 (TALLRec "
                     "movie: AUC)",
            caption="Bars: 95% CIs resampling users; dotted: no difference. Stacked: a logistic regression on the "
                    "adapter's score and its encoder's (TALLRec movie: the bar's features), fit on validation users, "
                    "against that encoder (the bar) alone.")
        ax, ys = axes[0][0], list(range(len(arenas)))[::-1]  # the table's first arena on top
        for i, (label, diff) in enumerate((("adapter − the best non-LLM row", lambda a: a.vs_best),
                                          ("adapter stacked with its encoder − the encoder (TALLRec movie: with "
                                           "the bar's features − the bar)", lambda a: a.stacked))):
            marks = [(y + (0.15 if i == 0 else -0.15), diff(a)) for y, a in zip(ys, arenas) if diff(a)]
            ax.errorbar([d["value"] for _, d in marks], [y for y, _ in marks],
                        xerr=ci_yerr(*([d[k] for _, d in marks] for k in ("value", "ci_low", "ci_high"))),
                        fmt="os"[i], ms=4, capsize=2, lw=1.1, color=COLORS[i], label=label)
        ax.axvline(0, color=NEUTRAL, lw=0.8, ls=":")
        ax.set_yticks(ys, [a.name for a in arenas])
        ax.set_xlabel("paired difference (NDCG@10; TALLRec movie: AUC)")
        legend_below(axes, ncols=1)
        save_png(fig, out)

    draw()


def render() -> list[str]:
    """The goals section of docs/results.md (a line naming what is missing while an experiment has no results)."""
    if missing := [str(s.relative_to(ROOT)) for s in SOURCES if not s.is_file()]:
        return ["## Collaborative signal: the goals", "",
                f"Not rendered: no {', '.join(missing)} yet (run the experiments that write them).", ""]
    ml100k, amazon, movie, arenas = _goals()
    above = sum(a.vs_best["ci_low"] > 0 for a in arenas)
    lines = ["## Collaborative signal: the goals", "",
             "The bar in each arena is its best non-LLM row on the same users: on MovieLens-100K the encoder best "
             "on validation (the one the adapter re-ranks), on Amazon the highest point estimate on test among the rows "
             "scored beside the adapter, whether or not its lead over the others is resolved (a pick on test favours "
             f"the bar, not the adapter; the rows are popularity and {amazon['protocol']['encoder']}"
             + (f", and the titles through MiniLM, alone and stacked with {amazon['protocol']['encoder']}"
                if _block_stacks(amazon, adapter=False) else "")
             + "; the other encoders alone are on docs/amazon_encoders.md), on TALLRec movie the feature regression; the collaborative adapter (LoRA plus one soft token per "
             "item from a collaborative encoder, "
             "docs/adapters.md) re-ranks that encoder's top "
             "candidates (ranking arenas, NDCG@10) or scores every case (TALLRec movie, AUC). The adapter is the "
             "variant (in brackets) with the best validation AUC: on Amazon each direction's, on MovieLens among "
             "those validated on random negatives, on TALLRec movie among its collab variants"
             + (" on either backbone" if movie.get("gemma_vs_smollm2") else "") + ". Differences are paired "
             "on the same users, 95% CIs resample users. Each arena's page has the protocol, every row and what was "
             "tried.", "",
             f"![Forest plot per arena: the adapter minus the best non-LLM row, and its score stacked with its encoder "
             f"(TALLRec movie: the bar's features) minus that row alone, with 95% CIs]({FIGURE})", "",
             "The figure: `python experiments/report.py figures`.", "",
             "| arena | best non-LLM row | collab adapter | adapter − best non-LLM row | adapter − its own encoder "
             "| page |", "|---|---|---:|---|---|---|",
             *("| " + " | ".join(a.cells) + " |" for a in arenas), "",
             f"The adapter is above its bar, CI above 0, in {above} of {len(arenas)} arenas"]
    level = [a.cells for a in arenas if a.vs_best["ci_low"] <= 0 <= a.vs_best["ci_high"]]
    if level:
        lines[-1] += (f"; level with it (CI spans 0) in {len(level)}: "
                      + "; ".join(f"{re.split(r', [0-9]+ test', c[0])[0]}: {c[2]}" for c in level))
    lines[-1] += "."
    variants, cold = [*_ml100k_variants(ml100k), *_variants(amazon), *_movie_variants(movie)], _cold(amazon)
    if variants:
        lines[-1:-1] = ["Other variants of the adapter, on the users every variant scored (NDCG@10; TALLRec movie: "
                        "AUC):", "", *variants, ""]
    if cold:
        lines[-1:-1] = [f"Cold users against the text-only re-rankers of the same top {amazon['protocol']['rerank_k']} "
                        "(paired NDCG@10):", "",
                        *cold, ""]
    if not above:
        missing = [clause for clause in [below_encoder(arenas)] if clause]
        stacked = _stacked(ml100k, amazon)
        if stacked and all(d["ci_low"] <= 0 <= d["ci_high"] for _, d in stacked):
            missing.append("stacked with its encoder (a logistic regression fit on validation users) the adapter's "
                           "score changes nothing these CIs resolve on every test user whose prompts fit ("
                           + ", ".join(f"{where} {signed(d)}" for where, d in stacked)
                           + "): the LLM reads the encoder's judgement and adds nothing resolvable to it"
                           + _content(amazon))
        elif level and all("match token" in c[2] for c in level):
            missing.append("where it is level, it was handed the encoder's view of each pair in one soft token (the "
                           "match token): the LLM reads the encoder's judgement and adds nothing resolvable to it")
        if missing:
            lines[-1] += " What the pages found missing: " + "; ".join(missing) + "."
    return lines + ["", "On TALLRec movie a CoLLM-sized gain (+0.01–0.02 AUC) would not be resolvable with its "
                    f"{movie['protocol']['users']} test users either way.{_second_backbone(movie)} Book is reported "
                    "only (no item ids, no training set): its rows are in \"TALLRec book\" above.", ""]


def below_encoder(arenas: list[Arena]) -> str:
    """The clause naming the arenas where the adapter is below its own encoder, CI below 0 ("" where none is; was:
    said of every arena, TALLRec movie's too, where the adapter's point estimate is above it and no test was run)."""
    below = [a.name for a in arenas if a.vs_encoder and a.vs_encoder["ci_high"] < 0]
    return ("with at most 256 labelled prompts the 135M backbone does not learn to read the item tokens as well as "
            f"the encoder that made them where the adapter is below it, CI below 0 ({', '.join(below)} of the "
            f"{sum(bool(a.vs_encoder) for a in arenas)} arenas with a paired test against the encoder)"
            if below else "")


def _second_backbone(movie: dict) -> str:
    """A sentence on the TALLRec movie rows run again on a second backbone, against SmolLM2's ("" without them)."""
    pairs = second_backbone(movie)
    return (" The same recipes there on a second backbone of about the same transformer size trained on more text "
            f"({SECOND_BACKBONE}), against SmolLM2's, paired by user: {pairs}." if pairs else "")


def second_backbone(movie: dict) -> str:
    """Each TALLRec movie row on the second backbone − its SmolLM2 twin, named as the twin ("" without them)."""
    return "; ".join(f"{name.removeprefix(ON_GEMMA)} {signed(d)} ({side_of_zero(d)})"
                     for name, d in in_row_order(movie, "gemma_vs_smollm2"))


def in_row_order(movie: dict, key: str) -> list[tuple[str, dict]]:
    """The TALLRec movie results' paired differences under `key` (row name -> difference), in the table's row order
    (the JSON keeps its keys sorted)."""
    pairs = movie.get(key, {})
    return [(r["name"], pairs[r["name"]]) for r in movie["rows"] if r["name"] in pairs]
