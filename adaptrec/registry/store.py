"""`Registry`: the SQLite index at `<home>/registry.db` and the adapter folders under `<home>/adapters/`."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from types import EllipsisType
from typing import Any

from adaptrec.adapters.check import base_change
from adaptrec.adapters.files import (
    METADATA_FILE,
    MIX_TYPE,
    check_base,
    file_sha256,
    finish_adapter_dir,
    stage_adapter_files,
)
from adaptrec.atomic import LOCK_SUFFIX, atomic_dir, dead_work, fsync_dir, fsync_tree, remove_work, umask, work_dir
from adaptrec.cf.base import Encoder
from adaptrec.cf.files import file_hashes, load_checked, save_encoder
from adaptrec.cf.fit import SOURCES, Fitted, scores_spec
from adaptrec.errors import AdaptrecError, IntegrityError, RegistryBusy, RegistryError, RegistryUnavailable, option
from adaptrec.fingerprint import Fingerprint
from adaptrec.home import adaptrec_home
from adaptrec.names import check_domain

from . import audit
from . import encoders as encoder_rows
from .encoders import EncoderRecord
from .records import AdapterRecord, Registration, check_name, dumps, parse_ref, row_fields, row_ref, row_values
from .schema import migrate, schema_version, stored_version
from .validation import (
    as_fingerprint,
    check_lineage,
    check_metrics,
    check_origin,
    check_recipe,
    check_source,
    check_type,
    registered_config,
    verified_files,
)


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")  # orders registrations within a second


STALE_SCRATCH_S = 24 * 3600  # a work folder under `Registry.scratch_dir` this old is from a killed process


def _unfinished(path: Path) -> bool:
    """A `.name.tmp` folder: a write a killed process never renamed into place."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _load_encoder_checked(record: EncoderRecord) -> Encoder:
    """The encoder `record` names, its files' hashes checked against its row."""
    what = f"what was registered as encoder {record.ref}; train it again with `adaptrec train-cf`"
    return load_checked(record.path, record.files, what)


class OtherBaseWarning(UserWarning):
    """A promotion whose version was made for another base model than the champion it replaced."""


def _warn_other_base(rec: AdapterRecord, champion: AdapterRecord, domain: str) -> None:
    """Warn when `rec` replaced a `champion` made for another base model: a server on the champion's backbone
    refuses it (a move to another backbone is the one reason to do it)."""
    if rec.fingerprint.match(champion.fingerprint) == "none":
        warnings.warn(f"{rec.ref} was made for {rec.fingerprint.base_model or 'another base model'}, the champion it "
                      f"replaced for {domain!r} ({champion.ref}) for {champion.fingerprint.base_model or 'another'}: "
                      "a server on the old backbone will not serve it", OtherBaseWarning, stacklevel=3)


class VersionRemoved(RegistryError):
    """A version was removed (by another process) while its files were being checked."""


def foreign_versions(records: list[AdapterRecord], repo: str) -> list[AdapterRecord]:
    """Those of `records` (one name's versions) not pulled from `repo`: made here, or pulled from elsewhere."""
    return [r for r in records if r.kind != "pulled" or (r.origin or {}).get("repo") != repo]


def describe_version(record: AdapterRecord) -> str:
    """`record`'s ref and where it came from, e.g. "m:1 (trained or made here)"."""
    where = "trained or made here" if record.kind != "pulled" else f"pulled from {record.origin['repo']}"
    return f"{record.ref} ({where})"


