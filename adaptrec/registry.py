"""The adapter registry: a SQLite index at `$ADAPTREC_HOME/registry.db` over adapter folders at
`$ADAPTREC_HOME/adapters/<name>/<version>/` (layout: `adaptrec.adapters.files`).

Refs: `name` (latest version), `name:latest`, `name:<version>` (versions start at 1 and are never
reused, even after a removal). Names use `[A-Za-z0-9._+-]`, do not start with a dot and hold no `..`.

Guarantees: a registration allocates its version, writes the folder atomically and inserts its row
inside one `BEGIN IMMEDIATE` transaction, so concurrent writers (threads or processes) never collide
and a failure leaves neither row nor folder; every `load_verified` recomputes the files' hashes and
checks the base-model fingerprint. See docs/registry.md.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from adaptrec.adapters.files import METADATA_FILE, check_base, file_sha256, verify_adapter_dir, write_adapter_dir
from adaptrec.errors import AdaptrecError, IntegrityError, RegistryError
from adaptrec.fingerprint import Fingerprint, text_digest
from adaptrec.home import adaptrec_home

KINDS = ("trained", "composed", "pulled")
_NAME_RE = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127}")
_NAME_HELP = "use 1-128 of letters, digits and . _ + - (not starting with '.', no '/' or '..'), e.g. 'movies-lora'"


# ---------------------------------------------------------------- schema and migrations
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


# Migration i (0-based) takes the schema from user_version i to i + 1, inside one transaction.
# To change the schema, append a function; never edit or reorder the ones already released.
def _m2_claimed_metrics(conn: sqlite3.Connection) -> None:
    """A pulled adapter's metrics are its publisher's claim, kept apart from metrics measured here."""
    conn.execute("ALTER TABLE adapters ADD COLUMN claimed_metrics TEXT")  # JSON, or NULL
    conn.execute("UPDATE adapters SET claimed_metrics = metrics, metrics = '{}' WHERE kind = 'pulled'")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m1_initial, _m2_claimed_metrics]


def schema_version() -> int:
    """The schema version this code writes (`PRAGMA user_version` of an up-to-date registry.db)."""
    return len(MIGRATIONS)


# ---------------------------------------------------------------- refs and records
def check_name(name: str) -> str:
    """Return `name` if it is a valid adapter name, else raise `RegistryError`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise RegistryError(f"bad adapter name {name!r}: {_NAME_HELP}")
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`name` / `name:latest` → (name, None); `name:3` → (name, 3)."""
    if not isinstance(ref, str) or not ref:
        raise RegistryError(f"bad adapter ref {ref!r}: write name, name:latest or name:<version>, e.g. 'movies-lora:2'")
    name, sep, version = ref.partition(":")
    check_name(name)
    if not sep or version == "latest":
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise RegistryError(f"bad adapter ref {ref!r}: the version must be a number >= 1 or 'latest', e.g. '{name}:1'")
    return name, int(version)


@dataclass(frozen=True)
class AdapterRecord:
    """One registered adapter version (a row of the `adapters` table) and where its folder is."""

    name: str
    version: int
    domain: str
    kind: str
    adapter_type: str
    adapter_config: dict
    base_exact: str
    base_family: str
    base_model: str
    recipe_text: str | None
    recipe_hash: str | None
    metrics: dict
    lineage: dict | None
    origin: dict | None
    file_hash: str
    created: str
    path: Path
    claimed_metrics: dict | None = None  # a pulled adapter's metrics as its publisher stated them (not measured here)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(exact=self.base_exact, family=self.base_family, base_model=self.base_model)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["ref"] = self.ref
        return d


_JSON_COLUMNS = ("adapter_config", "metrics", "lineage", "origin", "claimed_metrics")
_ROW_FIELDS = tuple(f.name for f in fields(AdapterRecord) if f.name != "path")


def verified_files(rec: AdapterRecord) -> dict:
    """The metadata of `rec`'s folder after re-hashing every file, `adaptrec.json` against the row included;
    IntegrityError naming what changed otherwise."""
    meta = verify_adapter_dir(rec.path)
    if file_sha256(rec.path / METADATA_FILE) != rec.file_hash:
        raise IntegrityError(
            f"{rec.path / METADATA_FILE} differs from the copy registered as {rec.ref}; the folder was modified, re-register the adapter"
        )
    return meta


def _unfinished(path: Path) -> bool:
    """A `.name.tmp` folder: a write a killed process never renamed into place."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _dumps(obj: Any) -> str | None:
    return None if obj is None else json.dumps(obj, sort_keys=True)


