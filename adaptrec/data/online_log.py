"""The online log: each served request (its id, user, history, items with scores, the adapters that answered and
which items were explored with what propensity) and the feedback that joins to it, per domain, in one SQLite
database in WAL mode (`$ADAPTREC_HOME/online.db`).

SQLite rather than an append-only file of our own: WAL gives concurrent readers during writes, transactions make a
request and its feedback consistent. Every commit survives a killed process (it is in the WAL file); a feedback
event's commit also survives a power cut (`synchronous=FULL` fsyncs the WAL, and with it every request logged
before). Requests commit without that fsync (`NORMAL`), so logging costs a served request no disk flush.
Feedback is acknowledged only after its transaction commits (`add_feedback` returns).

Read back as data, `feedback:DOMAIN[:SINCE]` (see `data/spec.py`) is every (request, item) pair with feedback,
the last event's label winning, as labelled Cases in the order of each pair's first event.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from ..atomic import use_wal
from ..errors import AdaptrecError
from ..home import adaptrec_home
from .records import Case, HistoryItem

LOG_FILE = "online.db"  # under $ADAPTREC_HOME (or a server's --registry folder)
POSITIVE_EVENTS = ("click", "like", "purchase")  # label 1
NEGATIVE_EVENTS = ("dislike", "skip")  # label 0
EVENTS = POSITIVE_EVENTS + NEGATIVE_EVENTS


class UnknownRequest(AdaptrecError):
    """Feedback named a request id the log does not hold."""

    status = 404


class OnlineLogError(AdaptrecError):
    """The log database cannot be opened or written (permissions, a full disk, a locked file)."""


class BadFeedback(AdaptrecError):
    """A feedback event that cannot join to its request (wrong item, no label)."""

    status = 422


@dataclass(frozen=True)
class LoggedItem:
    """One item of a logged request: its score, the slot it was shown in (None: a candidate not shown), whether
    exploration put it there, the probability the logging policy had of putting it there given the earlier slots, and
    of showing it in any slot (`shown`; None: logged before that was recorded)."""

    text: str
    item_id: str | None = None
    score: float | None = None
    explored: bool = False
    propensity: float | None = 1.0
    slot: int | None = 0
    shown: float | None = 1.0


@dataclass(frozen=True)
class LoggedRequest:
    request_id: str
    domain: str
    user_id: str
    noun: str
    history: tuple[HistoryItem, ...]
    items: tuple[LoggedItem, ...]
    adapters: tuple[str, ...]
    endpoint: str
    created: float


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS requests (
        request_id TEXT PRIMARY KEY, domain TEXT NOT NULL, user_id TEXT NOT NULL, noun TEXT NOT NULL,
        history TEXT NOT NULL, items TEXT NOT NULL, adapters TEXT NOT NULL, endpoint TEXT NOT NULL,
        created REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS requests_domain ON requests (domain, created)",
    """CREATE TABLE IF NOT EXISTS feedback (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL REFERENCES requests (request_id),
        item INTEGER NOT NULL, label INTEGER NOT NULL CHECK (label IN (0, 1)), event TEXT,
        created REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id)",
)


