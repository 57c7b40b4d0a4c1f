"""Small synthetic recommendation cases for fast tests (no shared data needed)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from adaptrec.data.prompts import ANSWERS, instruction, render_input
from adaptrec.data.records import Case, HistoryItem

GOOD = ["Heat (1995)", "Fargo (1996)", "Casino (1995)", "Se7en (1995)", "Clerks (1994)", "Ran (1985)"]
BAD = ["Jumanji (1995)", "Babe (1995)", "Balto (1995)", "Sabrina (1995)", "Dracula (1992)", "Twister (1996)"]


def synthetic_cases(n: int, seed: int = 0, domain: str = "movie") -> list[Case]:
    """Users like the GOOD titles: the label is 1 when the target is one of them."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        hist = tuple(HistoryItem(f'"{t}"', liked=t in GOOD) for t in rng.sample(GOOD + BAD, 4))
        label = i % 2
        target = rng.choice(GOOD if label else BAD)
        cases.append(Case(f"u{i}", domain, domain, hist, f'"{target}"', label=label))
    return cases


def write_tallrec_files(folder: Path, sizes: dict[str, int], domain: str = "movie") -> dict[str, Path]:
    """TALLRec-format JSON files (`{"instruction", "input", "output"}`) of synthetic cases, one per split."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, (split, n) in enumerate(sizes.items()):
        records = [{"instruction": instruction(c.noun), "input": render_input(c), "output": ANSWERS[c.label]}
                   for c in synthetic_cases(n, seed=i, domain=domain)]
        paths[split] = folder / f"{split}.json"
        paths[split].write_text(json.dumps(records))
    return paths


def log_feedback(cases, log=None, t0: float = 1000.0, endpoint: str = "score", shown=None, hidden: int = 0) -> None:
    """Log each case as a served request and its label as feedback (at times t0, t0 + 1, ...) in `log` (default:
    the `OnlineLog` under `$ADAPTREC_HOME`); `shown`: each item's logged probability of being shown, and its slot's
    propensity (default 1: greedy);
    `hidden`: candidates each request held and did not show."""
    from adaptrec.data.online_log import LoggedItem, OnlineLog

    log = log or OnlineLog()
    for n, c in enumerate(cases):
        p = 1.0 if shown is None else shown[n]  # explored (p < 1): its slot's propensity below 1 as well
        item = LoggedItem(c.target, propensity=p, shown=p)
        unshown = [LoggedItem(f'"other {i}"', propensity=None, slot=None, shown=None) for i in range(hidden)]
        rid = log.log_request(c.domain, c.user_id, c.noun, c.history, [item, *unshown], ["tiny:1"], endpoint,
                              created=t0 + n)
        log.add_feedback(rid, c.target, label=c.label, created=t0 + n)


def write_film_log(folder: Path, domain: str, lengths) -> tuple[Path, list[dict]]:
    """An interaction log of users `u0, u1, ...` with `lengths[u]` interactions each over a 30-film catalogue
    (`items.jsonl` beside it): the log's path and its rows."""
    (folder / "items.jsonl").write_text("".join(json.dumps({"item_id": str(i), "title": f"film {i}"}) + "\n"
                                                for i in range(30)))
    rows = [{"user_id": f"u{u}", "item_id": str((u * 7 + i) % 30), "domain": domain, "position": i}
            for u, n in enumerate(lengths) for i in range(n)]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "log.jsonl", rows