def _move_into_place(stage: Path, folder: Path) -> None:
    """Rename the finished, fsynced `stage` to `folder` (a leftover of a process killed between rename and commit is
    replaced), durably; the caller holds the write lock. A work folder on another file system is copied beside
    `folder` first (under the lock, then)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    fsync_dir(folder.parent.parent)  # a name's first version: its new folder survives a power loss too
    try:
        os.rename(stage, folder)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        with atomic_dir(folder) as copy:  # ($ADAPTREC_HOME/tmp mounted apart)
            shutil.copytree(stage, copy, dirs_exist_ok=True)
    fsync_dir(folder.parent)


def _refuse_case_clash(conn: sqlite3.Connection, table: str, name: str, what: str) -> None:
    """RegistryError for a `what` name differing from one in `table` only in letter case: one folder on a
    case-insensitive file system."""
    clash = conn.execute(f"SELECT name FROM {table} WHERE lower(name) = lower(?) AND name != ?", (name, name)).fetchone()
    if clash:
        raise RegistryError(f"{what} name {name!r} differs from the registered {clash[0]!r} only in letter case; "
                            "pick another name")


class Registry:
    """The SQLite adapter registry rooted at `home` (default `adaptrec_home()`)."""

    def __init__(self, home: Path | None = None, *, timeout: float = 60.0):
        self.home = (Path(home).expanduser() if home is not None else adaptrec_home()).absolute()
        self.home.mkdir(parents=True, exist_ok=True)
        self.db_path = self.home / "registry.db"
        self.adapters_dir = self.home / "adapters"
        self.encoders_dir = self.home / "encoders"
        self.scratch_dir = self.home / "tmp"  # in-flight work (a pull's download, a registration's copy)
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
            raise RegistryUnavailable(f"cannot open {self.db_path} ({e}); check ADAPTREC_HOME and its permissions") from None
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise RegistryBusy(
                    f"the registry at {self.db_path} stayed busy for {self.timeout:g}s "
                    "(another adaptrec process is writing); retry"
                ) from None
            raise RegistryUnavailable(f"the registry database {self.db_path} cannot be used ({e}); check "
                                      "ADAPTREC_HOME and its permissions") from None
        except sqlite3.IntegrityError:  # a constraint this code broke: not the file's fault
            raise
        except sqlite3.DatabaseError as e:  # not a database, or a damaged one
            raise RegistryUnavailable(f"{self.db_path} is not a readable registry database ({e}); restore it from a "
                                      "copy or point ADAPTREC_HOME elsewhere") from None
        finally:
            conn.close()

    @contextmanager
    def _write(self, on_abort: Callable[[], None] | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database's write lock from its first statement; on failure `on_abort`
        runs before the rollback releases the lock (unless SQLite already rolled back a failed COMMIT). An interrupt
        that arrives once COMMIT has returned undoes nothing: the row is in, so are its files."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            committing = False
            try:
                yield conn
                committing = True
                conn.execute("COMMIT")
            except BaseException as e:
                if committing and not isinstance(e, sqlite3.Error):  # was: on_abort removed a committed row's folder
                    raise  # (interrupted before COMMIT ran: closing the connection rolls back; an orphan folder stays)
                if on_abort is not None:
                    on_abort()
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _migrate(self) -> None:
        target = schema_version()
        with self._connect() as conn:
            current = stored_version(conn)
            if current == target:
                return
            if current > target:
                raise RegistryError(
                    f"{self.db_path} has schema version {current}, newer than this adaptrec understands ({target}); "
                    "upgrade adaptrec"
                )
        with self._write() as conn:
            migrate(conn)  # from the version it has now: another process may have migrated meanwhile

    # ------------------------------------------------------------ helpers
    def path_for(self, name: str, version: int) -> Path:
        return self.adapters_dir / check_name(name) / str(int(version))

    def _record(self, row: sqlite3.Row) -> AdapterRecord:
        d = row_fields(row)
        return AdapterRecord(**d, path=self.path_for(d["name"], d["version"]))

    def _resolve(self, conn: sqlite3.Connection, ref: str) -> AdapterRecord:
        return self._record(self._find_row(conn, ref))

    def _find_row(self, conn: sqlite3.Connection, ref: str) -> sqlite3.Row:
        """The `adapters` row `ref` names, unparsed (so an unreadable row can still be removed)."""
        name, version = parse_ref(ref)
        unknown = f"no adapter named '{name}' in {self.home}; see `adaptrec registry list` for the names"
        if version is None:
            sql = "SELECT * FROM adapters WHERE name = ? ORDER BY version DESC LIMIT 1"
            row = conn.execute(sql, (name,)).fetchone()
            if row is None:
                raise RegistryError(unknown)
            return row
        row = conn.execute("SELECT * FROM adapters WHERE name = ? AND version = ?", (name, version)).fetchone()
        if row is None:
            sql = "SELECT version FROM adapters WHERE name = ? ORDER BY version"
            versions = [r[0] for r in conn.execute(sql, (name,))]
            if not versions:
                raise RegistryError(unknown)
            raise RegistryError(
                f"adapter '{name}' has no version {version} (it has {', '.join(map(str, versions))}); "
                f"use one of those or '{name}:latest'"
            )
        return row

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
        expect_files: dict[str, str] | None = None,
        joins_repo: str | None = None,
    ) -> AdapterRecord:
        """Store a new version of adapter `name` and return its record.

        `src_dir` is a folder with peft files (or a callable `writer(folder)` / a peft model, see
        `write_adapter_dir`). The row records the written folder's adapter_config.json (a mix: `adapter_config`,
        its spec); a given `adapter_config` must agree with it (`registered_config`). `expect_files`: the
        sha256 each of these files was checked to have (a pull's manifest); a written copy that differs is refused.
        `joins_repo`: a pull under its published name, which joins only versions pulled from that repo
        (`foreign_versions`, checked under the write lock: of two pulls from two repos, one takes the name).
        The files are copied and checked into a work folder first, without the write lock (other writers wait only
        for the rename); then the version is allocated, the folder renamed into place and the row inserted in one
        transaction, and a failure there leaves neither row nor folder.
        """
        check_name(name)
        check_domain(domain)
        check_type(kind, adapter_type, adapter_config)
        entry = Registration(
            name=name, domain=domain, kind=kind, adapter_type=adapter_type, adapter_config=adapter_config,
            fingerprint=as_fingerprint(fingerprint), metrics=check_metrics(metrics),
            claimed_metrics=None if claimed_metrics is None else check_metrics(claimed_metrics),
            origin=check_origin(origin, kind), recipe_text=check_recipe(recipe_text),
            lineage=check_lineage(lineage, kind),
        )
        check_source(src_dir, adapter_type)
        written: list[Path] = []  # the folder, from before it is renamed (a failure after its rename removes it too)

        def remove_written() -> None:  # under the write lock: no other writer can have taken this version yet
            for folder in written:
                shutil.rmtree(folder, ignore_errors=True)

        with work_dir(self.scratch_dir, f"register-{name}-") as stage:
            files = stage_adapter_files(src_dir, stage, adapter_type, shown=self.adapters_dir / name)
            changed = sorted(rel for rel, sha in (expect_files or {}).items() if files.get(rel) != sha)
            if changed:  # the source folder changed between its check and this copy
                raise IntegrityError(f"{name}: {changed[0]} is not the file that was checked; nothing was registered")
            config = registered_config(entry.adapter_type, entry.adapter_config, stage, src_dir)
            changes = base_change(config, stage)
            if changes is not None:  # detaching it would not undo that: every later row would read a changed base
                raise RegistryError(f"{name}: {changes}")
            os.chmod(stage, 0o777 & ~umask())  # a new folder's mode under the umask (the work folder's: owner-only)
            fsync_tree(stage)
            with self._write(on_abort=remove_written) as conn:  # the write lock: from version allocation to commit
                entry, version = self._allocate(conn, entry, joins_repo)
                created = _utc_now()
                folder = self.path_for(name, version)
                written.append(folder)
                finish_adapter_dir(stage, entry.metadata(version, created), files)
                _move_into_place(stage, folder)
                record = entry.record(version, created, config, file_sha256(folder / METADATA_FILE), folder)
                self._insert(conn, record)
        return self.resolve(record.ref)

    def _allocate(self, conn: sqlite3.Connection, entry: Registration,
                  joins_repo: str | None = None) -> tuple[Registration, int]:
        """`entry` with its lineage parents resolved, and its version; refuses a name differing from a registered
        one only in letter case (one folder on a case-insensitive file system), and, with `joins_repo`, a name
        that has versions not pulled from that repo."""
        if entry.lineage is not None and entry.kind != "pulled":  # a pulled adapter's parents are its publisher's
            parents = [self._resolve(conn, p).ref for p in entry.lineage["parents"]]
            entry = replace(entry, lineage={**entry.lineage, "parents": parents})
        _refuse_case_clash(conn, "name_versions", entry.name, "adapter")
        if joins_repo is not None:
            rows = conn.execute("SELECT * FROM adapters WHERE name = ? ORDER BY version", (entry.name,)).fetchall()
            others = foreign_versions([self._record(row) for row in rows], joins_repo)
            if others:
                raise RegistryError(f"{joins_repo} publishes the name {entry.name!r}, which already names "
                                    f"{describe_version(others[-1])}; pull it under another name")
        row = conn.execute("SELECT last_version FROM name_versions WHERE name = ?", (entry.name,)).fetchone()
        return entry, (row[0] if row else 0) + 1

    @staticmethod
    def _insert(conn: sqlite3.Connection, record: AdapterRecord) -> None:
        """Insert `record`'s row and make its version the last one allocated for its name."""
        values = row_values(record)
        marks = ", ".join("?" * len(values))
        conn.execute(f"INSERT INTO adapters ({', '.join(values)}) VALUES ({marks})", tuple(values.values()))
        conn.execute(
            "INSERT INTO name_versions (name, last_version) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET last_version = excluded.last_version",
            (record.name, record.version),
        )

    def promote(self, ref: str, domain: str, evidence: dict | None = None,
                expect: str | None | EllipsisType = ...) -> AdapterRecord:
        """Make `ref` the default adapter for `domain` (the router's choice); a bare name pins its latest version.
        The decision, with `evidence` (e.g. the gate's test), goes to the domain's audit trail. `expect`: the
        champion the decision was made against (None: none); if another one serves by now, nothing is written."""
        check_domain(domain)
        with self._write() as conn:
            rec = self._resolve(conn, ref)
            self._check_champion(conn, domain, expect)
            champion = self._champion(conn, domain)
            replaced = self._resolve(conn, champion) if champion is not None else None
            self._set_alias(conn, domain, rec, "promote", evidence or {})
        if replaced is not None:
            _warn_other_base(rec, replaced, domain)
        return rec

    @staticmethod
    def _champion(conn: sqlite3.Connection, domain: str) -> str | None:
        row = conn.execute("SELECT name, version FROM aliases WHERE domain = ?", (domain,)).fetchone()
        return f"{row[0]}:{row[1]}" if row else None

    def _check_champion(self, conn: sqlite3.Connection, domain: str, expect: str | None | EllipsisType) -> None:
        if expect is not ... and self._champion(conn, domain) != expect:
            raise RegistryError(f"the champion of {domain!r} changed to {self._champion(conn, domain)} while this "
                                f"decision was made against {expect}; nothing recorded, run the gate again")

    def _set_alias(self, conn: sqlite3.Connection, domain: str, rec: AdapterRecord, action: str, evidence: dict) -> None:
        now, previous = _utc_now(), self._champion(conn, domain)
        conn.execute(
            "INSERT INTO aliases (domain, name, version, promoted) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (domain) DO UPDATE SET "
            "name = excluded.name, version = excluded.version, promoted = excluded.promoted",
            (domain, rec.name, rec.version, now),
        )
        audit.append(conn, domain, action, rec.ref, previous, evidence, now)

    def refuse(self, ref: str, domain: str, evidence: dict, expect: str | None | EllipsisType = ...) -> AdapterRecord:
        """Record that `ref` was not promoted for `domain`, and why (the champion stays); `expect` as for `promote`."""
        check_domain(domain)
        with self._write() as conn:
            rec = self._resolve(conn, ref)
            self._check_champion(conn, domain, expect)
            audit.append(conn, domain, "refuse", rec.ref, self._champion(conn, domain), evidence, _utc_now())
        return rec

    def rollback(self, domain: str) -> AdapterRecord:
        """Restore the champion `domain` had before the current one (skipping versions removed since or whose files
        changed, and the current one where it was champion before too)."""
        check_domain(domain)
        with self._write() as conn:
            stack = audit.champions(audit.history(conn, domain))
            current, skipped = stack.pop() if stack else None, []
            while stack:
                if stack[-1] == current:  # promoted again after a champion removed since: no earlier one there
                    skipped.append(stack.pop())  # skipped as the removed ones are, so the trail replays the stack
                    continue
                try:
                    rec = self._resolve(conn, stack[-1])
                    verified_files(rec)  # a version whose files changed cannot serve: skipped as a removed one is
                except (RegistryError, IntegrityError, OSError):  # (was: restored, the server refusing it)
                    skipped.append(stack.pop())
                    continue
                self._set_alias(conn, domain, rec, "rollback", {"rolled_back": current, "skipped": skipped})
                return rec
        raise RegistryError(f"domain {domain!r} has no earlier champion to roll back to "
                            "(see `adaptrec registry history`)")

    def history(self, domain: str) -> list[audit.Decision]:
        """Every champion decision of `domain`, oldest first."""
        check_domain(domain)
        with self._connect() as conn:
            return audit.history(conn, domain)

    # ------------------------------------------------------------ collaborative encoders
    def register_encoder(self, name: str, fitted: Fitted, window: str, metrics: dict) -> EncoderRecord:
        """Store a fitted encoder as the next version of `name` (files first, atomically; the row commits last)."""
        check_name(name, "encoder")
        folder: list[Path] = []  # set once the version is allocated

        def remove_written() -> None:  # under the write lock: no folder is left without its row
            for path in folder:
                remove_work(path)

        with self._write(on_abort=remove_written) as conn:
            _refuse_case_clash(conn, "encoders", name, "encoder")  # writing it would delete the other's files
            (last,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM encoders WHERE name = ?", (name,)).fetchone()
            dest = self.encoders_dir / name / str(last + 1)
            if dest.exists():  # a folder no row points to: a process killed before its row committed
                remove_work(dest)
            folder.append(dest)
            with atomic_dir(dest) as tmp:
                save_encoder(fitted.encoder, tmp, fitted.record["settings"])
                files = file_hashes(tmp)
            record = EncoderRecord(name, last + 1, fitted.encoder.kind, fitted.record["data"], fitted.record["ratings"],
                                   window, fitted.record["settings"], metrics, files, _utc_now(), dest)
            encoder_rows.insert(conn, record)
        return record

    def encoders(self, name: str | None = None, damaged: list[str] | None = None) -> list[EncoderRecord]:
        """Registered encoders (of `name`), newest version first within each name; a row that no longer parses is
        an IntegrityError, or with `damaged` a line there (`encoders.rows`)."""
        with self._connect() as conn:
            found = encoder_rows.rows(conn, name, damaged=damaged)
        return [EncoderRecord(**r, path=self.encoders_dir / r["name"] / str(r["version"])) for r in found]

    def encoders_for(self, spec: str) -> list[EncoderRecord]:
        """The latest version of each registered encoder that may score `spec`: a held-out split of its source."""
        latest: dict[str, EncoderRecord] = {}
        for record in self.encoders():  # newest version first within each name
            latest.setdefault(record.name, record)
        return [r for r in latest.values() if r.data in SOURCES and scores_spec(r.data, spec)]  # a row of
        # another version's sources is no encoder of this one

    def matching_encoders(self, kind: str, data_fingerprint: str, settings: dict) -> list[str]:
        """Refs of the registered encoders of this kind and settings fitted on exactly these interactions."""
        return [r.ref for r in self.encoders()
                if (r.kind, r.data_fingerprint, r.settings) == (kind, data_fingerprint, settings)]

    def load_encoder(self, ref: str) -> tuple[Encoder, EncoderRecord]:
        """The encoder `name[:version]` (latest by default), its files' hashes checked against its row."""
        name, version = parse_ref(ref)
        found = [r for r in self.encoders(name) if version is None or r.version == version]
        if not found:
            raise RegistryError(f"no encoder {ref!r} in {self.home}; see `adaptrec registry encoders`")
        record = found[0]
        return _load_encoder_checked(record), record

    def remove(self, ref: str, force: bool = False) -> str:
        """Delete one version (row, then folder) and return its `name:version`. Needs an explicit `name:<version>`
        or `name:latest`; a row whose JSON columns are unreadable (edited by hand) is removed too.

        Refuses an adapter promoted for some domain, a source of a registered score-level mix (which would stop
        serving), or one that other versions came from (the gate reads what they trained on through it), unless
        `force`, which also drops those aliases and records a `remove` decision in each domain's trail (the champion
        it leaves without one).
        """
        if isinstance(ref, str) and ":" not in ref:
            check_name(ref)
            raise RegistryError(f"remove deletes one version: write '{ref}:<version>' or '{ref}:latest'")
        with self._write() as conn:
            row = self._find_row(conn, ref)
            name, version, removed = row["name"], row["version"], row_ref(row)
            domains = self._promoted_for(conn, name, version)
            if domains and not force:
                raise RegistryError(
                    f"{removed} is promoted for domain(s) {', '.join(domains)}; promote another adapter there first, "
                    f"or pass {option('force', True)}"
                )
            mixes = self._mixes_of(conn, removed, skip=removed)
            if mixes and not force:
                raise RegistryError(f"{removed} is a source of the score-level mix(es) {', '.join(mixes)}, which "
                                    f"could not serve without it; remove them first, or pass {option('force', True)}")
            derived = self._derived_from(conn, removed)
            if derived and not force:
                raise RegistryError(f"{', '.join(derived)} came from {removed} (updated, exported, composed or "
                                    "distilled from it): the promotion gate reads through it what they trained on, and "
                                    f"would take that data for new to them; remove them first, or pass "
                                    f"{option('force', True)}")
            now = _utc_now()
            for domain in domains:
                audit.append(conn, domain, "remove", removed, removed, {"forced": True}, now)
            conn.execute("DELETE FROM aliases WHERE name = ? AND version = ?", (name, version))
            conn.execute("DELETE FROM adapters WHERE name = ? AND version = ?", (name, version))
        # after the commit: a crash here leaves an orphan folder, which gc() removes
        path = self.path_for(name, version)
        shutil.rmtree(path, ignore_errors=True)
        try:
            path.parent.rmdir()
        except OSError:
            pass
        return removed

    def update_metrics(self, ref: str, metrics: dict) -> AdapterRecord:
        """Merge `metrics` into the row's metrics (same names are replaced); adaptrec.json keeps the
        registration-time ones."""
        metrics = check_metrics(metrics)
        with self._write() as conn:
            rec = self._resolve(conn, ref)
            merged = {**rec.metrics, **metrics}
            conn.execute("UPDATE adapters SET metrics = ? WHERE name = ? AND version = ?",
                         (dumps(merged), rec.name, rec.version))
        return self.resolve(rec.ref)

    def gc(self) -> list[Path]:
        """Delete adapter and encoder folders no row points to, leftover `.tmp` folders and dead processes' work
        folders; return what was deleted.

        Holds the write lock, so no folder is being renamed into place: any `.tmp` folder is from a dead process; a
        work folder (`Registry.scratch_dir`: a pull's download, a registration's copy) is dead once its lock is free.
        """
        removed: list[Path] = []
        with self._write() as conn:
            for path, _ in self._strays(lambda: self._versions(conn)):
                remove_work(path)  # a work folder: its lock too
                removed.append(path)
            for root in (self.adapters_dir, self.encoders_dir):
                for entry in root.iterdir() if root.is_dir() else ():
                    try:
                        entry.rmdir()  # only succeeds when empty
                    except OSError:
                        pass
        return removed

    @staticmethod
    def _versions(conn: sqlite3.Connection) -> dict[str, set[tuple[str, int]]]:
        """The (name, version) of every adapter and encoder row, by table."""
        return {table: {(r[0], r[1]) for r in conn.execute(f"SELECT name, version FROM {table}")}
                for table in ("adapters", "encoders")}

    def _strays(self, versions: Callable[[], dict[str, set[tuple[str, int]]]]) -> list[tuple[Path, str]]:
        """(folder, why) for every `.tmp` leftover, every adapter or encoder version folder no row points to and every
        work folder whose process is gone (`atomic.dead_work`; one made without a lock: a day old). The caller holds
        the write lock, so no folder is being renamed into place; `versions` (`_versions`) is read after the folders
        are listed."""
        found: list[tuple[Path, str]] = []
        versioned: list[tuple[str, Path]] = []  # (table, version folder)
        for root, table in ((self.adapters_dir, "adapters"), (self.encoders_dir, "encoders")):
            for entry in sorted(root.iterdir()) if root.is_dir() else ():
                if _unfinished(entry):
                    found.append((entry, "an unfinished write"))
                elif entry.is_dir() and not entry.is_symlink():
                    for sub in sorted(entry.iterdir()):
                        if _unfinished(sub):
                            found.append((sub, "an unfinished write"))
                        elif sub.is_dir() and sub.name.isascii() and sub.name.isdigit():
                            versioned.append((table, sub))
        for entry in dead_work(self.scratch_dir, stale_s=STALE_SCRATCH_S):
            found.append((entry, "the lock file of a killed process's work" if entry.name.endswith(LOCK_SUFFIX) else
                          "a work folder a killed process left (a pull's download or a registration's copy)"))
        rows = versions()
        return found + [(sub, "an orphan folder no registry row points to") for table, sub in versioned
                        if sub.name != str(int(sub.name)) or (sub.parent.name, int(sub.name)) not in rows[table]]

    def verify(self) -> list[str]:
        """Re-hash every registered adapter and encoder version, read every decision's evidence and look for folders
        no row points to; one line per problem found.

        Repairs nothing (`gc` removes orphans, a damaged version is re-registered or removed). Its folder scan holds
        the write lock, as `gc`'s does, and writes nothing: a registration in flight (its work folder, locked by its
        process, or its folder renamed into place before its row commits) is no problem found.
        """
        problems: list[str] = []
        records: list[AdapterRecord] = []
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM adapters ORDER BY name, version").fetchall()
        for row in rows:
            try:
                records.append(self._record(row))
            except IntegrityError as e:  # a row edited by hand: its files cannot be checked against it
                problems.append(str(e))
        registered = {row_ref(row) for row in rows}
        for rec in records:
            try:
                self._files_of(rec)
            except VersionRemoved:  # removed while it was checked: no longer registered, so no problem
                continue
            except (AdaptrecError, OSError) as e:
                problems.append(f"{rec.ref}: {str(e).splitlines()[0]}")
            sources = (rec.adapter_config or {}).get("sources", ()) if rec.adapter_type == MIX_TYPE else ()
            missing = [s for s in sources if s not in registered]
            if missing:  # a forced removal of a source
                problems.append(f"{rec.ref}: a mix of {', '.join(missing)}, no longer registered; it cannot serve "
                                "(remove it, or compose it again)")
        damaged: list[str] = []
        for enc in self.encoders(damaged=damaged):
            try:
                _load_encoder_checked(enc)
            except (AdaptrecError, OSError) as e:
                problems.append(f"encoder {enc.ref}: {str(e).splitlines()[0]}")
        problems += damaged
        with self._connect() as conn:  # decisions whose evidence `history` cannot read
            problems += audit.damaged(conn)
        with self._write() as conn:
            strays = self._strays(lambda: self._versions(conn))
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
        check_base(self._files_of(rec), backbone_fp)
        return rec

    def _files_of(self, rec: AdapterRecord) -> dict:
        """`verified_files(rec)`; a version removed meanwhile (its folder went after its row) is a `RegistryError`
        (`VersionRemoved`) saying so, not an `IntegrityError` calling its files modified."""
        try:
            return verified_files(rec)
        except (AdaptrecError, OSError):
            if not self._registered(rec):
                raise VersionRemoved(f"{rec.ref} was removed while its files were being checked") from None
            raise

    def _registered(self, rec: AdapterRecord) -> bool:
        """Whether `rec`'s row is still registered."""
        with self._connect() as conn:
            return conn.execute("SELECT 1 FROM adapters WHERE name = ? AND version = ?",
                                (rec.name, rec.version)).fetchone() is not None

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

    def counts(self) -> tuple[int, int]:
        """How many adapter versions and encoder versions are registered (rows, read or not)."""
        with self._connect() as conn:
            adapters, encoders = (conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                                  for t in ("adapters", "encoders"))
        return adapters, encoders

    def show(self, ref: str) -> dict:
        """The record as a plain dict plus `ref`, `path` and `promoted_for` (domains it is the default of)."""
        with self._connect() as conn:
            rec = self._resolve(conn, ref)
            domains = self._promoted_for(conn, rec.name, rec.version)
        return {**rec.to_dict(), "promoted_for": domains}

    @staticmethod
    def _derived_from(conn: sqlite3.Connection, ref: str) -> list[str]:
        """The versions registered here whose lineage names `ref` as what they were updated from or a parent; a row
        whose lineage no longer parses names none."""
        out = []
        for row in conn.execute("SELECT name, version, kind, lineage FROM adapters ORDER BY name, version"):
            with suppress(TypeError, ValueError):
                lineage = json.loads(row["lineage"] or "{}")
                if row["kind"] != "pulled" and isinstance(lineage, dict) and (
                        lineage.get("updated_from") == ref or ref in (lineage.get("parents") or ())):
                    out.append(f"{row['name']}:{row['version']}")
        return out

    def _mixes_of(self, conn: sqlite3.Connection, ref: str, skip: str | None = None) -> list[str]:
        """The registered score-level mixes naming `ref` among their sources; the mix `skip` is not read."""
        rows = conn.execute("SELECT * FROM adapters WHERE adapter_type = ? ORDER BY name, version", (MIX_TYPE,))
        mixes = (self._record(r) for r in rows if row_ref(r) != skip)
        return [m.ref for m in mixes if ref in (m.adapter_config or {}).get("sources", ())]

    @staticmethod
    def _promoted_for(conn: sqlite3.Connection, name: str, version: int) -> list[str]:
        """The domains `name:version` is promoted for, sorted."""
        sql = "SELECT domain FROM aliases WHERE name = ? AND version = ? ORDER BY domain"
        return [r[0] for r in conn.execute(sql, (name, version))]

    def promoted(self, domain: str) -> AdapterRecord | None:
        """The adapter promoted for `domain`, or None."""
        with self._connect() as conn:
            ref = self._champion(conn, domain)
            return None if ref is None else self._resolve(conn, ref)

    def aliases(self) -> dict[str, str]:
        """{domain: "name:version"} for every promoted domain."""
        return {domain: ref for domain, (ref, _) in self.promotions().items()}

    def promotions(self) -> dict[str, tuple[str, str]]:
        """{domain: ("name:version", a mark of the promotion that made it champion)} for every promoted domain. The
        mark changes with every promotion or rollback of the domain, the same version promoted again included, and
        with nothing else: the audit trail's sequence number of that decision, and its time (the time alone for an
        alias set before the trail)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT a.domain, a.name, a.version, a.promoted, (SELECT MAX(d.seq) FROM decisions d "
                "WHERE d.domain = a.domain AND d.action IN ('promote', 'rollback')) FROM aliases a ORDER BY a.domain")
            return {r[0]: (f"{r[1]}:{r[2]}", r[3] if r[4] is None else f"{r[3]} #{r[4]}") for r in rows}