SCHEMA_VERSION = 1  # online.db's `PRAGMA user_version`: a log a newer adaptrec wrote is refused, not misread


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a log of a newer schema; record the version in a new one (or one written before it was recorded: 0,
    with the same tables)."""
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise OnlineLogError(f"the request log {path} has schema version {found}, newer than this adaptrec's "
                             f"({SCHEMA_VERSION}): upgrade adaptrec to read it")
    if found < SCHEMA_VERSION:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def label_of(label: int | None, event: str | None) -> int:
    """The 0/1 label of a feedback event: `label` itself, or what `event` means; exactly one must be given."""
    if (label is None) == (event is None):
        raise BadFeedback("feedback needs exactly one of label (0 or 1) or event "
                          f"({', '.join(POSITIVE_EVENTS)}: 1; {', '.join(NEGATIVE_EVENTS)}: 0)")
    if event is not None:
        if event not in EVENTS:
            raise BadFeedback(f"event: unknown event {event!r}; expected one of {', '.join(EVENTS)}")
        return int(event in POSITIVE_EVENTS)
    if label not in (0, 1):
        raise BadFeedback(f"label: expected 0 or 1, got {label!r}")
    return int(label)


def default_log_path() -> Path:
    """`$ADAPTREC_HOME/online.db`, the log `OnlineLog()` opens."""
    return adaptrec_home() / LOG_FILE


class OnlineLog:
    """The request and feedback log of `$ADAPTREC_HOME/online.db` (or `path`); safe to share across threads.

    `busy_s`: how long a statement waits for a lock another thread or process holds before it is an
    `OnlineLogError` (the server's is short: each wait would hold a request, and the threads logging the others)."""

    def __init__(self, path: Path | None = None, busy_s: float = 60.0):
        self.path = Path(path) if path is not None else default_log_path()
        self._lock, self.busy_s = threading.Lock(), busy_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=busy_s, isolation_level=None, check_same_thread=False)
            use_wal(self._db, busy_s)
            _check_schema(self._db, self.path)
            for statement in _SCHEMA:
                self._db.execute(statement)
        except (OSError, sqlite3.Error) as e:
            raise OnlineLogError(f"cannot open the request log {self.path} ({e}); check $ADAPTREC_HOME") from None

    @contextmanager
    def _sql(self, synchronous: str | None = None) -> Iterator[sqlite3.Connection]:
        """The connection under the lock (with `synchronous` set for the statements that follow); a database error
        becomes one `OnlineLogError` line."""
        if not self._lock.acquire(timeout=self.busy_s):
            raise OnlineLogError(f"the request log {self.path}: busy for {self.busy_s:g} s (another thread or process "
                                 "holds it)")
        try:
            if synchronous:
                self._db.execute(f"PRAGMA synchronous={synchronous}")
            yield self._db
        except sqlite3.Error as e:
            raise OnlineLogError(f"the request log {self.path}: {e}") from None
        finally:
            self._lock.release()

    def log_request(self, domain: str, user_id: str, noun: str, history: Sequence[HistoryItem],
                    items: Sequence[LoggedItem], adapters: Sequence[str], endpoint: str,
                    request_id: str | None = None, created: float | None = None) -> str:
        """Record one answered request; returns its id (a new UUID unless given)."""
        request_id = request_id or uuid.uuid4().hex
        row = (request_id, domain, user_id, noun,
               json.dumps([[h.text, h.liked, h.item_id, h.domain] for h in history]),
               json.dumps([[i.text, i.item_id, i.score, i.explored, i.propensity, i.slot, i.shown] for i in items]),
               json.dumps(list(adapters)), endpoint, time.time() if created is None else created)
        with self._sql("NORMAL") as db:  # in the WAL now, on disk with the next feedback's fsync
            db.execute("INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        return request_id

    def request(self, request_id: str) -> LoggedRequest:
        with self._sql() as db:
            row = db.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        if row is None:
            raise UnknownRequest(f"request_id: no logged request {request_id[:64]!r}")
        return _request(row)

    def add_feedback(self, request_id: str, item: str, label: int | None = None, event: str | None = None,
                     created: float | None = None) -> int:
        """Record feedback on `item` (its item id, else its text) of a logged request, durably; returns its sequence
        number. `UnknownRequest` for an unknown id, `BadFeedback` for an item the request did not show, one it
        showed twice (two titles alike: send the item id) or a bad label."""
        value = label_of(label, event)
        logged = self.request(request_id)
        shown = [n for n, i in enumerate(logged.items) if i.slot is not None]
        matches = [n for n in shown if item == logged.items[n].item_id] or \
                  [n for n in shown if item == logged.items[n].text]
        if not matches:
            raise BadFeedback(f"item: {item[:200]!r} is not one of the items request {request_id} showed")
        if len(matches) > 1:
            raise BadFeedback(f"item: request {request_id} showed {item[:200]!r} in {len(matches)} slots; send the "
                              "item_id of the one the feedback is about")
        index = matches[0]
        with self._sql("FULL") as db:  # on disk (the WAL fsynced) before this returns
            cursor = db.execute("INSERT INTO feedback (request_id, item, label, event, created) VALUES (?, ?, ?, ?, ?)",
                                (request_id, index, value, event, time.time() if created is None else created))
        return int(cursor.lastrowid)

    def cases(self, domain: str, since: float | None = None, until: float | None = None) -> list[Case]:
        """Labelled Cases of `domain`'s feedback (created in [since, until)), the last event per (request, item)
        winning, in order of each pair's first event: a re-label changes a pair's label, not its place, so a full
        `[start:stop]` window keeps its cases. `meta` holds the request id, endpoint, event time, score, explored,
        propensity, probability of being shown, and whether the request showed every candidate it held."""
        query = ("SELECT r.*, f.item, f.label, f.created AS at, f.seq FROM feedback f "
                 "JOIN requests r USING (request_id) "
                 "WHERE r.domain = ? AND f.created >= ? AND f.created < ? ORDER BY f.seq")
        with self._sql() as db:
            rows = db.execute(query, (domain, *_bounds(since, until))).fetchall()
        last: dict[tuple[str, int], tuple] = {}
        for row in rows:
            last[(row[0], row[9])] = row  # a dict keeps a key where it was first inserted
        return [_case(row) for row in last.values()]

    def domains(self) -> list[str]:
        """The domains of the logged requests, sorted."""
        with self._sql() as db:
            return [row[0] for row in db.execute("SELECT DISTINCT domain FROM requests ORDER BY domain")]

    def requests(self, domain: str, since: float | None = None, until: float | None = None) -> list[LoggedRequest]:
        """`domain`'s logged requests created in [since, until), oldest first."""
        with self._sql() as db:
            rows = db.execute(
                "SELECT * FROM requests WHERE domain = ? AND created >= ? AND created < ? ORDER BY created",
                (domain, *_bounds(since, until))).fetchall()
        return [_request(row) for row in rows]


def _bounds(since: float | None, until: float | None) -> tuple[float, float]:
    """[since, until) with open ends made explicit (Unix seconds)."""
    return (-math.inf if since is None else since, math.inf if until is None else until)


def _request(row: tuple) -> LoggedRequest:
    request_id, domain, user_id, noun, history, items, adapters, endpoint, created = row[:9]
    return LoggedRequest(request_id, domain, user_id, noun,
                         tuple(HistoryItem(t, bool(liked), i, d) for t, liked, i, d in json.loads(history)),
                         tuple(_item(i) for i in json.loads(items)),
                         tuple(json.loads(adapters)), endpoint,
                         created)


def _item(fields: list) -> LoggedItem:
    """A logged item from its stored fields; one logged before `shown` was recorded has None there (its earlier
    fields keep the defaults they were logged with)."""
    item = LoggedItem(*fields)
    return item if len(fields) >= 7 else replace(item, shown=None)


def _case(row: tuple) -> Case:
    logged = _request(row)
    index, label, at = row[9], row[10], row[11]
    item = logged.items[index]
    return Case(logged.user_id, logged.domain, logged.noun, logged.history, item.text, label, item.item_id,
                meta={"request_id": logged.request_id, "event": f"{logged.request_id}/{index}", "time": at,
                      "score": item.score, "explored": item.explored, "propensity": item.propensity,
                      "shown": item.shown, "slot": item.slot, "adapters": logged.adapters,
                      "endpoint": logged.endpoint, "all_shown": all(i.slot is not None for i in logged.items)})
