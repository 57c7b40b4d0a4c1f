"""The registry's SQLite schema, built by an append-only list of migrations.

Migration i (0-based) takes the schema from `PRAGMA user_version` i to i + 1; the pending ones run in one write
transaction when a `Registry` opens. Later features change the schema by adding a migration at the end of
`MIGRATIONS` (and any new column as an `AdapterRecord` field); migrations already released are never edited or
reordered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def _m1_initial(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE adapters (
            name           TEXT    NOT NULL,
            version        INTEGER NOT NULL CHECK (version >= 1),
            domain         TEXT    NOT NULL,
            kind           TEXT    NOT NULL CHECK (kind IN ('trained', 'composed', 'pulled')),
            adapter_type   TEXT    NOT NULL,
            adapter_config TEXT    NOT NULL,          -- JSON
            base_exact     TEXT    NOT NULL,
            base_family    TEXT    NOT NULL,
            base_model     TEXT    NOT NULL,
            recipe_text    TEXT,
            recipe_hash    TEXT,
            metrics        TEXT    NOT NULL DEFAULT '{}',  -- JSON {metric: {value, data, limit, ...}}
            lineage        TEXT,                      -- JSON {parents: [name:version], method, weights}
            origin         TEXT,                      -- JSON {repo, revision} when pulled
            file_hash      TEXT    NOT NULL,          -- sha256 of adaptrec.json
            created        TEXT    NOT NULL,          -- UTC ISO 8601
            PRIMARY KEY (name, version)
        )"""
    )
    conn.execute("CREATE INDEX adapters_domain ON adapters (domain)")
    # the last version ever allocated per name, so versions are never reused after a removal
    conn.execute("CREATE TABLE name_versions (name TEXT PRIMARY KEY, last_version INTEGER NOT NULL)")
    conn.execute(
        """CREATE TABLE aliases (
            domain   TEXT PRIMARY KEY,
            name     TEXT    NOT NULL,
            version  INTEGER NOT NULL,
            promoted TEXT    NOT NULL,
            FOREIGN KEY (name, version) REFERENCES adapters (name, version)
        )"""
    )


def _m2_claimed_metrics(conn: sqlite3.Connection) -> None:
    """A pulled adapter's metrics are its publisher's claim, kept apart from metrics measured here."""
    conn.execute("ALTER TABLE adapters ADD COLUMN claimed_metrics TEXT")  # JSON, or NULL
    conn.execute("UPDATE adapters SET claimed_metrics = metrics, metrics = '{}' WHERE kind = 'pulled'")


def _m3_promotion_audit(conn: sqlite3.Connection) -> None:
    """Every champion decision of a domain (promotion, refused challenger, rollback), oldest first."""
    conn.execute(
        """CREATE TABLE decisions (
            seq       INTEGER PRIMARY KEY AUTOINCREMENT,
            domain    TEXT NOT NULL,
            action    TEXT NOT NULL CHECK (action IN ('promote', 'refuse', 'rollback')),
            ref       TEXT NOT NULL,     -- the adapter promoted, refused, or restored
            previous  TEXT,              -- the champion before (NULL: none)
            evidence  TEXT NOT NULL,     -- JSON: the test, metric, values, CI, data, cases ({} for a plain promote)
            by_whom   TEXT NOT NULL,
            at        TEXT NOT NULL      -- UTC ISO 8601
        )"""
    )
    conn.execute("CREATE INDEX decisions_domain ON decisions (domain, seq)")


def _m4_encoders(conn: sqlite3.Connection) -> None:
    """Collaborative encoders, registered apart from adapters (registry/encoders.py)."""
    conn.execute(
        """CREATE TABLE encoders (
            name             TEXT    NOT NULL,
            version          INTEGER NOT NULL CHECK (version >= 1),
            kind             TEXT    NOT NULL,
            data             TEXT    NOT NULL,  -- the interaction source
            data_fingerprint TEXT    NOT NULL,  -- digest of its training interactions
            window           TEXT    NOT NULL,  -- which interactions, in words
            settings         TEXT    NOT NULL,  -- JSON
            metrics          TEXT    NOT NULL,  -- JSON, on the source's validation part
            files            TEXT    NOT NULL,  -- JSON: file name -> sha256
            created_at       TEXT    NOT NULL,
            PRIMARY KEY (name, version)
        )"""
    )


def _m5_remove_decisions(conn: sqlite3.Connection) -> None:
    """A forced removal of a domain's champion is a decision too: `decisions.action` may be 'remove' (SQLite cannot
    change a CHECK in place, so the table is rebuilt, rows and sequence numbers kept)."""
    conn.execute(
        """CREATE TABLE decisions_new (
            seq       INTEGER PRIMARY KEY AUTOINCREMENT,
            domain    TEXT NOT NULL,
            action    TEXT NOT NULL CHECK (action IN ('promote', 'refuse', 'rollback', 'remove')),
            ref       TEXT NOT NULL,     -- the adapter promoted, refused, restored or removed
            previous  TEXT,              -- the champion before (NULL: none)
            evidence  TEXT NOT NULL,     -- JSON: the test, metric, values, CI, data, cases ({} for a plain promote)
            by_whom   TEXT NOT NULL,
            at        TEXT NOT NULL      -- UTC ISO 8601
        )"""
    )
    conn.execute("INSERT INTO decisions_new SELECT * FROM decisions")
    conn.execute("DROP TABLE decisions")
    conn.execute("ALTER TABLE decisions_new RENAME TO decisions")
    conn.execute("CREATE INDEX decisions_domain ON decisions (domain, seq)")


# Append only: a new migration goes at the end.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m1_initial, _m2_claimed_metrics, _m3_promotion_audit,
                                                          _m4_encoders, _m5_remove_decisions]


def schema_version() -> int:
    """The schema version this code writes (`PRAGMA user_version` of an up-to-date registry.db)."""
    return len(MIGRATIONS)


def stored_version(conn: sqlite3.Connection) -> int:
    """The schema version of `conn`'s database (0 for a new, empty one)."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection) -> None:
    """Run the migrations `conn`'s database lacks and record the new version; the caller holds the write
    transaction."""
    for migration in MIGRATIONS[stored_version(conn):]:
        migration(conn)
    conn.execute(f"PRAGMA user_version = {schema_version()}")
