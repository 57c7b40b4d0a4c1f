"""The audit trail of a domain's champion: every promotion, refused challenger, rollback and forced removal, with
its evidence.

Rollback replays the trail as a stack (a promotion pushes, a rollback pops; a removal leaves the stack, so the next
rollback restores the champion before the removed one), so repeated rollbacks walk back through earlier champions
rather than flip between the last two.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
from dataclasses import dataclass, field

from ..errors import IntegrityError


@dataclass(frozen=True)
class Decision:
    seq: int
    domain: str
    action: str
    ref: str
    previous: str | None
    evidence: dict = field(default_factory=dict)
    by: str = ""
    at: str = ""

    def to_dict(self) -> dict:
        return {"seq": self.seq, "domain": self.domain, "action": self.action, "ref": self.ref,
                "previous": self.previous, "evidence": self.evidence, "by": self.by, "at": self.at}


def who() -> str:
    """Who decides: $ADAPTREC_USER, else the login name."""
    try:
        return os.environ.get("ADAPTREC_USER") or getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown"


def append(conn: sqlite3.Connection, domain: str, action: str, ref: str, previous: str | None, evidence: dict,
           at: str) -> None:
    conn.execute("INSERT INTO decisions (domain, action, ref, previous, evidence, by_whom, at) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (domain, action, ref, previous, json.dumps(evidence), who(), at))


def history(conn: sqlite3.Connection, domain: str) -> list[Decision]:
    rows = conn.execute("SELECT seq, domain, action, ref, previous, evidence, by_whom, at FROM decisions "
                        "WHERE domain = ? ORDER BY seq", (domain,)).fetchall()
    return [Decision(r[0], r[1], r[2], r[3], r[4], _evidence(r), r[6], r[7]) for r in rows]


def damaged(conn: sqlite3.Connection) -> list[str]:
    """One line for each decision, of any domain, whose evidence `history` cannot read (for `verify`)."""
    problems = []
    for row in conn.execute("SELECT seq, domain, action, ref, previous, evidence FROM decisions ORDER BY seq"):
        try:
            _evidence(row)
        except IntegrityError as e:
            problems.append(str(e))
    return problems


def _evidence(row: tuple) -> dict:
    """The evidence of a `decisions` row: `IntegrityError` naming the decision unless it is JSON; JSON of another
    shape than an object (the API stored what a caller gave) is read as `{"evidence": value}` (was: `[1]`, an
    AttributeError traceback)."""
    try:
        evidence = json.loads(row[5])
    except (TypeError, ValueError):  # edited by hand, or a damaged page (was: JSONDecodeError's traceback)
        raise IntegrityError(f"the registry's decision {row[0]} ({row[2]} {row[3]} in {row[1]}) has unreadable "
                             "evidence; restore registry.db from a copy") from None
    return evidence if isinstance(evidence, dict) else {"evidence": evidence}


def champions(decisions: list[Decision]) -> list[str]:
    """The champion stack the trail leaves, current champion last (a champion from before the trail first)."""
    stack: list[str] = []
    for d in decisions:
        if d.action == "promote":
            if not stack and d.previous:
                stack.append(d.previous)
            if not stack or stack[-1] != d.ref:  # promoting the champion again changes nothing
                stack.append(d.ref)
        elif d.action == "rollback":
            del stack[len(stack) - 1 - len(d.evidence.get("skipped", ())):]  # the champion, and removed ones skipped
    return stack