# ---------------------------------------------------------------- validation
def _check_domain(domain: str) -> str:
    if not isinstance(domain, str) or not domain.strip() or len(domain) > 200 or not domain.isprintable():
        raise RegistryError(f"bad domain {domain!r}: give a short printable name such as 'movies'")
    return domain


def _check_metrics(metrics: dict | None) -> dict:
    """{metric: {"value": number, "data": SPEC, "limit": int | None, ...extra protocol keys}}."""
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise RegistryError("metrics must be a mapping {metric: {'value': ..., 'data': SPEC, 'limit': N}}")
    out = {}
    for key, m in metrics.items():
        example = f"{{'{key}': {{'value': 0.71, 'data': 'movies:test', 'limit': 500}}}}"
        if not isinstance(key, str) or not key:
            raise RegistryError(f"bad metric name {key!r}: use names like 'auc' or 'ndcg@10'")
        if not isinstance(m, dict):
            raise RegistryError(f"metric '{key}' must record its value with the data SPEC and limit it was measured on, e.g. {example}")
        value, data, limit = m.get("value"), m.get("data"), m.get("limit")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RegistryError(f"metric '{key}' needs a finite numeric 'value', e.g. {example}")
        if not isinstance(data, str) or not data:
            raise RegistryError(f"metric '{key}' needs 'data': the data SPEC it was measured on, e.g. {example}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise RegistryError(f"metric '{key}': 'limit' must be a positive int or None (all cases), e.g. {example}")
        try:
            json.dumps(m)
        except TypeError:
            raise RegistryError(f"metric '{key}' holds values that are not JSON-serialisable") from None
        out[key] = {**m, "limit": limit}
    return out


def _fingerprint(fp: Fingerprint | dict) -> Fingerprint:
    if isinstance(fp, Fingerprint):
        return fp
    if isinstance(fp, dict) and fp.get("exact") and fp.get("family"):
        return Fingerprint.from_dict(fp)
    raise RegistryError("fingerprint must be the backbone's Fingerprint (backbone.fingerprint), or a dict with 'exact' and 'family'")


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- the registry
class Registry:
    """The SQLite adapter registry rooted at `home` (default `adaptrec_home()`)."""

    def __init__(self, home: Path | None = None, *, timeout: float = 60.0):
        self.home = Path(home).expanduser() if home is not None else adaptrec_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.db_path = self.home / "registry.db"
        self.adapters_dir = self.home / "adapters"
        self.timeout = float(timeout)
        self._migrate()

    def __repr__(self) -> str:
        return f"Registry({str(self.home)!r})"

    # ------------------------------------------------------------ connections
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.db_path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise RegistryError(f"cannot open {self.db_path} ({e}); check ADAPTREC_HOME and its permissions") from None
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise RegistryError(
                    f"the registry at {self.db_path} stayed busy for {self.timeout:g}s (another adaptrec process is writing); retry"
                ) from None
            raise
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database's write lock from its first statement."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _migrate(self) -> None:
        target = len(MIGRATIONS)
        with self._connect() as conn:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current == target:
                return
            if current > target:
                raise RegistryError(
                    f"{self.db_path} has schema version {current}, newer than this adaptrec understands ({target}); upgrade adaptrec"
                )
        with self._write() as conn:
            current = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            for i in range(current, target):
                MIGRATIONS[i](conn)
            conn.execute(f"PRAGMA user_version = {target}")

    # ------------------------------------------------------------ helpers
    def path_for(self, name: str, version: int) -> Path:
        return self.adapters_dir / check_name(name) / str(int(version))

    def _record(self, row: sqlite3.Row) -> AdapterRecord:
        d = {k: row[k] for k in _ROW_FIELDS}  # columns a later migration adds need a field to show up
        for col in _JSON_COLUMNS:
            d[col] = json.loads(d[col]) if d[col] is not None else None
        d["metrics"] = d["metrics"] or {}
        return AdapterRecord(**d, path=self.path_for(d["name"], d["version"]))

    def _resolve(self, conn: sqlite3.Connection, ref: str) -> AdapterRecord:
        name, version = parse_ref(ref)
        if version is None:
            row = conn.execute("SELECT * FROM adapters WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)).fetchone()
            if row is None:
                raise RegistryError(f"no adapter named '{name}' in {self.home}; see `adaptrec registry list` for the names")
            return self._record(row)
        row = conn.execute("SELECT * FROM adapters WHERE name = ? AND version = ?", (name, version)).fetchone()
        if row is None:
            versions = [r[0] for r in conn.execute("SELECT version FROM adapters WHERE name = ? ORDER BY version", (name,))]
            if not versions:
                raise RegistryError(f"no adapter named '{name}' in {self.home}; see `adaptrec registry list` for the names")
            raise RegistryError(
                f"adapter '{name}' has no version {version} (it has {', '.join(map(str, versions))}); use one of those or '{name}:latest'"
            )
        return self._record(row)

    def _check_lineage(self, conn: sqlite3.Connection, lineage: dict | None, kind: str) -> dict | None:
        if lineage is None:
            if kind == "composed":
                raise RegistryError("a composed adapter needs lineage={'parents': ['name:version', ...], 'method': ..., 'weights': [...]}")
            return None
        if not isinstance(lineage, dict):
            raise RegistryError("lineage must be a mapping {'parents': ['name:version', ...], 'method': ..., 'weights': [...]}")
        parents = lineage.get("parents", [])
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise RegistryError("lineage 'parents' must be a list of refs such as ['movies-lora:2', 'books-lora:1']")
        out_parents = []
        for p in parents:
            if kind == "pulled":  # parents named by the publisher, not necessarily present here
                n, v = parse_ref(p)
                if v is None:
                    raise RegistryError(f"lineage parent {p!r} needs an explicit version, e.g. '{n}:1'")
                out_parents.append(f"{n}:{v}")
            else:
                out_parents.append(self._resolve(conn, p).ref)
        method, weights = lineage.get("method"), lineage.get("weights")
        if kind == "composed":
            if not out_parents:
                raise RegistryError("a composed adapter needs at least one lineage parent ('name:version')")
            if not isinstance(method, str) or not method:
                raise RegistryError("a composed adapter needs lineage 'method' (how the parents were combined, e.g. 'linear')")
        if weights is not None:
            if (
                not isinstance(weights, list)
                or len(weights) != len(out_parents)
                or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights)
            ):
                raise RegistryError(f"lineage 'weights' must be {len(out_parents)} finite numbers, one per parent")
        try:
            json.dumps(lineage)
        except TypeError:
            raise RegistryError("lineage holds values that are not JSON-serialisable") from None
        return {**lineage, "parents": out_parents}

    # ------------------------------------------------------------ writing
    def register(
        self,
        src_dir: Any,
        *,
        name: str,
        domain: str,
        kind: str,
        adapter_type: str,
        adapter_config: dict | None,
        fingerprint: Fingerprint | dict,
        recipe_text: str | None = None,
        metrics: dict | None = None,
        lineage: dict | None = None,
        origin: dict | None = None,
        claimed_metrics: dict | None = None,
    ) -> AdapterRecord:
        """Store a new version of adapter `name` and return its record.

        `src_dir` is a folder with peft files (or a callable `writer(folder)` / a peft model, see
        `write_adapter_dir`). `adapter_config=None` reads the folder's adapter_config.json.
        The version is allocated, the folder written and the row inserted in one transaction.
        """
        check_name(name)
        _check_domain(domain)
        if kind not in KINDS:
            raise RegistryError(f"bad adapter kind {kind!r}: use one of {', '.join(KINDS)}")
        if not isinstance(adapter_type, str) or not adapter_type:
            raise RegistryError("adapter_type must name the peft tuner, e.g. 'lora', 'adalora' or 'prefix'")
        if adapter_config is not None and not isinstance(adapter_config, dict):
            raise RegistryError("adapter_config must be a dict (peft config.to_dict()) or None to read adapter_config.json")
        fp = _fingerprint(fingerprint)
        metrics = _check_metrics(metrics)
        claimed_metrics = _check_metrics(claimed_metrics) if claimed_metrics is not None else None
        if origin is not None and not isinstance(origin, dict):
            raise RegistryError("origin must be a mapping such as {'repo': 'user/adapters', 'revision': '<commit>'}")
        if kind == "pulled" and not (origin and origin.get("repo") and origin.get("revision")):
            raise RegistryError("a pulled adapter needs origin={'repo': <hub repo>, 'revision': <commit sha>}")
        if recipe_text is not None and not isinstance(recipe_text, str):
            raise RegistryError("recipe_text must be the recipe's YAML text (a str) or None")
        recipe_hash = text_digest(recipe_text) if recipe_text is not None else None

        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # the write lock: held from version allocation to commit
            written, dest = False, None
            try:
                lineage = self._check_lineage(conn, lineage, kind)
                clash = conn.execute("SELECT name FROM name_versions WHERE lower(name) = lower(?) AND name != ?",
                                     (name, name)).fetchone()
                if clash:  # one folder on a case-insensitive file system
                    raise RegistryError(f"adapter name {name!r} differs from the registered {clash[0]!r} only in "
                                        "letter case; pick another name")
                row = conn.execute("SELECT last_version FROM name_versions WHERE name = ?", (name,)).fetchone()
                version = (row[0] if row else 0) + 1
                dest = self.path_for(name, version)
                if dest.exists():  # left by a process killed between rename and commit; we hold the lock
                    shutil.rmtree(dest)
                created = _utc_now()
                meta = {
                    "name": name,
                    "version": version,
                    "domain": domain,
                    "kind": kind,
                    "adapter_type": adapter_type,
                    "base": fp.to_dict(),
                    "recipe": recipe_text,
                    "recipe_hash": recipe_hash,
                    "metrics": metrics,
                    "claimed_metrics": claimed_metrics,
                    "lineage": lineage,
                    "origin": origin,
                    "created": created,
                }
                write_adapter_dir(src_dir, dest, meta)
                written = True
                if adapter_config is None:
                    try:
                        adapter_config = json.loads((dest / "adapter_config.json").read_text(encoding="utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError) as e:
                        raise IntegrityError(f"adapter_config.json of {src_dir} is not valid JSON ({e}); re-save the adapter") from None
                values = {
                    "name": name,
                    "version": version,
                    "domain": domain,
                    "kind": kind,
                    "adapter_type": adapter_type,
                    "adapter_config": _dumps(adapter_config),
                    "base_exact": fp.exact,
                    "base_family": fp.family,
                    "base_model": fp.base_model,
                    "recipe_text": recipe_text,
                    "recipe_hash": recipe_hash,
                    "metrics": _dumps(metrics),
                    "lineage": _dumps(lineage),
                    "origin": _dumps(origin),
                    "claimed_metrics": _dumps(claimed_metrics),
                    "file_hash": file_sha256(dest / METADATA_FILE),
                    "created": created,
                }
                self._insert(conn, values)
                conn.execute(
                    "INSERT INTO name_versions (name, last_version) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET last_version = excluded.last_version",
                    (name, version),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if written:
                    shutil.rmtree(dest, ignore_errors=True)
                raise
        return self.resolve(f"{name}:{version}")

    @staticmethod
    def _insert(conn: sqlite3.Connection, values: dict) -> None:
        cols = ", ".join(values)
        conn.execute(f"INSERT INTO adapters ({cols}) VALUES ({', '.join('?' * len(values))})", tuple(values.values()))

    def promote(self, ref: str, domain: str) -> AdapterRecord:
        """Make `ref` the default adapter for `domain` (the router's choice); a bare name pins its latest version."""
        _check_domain(domain)
        with self._write() as conn:
            rec = self._resolve(conn, ref)
            conn.execute(
                "INSERT INTO aliases (domain, name, version, promoted) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (domain) DO UPDATE SET name = excluded.name, version = excluded.version, promoted = excluded.promoted",
                (domain, rec.name, rec.version, _utc_now()),
            )
        return rec

    def remove(self, ref: str, force: bool = False) -> AdapterRecord:
        """Delete one version (row, then folder). Needs an explicit `name:<version>` or `name:latest`.

        Refuses an adapter promoted for some domain unless `force`, which also drops those aliases.
        """
        if isinstance(ref, str) and ":" not in ref:
            check_name(ref)
            raise RegistryError(f"remove deletes one version: write '{ref}:<version>' or '{ref}:latest'")
        with self._write() as conn:
            rec = self._resolve(conn, ref)
            domains = [
                r[0] for r in conn.execute("SELECT domain FROM aliases WHERE name = ? AND version = ? ORDER BY domain", (rec.name, rec.version))
            ]
            if domains and not force:
                raise RegistryError(
                    f"{rec.ref} is promoted for domain(s) {', '.join(domains)}; promote another adapter there first, or pass force=True (--force)"
                )
            conn.execute("DELETE FROM aliases WHERE name = ? AND version = ?", (rec.name, rec.version))
            conn.execute("DELETE FROM adapters WHERE name = ? AND version = ?", (rec.name, rec.version))
        # after the commit: a crash here leaves an orphan folder, which gc() removes
        shutil.rmtree(rec.path, ignore_errors=True)
        try:
            rec.path.parent.rmdir()
        except OSError:
            pass
        return rec

    def update_metrics(self, ref: str, metrics: dict) -> AdapterRecord:
        """Merge `metrics` into the row's metrics (same names are replaced). adaptrec.json keeps the registration-time ones."""
        metrics = _check_metrics(metrics)
        with self._write() as conn:
            rec = self._resolve(conn, ref)
            merged = {**rec.metrics, **metrics}
            conn.execute("UPDATE adapters SET metrics = ? WHERE name = ? AND version = ?", (_dumps(merged), rec.name, rec.version))
        return self.resolve(rec.ref)

    def gc(self) -> list[Path]:
        """Delete adapter folders no row points to and leftover `.tmp` folders; return what was deleted.

        Holds the write lock, so no registration is in flight: any `.tmp` folder is from a dead process.
        """
        removed: list[Path] = []
        if not self.adapters_dir.is_dir():
            return removed
        with self._write() as conn:
            rows = {(r[0], r[1]) for r in conn.execute("SELECT name, version FROM adapters")}
            for path, _ in self._strays(rows):
                _delete(path)
                removed.append(path)
            for entry in self.adapters_dir.iterdir():
                try:
                    entry.rmdir()  # only succeeds when empty
                except OSError:
                    pass
        return removed

    def _strays(self, rows: set[tuple[str, int]]) -> list[tuple[Path, str]]:
        """(folder, why) for every `.tmp` leftover and every version folder none of `rows` points to."""
        found: list[tuple[Path, str]] = []
        if not self.adapters_dir.is_dir():
            return found
        for entry in sorted(self.adapters_dir.iterdir()):
            if _unfinished(entry):
                found.append((entry, "an unfinished write"))
            elif entry.is_dir() and not entry.is_symlink():
                for sub in sorted(entry.iterdir()):
                    if _unfinished(sub):
                        found.append((sub, "an unfinished write"))
                    elif sub.is_dir() and sub.name.isdigit() and (entry.name, int(sub.name)) not in rows:
                        found.append((sub, "an orphan folder no registry row points to"))
        return found

    def verify(self) -> list[str]:
        """Re-hash every registered version and look for folders no row points to; one line per problem found.

        Reads only (nothing is repaired: `gc` removes orphans, a damaged version is re-registered or removed).
        """
        problems: list[str] = []
        records = self.list()
        for rec in records:
            try:
                verified_files(rec)
            except (AdaptrecError, OSError) as e:
                problems.append(f"{rec.ref}: {str(e).splitlines()[0]}")
        strays = self._strays({(r.name, r.version) for r in records})
        return problems + [f"{path}: {why} (remove it with `adaptrec registry gc`)" for path, why in strays]

    # ------------------------------------------------------------ reading
    def resolve(self, ref: str) -> AdapterRecord:
        """The record for `name`, `name:latest` or `name:<version>`; `RegistryError` if unknown."""
        with self._connect() as conn:
            return self._resolve(conn, ref)

    def load_verified(self, ref: str, backbone_fp: Fingerprint) -> AdapterRecord:
        """Resolve `ref`, recompute its files' hashes and check its base against `backbone_fp`.

        Raises `IntegrityError` (a file changed), `FingerprintMismatch` (other base model);
        warns `FamilyMatchWarning` when only the base family matches.
        """
        rec = self.resolve(ref)
        check_base(verified_files(rec), backbone_fp)
        return rec

    def list(self, domain: str | None = None, name: str | None = None) -> list[AdapterRecord]:
        """All adapter versions, ordered by name then version; optionally of one domain and/or name."""
        sql, args = "SELECT * FROM adapters", []
        where = []
        if domain is not None:
            where.append("domain = ?")
            args.append(domain)
        if name is not None:
            where.append("name = ?")
            args.append(check_name(name))
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as conn:
            return [self._record(r) for r in conn.execute(sql + " ORDER BY name, version", args)]

    def show(self, ref: str) -> dict:
        """The record as a plain dict plus `ref`, `path` and `promoted_for` (domains it is the default of)."""
        with self._connect() as conn:
            rec = self._resolve(conn, ref)
            domains = [
                r[0] for r in conn.execute("SELECT domain FROM aliases WHERE name = ? AND version = ? ORDER BY domain", (rec.name, rec.version))
            ]
        return {**rec.to_dict(), "promoted_for": domains}

    def promoted(self, domain: str) -> AdapterRecord | None:
        """The adapter promoted for `domain`, or None."""
        with self._connect() as conn:
            row = conn.execute("SELECT name, version FROM aliases WHERE domain = ?", (domain,)).fetchone()
            if row is None:
                return None
            return self._resolve(conn, f"{row[0]}:{row[1]}")

    def aliases(self) -> dict[str, str]:
        """{domain: "name:version"} for every promoted domain."""
        with self._connect() as conn:
            return {r[0]: f"{r[1]}:{r[2]}" for r in conn.execute("SELECT domain, name, version FROM aliases ORDER BY domain")}
