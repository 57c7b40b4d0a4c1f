"""Pull an adapter from a Hub repo or an offline mirror folder, verify it, register it as kind "pulled".

Order of checks, each before anything is registered:
1. the revision is pinned (a Hub branch or tag is resolved to its commit sha once; every file is
   downloaded at that commit) and the repo's file list is read;
2. every file name is a plain relative path (no `..`, absolute path, backslash; no symlink or special
   file in a mirror) and no file is a pickle-format weight file (`.bin .pt .pth .pkl .pickle .ckpt`);
3. `adaptrec.json` is read (after its size is checked): its `files` table (name -> sha256) is the
   manifest; every name in it passes the same checks, is on the adapter type's allow-list
   (`adapters.files.published_files`; a score-level `mix` is refused) and exists in the repo, and the
   files' sizes are within `PullLimits` (per file and in total) before any is downloaded;
   after download, `adapter_config.json` is checked against the tensors (peft type, target modules,
   ranks) and the tensors against the base architecture (`adapters.check`, headers only);
4. the adapter's base fingerprint is compared with the local backbone's by family (an exact match is
   not expected across machines); another family is refused unless `force`;
5. only the manifest's files are downloaded, into a temporary folder under $ADAPTREC_HOME/tmp, and
   each one's sha256 is checked;
6. `Registry.register(kind="pulled", origin={repo, revision, ...})` writes the registry's own copy.
Any failure removes the temporary folder, so a failed pull leaves no files and no registry row.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..adapters.check import check_adapter_folder
from ..adapters.files import FORMAT_VERSION, METADATA_FILE, MIX_TYPE, file_sha256, published_files, required_files
from ..atomic import work_dir
from ..errors import FingerprintMismatch, IntegrityError, RegistryError, option
from ..fingerprint import Fingerprint
from ..registry import AdapterRecord, Registry
from ..registry.store import describe_version, foreign_versions
from ..registry.validation import check_lineage, check_metrics
from ..userfiles import parse_json
from .common import (
    DEFAULT_BRANCH,
    HUB_RULES,
    HubError,
    check_branch,
    check_mirror_revision,
    hf_api,
    hub_errors,
    is_pickle_name,
    is_repo_id,
    public_endpoint,
    resolve_endpoint,
    unsafe_path_reason,
)
from .push import MIRROR_REFS

COPY_CHUNK = 1 << 20  # bytes a mirror file is copied in
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


MIB = 1 << 20


@dataclass(frozen=True)
class PullLimits:
    """Size limits checked before anything is downloaded or copied (env: ADAPTREC_PULL_MAX_FILE_MB, _TOTAL_MB)."""

    max_file_bytes: int = 512 * MIB
    max_total_bytes: int = 1024 * MIB

    @classmethod
    def from_env(cls) -> "PullLimits":
        def mib(var: str, default: int) -> int:
            text = os.environ.get(var)
            if text is None:
                return default
            if not (text.isascii() and text.isdigit()) or int(text) < 1:  # isdigit alone takes '²', int() does not
                raise HubError(f"${var}={text!r}: expected a whole number of MiB, e.g. 512")
            return int(text) * MIB
        return cls(mib("ADAPTREC_PULL_MAX_FILE_MB", cls.max_file_bytes), mib("ADAPTREC_PULL_MAX_TOTAL_MB", cls.max_total_bytes))

    def check(self, sizes: dict[str, int | None], label: str, outcome: str = "nothing was downloaded") -> None:
        """Refuse a file or a total over the limits (sizes the source does not tell are checked after download,
        with `outcome` saying what became of the files)."""
        for rel, size in sorted(sizes.items()):
            if size is not None and size > self.max_file_bytes:
                raise HubError(f"{label}: '{rel}' is {size / MIB:.1f} MiB, over the {self.max_file_bytes // MIB} MiB limit "
                               f"per file ($ADAPTREC_PULL_MAX_FILE_MB); {outcome}")
        total = sum(s for s in sizes.values() if s is not None)
        if total > self.max_total_bytes:
            raise HubError(f"{label}: the adapter's files are {total / MIB:.1f} MiB, over the {self.max_total_bytes // MIB} "
                           f"MiB limit ($ADAPTREC_PULL_MAX_TOTAL_MB); {outcome}")


@dataclass(frozen=True)
class PullResult:
    record: AdapterRecord
    match: str  # the adapter's base vs the local backbone: "exact", "family", or "none" (only with force)
    origin: dict


# ---------------------------------------------------------------- sources
class _HubSource:
    def __init__(self, repo_id: str, revision: str | None, endpoint: str | None):
        self.repo_id = repo_id
        self.requested = check_branch(revision, pull=True) if revision else DEFAULT_BRANCH
        self.endpoint = resolve_endpoint(endpoint)
        self.commit: str | None = None
        self.workdir: Path | None = None
        self.label = f"{repo_id}@{self.requested}"

    def _errors(self):
        return hub_errors(f"pull {self.label}", self.repo_id, self.endpoint, self.requested)

    def listing(self) -> dict[str, int | None]:
        """{file name: size in bytes, or None when the Hub does not say}."""
        with self._errors():
            info = hf_api(self.endpoint).model_info(self.repo_id, revision=self.requested, files_metadata=True)
        if not info.sha:
            raise HubError(f"pull {self.label}: {public_endpoint(self.endpoint)} did not say which commit that is; retry")
        self.commit = info.sha  # pinned: every file below is fetched at this commit
        self.label = f"{self.repo_id}@{self.commit[:12]}"
        return {s.rfilename: s.size for s in info.siblings or []}

    def fetch(self, rel: str, dest: Path, listed: int | None = None) -> None:
        from huggingface_hub import hf_hub_download

        from .. import __version__

        with self._errors():
            path = hf_hub_download(
                self.repo_id, rel, revision=self.commit, local_dir=self.workdir, endpoint=self.endpoint,
                library_name="adaptrec", library_version=__version__,
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, dest)

    def origin(self) -> dict:
        return {"source": "hub", "repo": self.repo_id, "revision": self.commit, "requested": self.requested,
                "endpoint": public_endpoint(self.endpoint)}


class _MirrorSource:
    def __init__(self, path: Path, revision: str | None):
        path = Path(path).expanduser()
        if revision is None and (path / METADATA_FILE).is_file():  # a revision folder itself
            self.repo_dir, revision = path.parent, path.name
        else:
            self.repo_dir = path
            revision = revision or self._latest()
        self.revision = check_mirror_revision(revision)
        self.rev_dir = self.repo_dir / self.revision
        self.label = f"{self.repo_dir}@{self.revision}"
        if self.rev_dir.is_symlink():
            raise HubError(f"mirror {self.repo_dir}: revision {self.revision!r} is a symbolic link, which a pull never "
                           "follows; copy the folder there")
        if not self.rev_dir.is_dir():
            raise HubError(f"mirror {self.repo_dir} has no revision folder {self.revision!r} (it has: "
                           f"{', '.join(self._revisions()) or 'none'})")
        self.workdir: Path | None = None

    def _revisions(self) -> list[str]:
        """The revision folders a pull may read (no hidden staging folder, no link)."""
        if not self.repo_dir.is_dir():
            return []
        return sorted(p.name for p in self.repo_dir.iterdir()
                      if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))

    def _latest(self) -> str:
        refs = self.repo_dir / MIRROR_REFS
        if refs.is_file():
            try:
                latest = json.loads(refs.read_text(encoding="utf-8")).get("latest")
            except PermissionError:
                raise HubError(f"mirror {self.repo_dir}: {MIRROR_REFS} is not readable; ask its publisher for read "
                               "access") from None
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                latest = None
            if isinstance(latest, str) and latest:
                return latest
        revisions = self._revisions()
        if len(revisions) == 1:
            return revisions[0]
        if not revisions:
            raise HubError(f"mirror {self.repo_dir}: it holds no revision to pull "
                           "(`adaptrec hub push --to` writes one)")
        raise HubError(f"mirror {self.repo_dir}: say which revision to pull, e.g. {self.repo_dir}@{revisions[-1]} "
                       f"(it has: {', '.join(revisions)})")

    def listing(self) -> dict[str, int | None]:
        """{file name: size in bytes}; a link or a special file (FIFO, device, socket) is refused."""
        out: dict[str, int | None] = {}
        for dirpath, dirnames, filenames in os.walk(self.rev_dir):  # does not follow links
            for entry in dirnames + filenames:
                full = Path(dirpath) / entry
                rel = full.relative_to(self.rev_dir).as_posix()
                if full.is_symlink():
                    raise HubError(f"{self.label}: '{rel}' is a symbolic link, which could point outside the folder; "
                                   "a mirror holds plain files only. Nothing was registered")
                if entry in filenames:
                    mode = full.lstat().st_mode
                    if not stat.S_ISREG(mode):
                        raise HubError(f"{self.label}: '{rel}' is not a regular file (a pipe, device or socket); "
                                       "a mirror holds plain files only. Nothing was registered")
                    out[rel] = full.lstat().st_size
        return out

    def fetch(self, rel: str, dest: Path, listed: int | None = None) -> None:
        """Copy `rel` into `dest`: a regular file, opened without following a link, no more bytes than `listed` (its
        size when listed: a file that grew or was swapped since is refused before it fills the disk)."""
        src = (self.rev_dir / rel).resolve()
        if self.rev_dir.resolve() not in src.parents:
            raise HubError(f"{self.label}: '{rel}' resolves outside the revision folder. Nothing was registered")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f, open(dest, "wb") as out:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise HubError(f"{self.label}: '{rel}' is no longer a regular file. Nothing was registered")
            limit = None if listed is None else listed + 1
            while chunk := f.read(COPY_CHUNK if limit is None else min(COPY_CHUNK, limit - out.tell())):
                out.write(chunk)
            if limit is not None and out.tell() >= limit:
                raise HubError(f"{self.label}: '{rel}' grew past the {listed} bytes it had when listed (changed "
                               "during the pull). Nothing was registered")

    def origin(self) -> dict:
        return {"source": "mirror", "repo": str(self.repo_dir.resolve()), "revision": self.revision}


class ReadAsHubRepoWarning(UserWarning):
    """A source spelt like a mirror folder whose first part is a local folder is read as a Hub repo."""


def _hub_source(repo_id: str, revision: str | None, endpoint: str | None) -> _HubSource:
    """The Hub repo `repo_id`, with a warning when its first part is a local folder: a mistyped mirror path
    (`adapters_hub/movie-lora` run from elsewhere) would otherwise fail as a network error."""
    owner = repo_id.split("/", 1)[0]
    if Path(owner).expanduser().is_dir():
        warnings.warn(f"there is no folder {repo_id} here ({owner} is a local folder), so {repo_id} is read as a Hub "
                      "repo", ReadAsHubRepoWarning, stacklevel=4)
    return _HubSource(repo_id, revision, endpoint)


def _open_source(source: str, endpoint: str | None):
    if not source.strip():  # Path("") is the current folder
        raise HubError("hub pull: give ORG/NAME[@REVISION] (a Hub repo) or the PATH of a mirror folder")
    path = Path(source).expanduser()
    if path.is_dir():
        return _MirrorSource(path, None)
    base, sep, rev = source.rpartition("@")
    if sep:
        if not rev or not base:
            raise HubError(f"{source!r}: write ORG/NAME@REVISION (or PATH@REVISION) with both parts")
        if Path(base).expanduser().is_dir():
            return _MirrorSource(Path(base), rev)
        if is_repo_id(base):
            return _hub_source(base, rev, endpoint)
    elif is_repo_id(source):
        return _hub_source(source, None, endpoint)
    raise HubError(f"{source!r} is neither a mirror folder nor a Hub repo: write ORG/NAME[@REVISION] ({HUB_RULES}) "
                   "or a mirror PATH[@REVISION]")


# ---------------------------------------------------------------- checks
def _check_names(names, label: str, what: str) -> None:
    for rel in names:
        reason = unsafe_path_reason(rel)
        if reason:
            raise HubError(f"{label}: {what} {rel!r} ({reason}), a name that could be written outside the target "
                           "folder; refusing this repo. Nothing was registered")
    for rel in names:
        if is_pickle_name(rel):
            raise HubError(f"{label}: {what} {rel!r}, a pickle-format file (it can run code when loaded); adaptrec "
                           "only pulls safetensors adapters: ask the publisher to re-save with safetensors. Nothing was "
                           "registered")


def _read_manifest(path: Path, listing: list[str], label: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise IntegrityError(f"{label}: {METADATA_FILE} is not UTF-8 text (byte {e.start}); ask the publisher to push "
                             "again") from None
    meta = parse_json(text, f"{label}: {METADATA_FILE}", IntegrityError)
    if not isinstance(meta, dict):
        raise IntegrityError(f"{label}: {METADATA_FILE} is not a JSON object; ask the publisher to push again")
    if isinstance(meta.get("format"), int) and meta["format"] > FORMAT_VERSION:
        raise HubError(f"{label}: made by a newer adaptrec (format {meta['format']}, this one reads {FORMAT_VERSION}); upgrade adaptrec")
    for key in ("domain", "adapter_type"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise IntegrityError(f"{label}: {METADATA_FILE} has no '{key}'")
    files = meta.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) and _SHA256_RE.fullmatch(v) for v in files.values()):
        raise IntegrityError(f"{label}: {METADATA_FILE} has no valid 'files' table (name -> sha256); ask the publisher to push again")
    _check_names(list(files), label, f"{METADATA_FILE} lists")
    if meta.get("adapter_type") == MIX_TYPE:
        raise HubError(f"{label}: a score-level mix names adapters of its publisher's registry, which this one does "
                       "not hold; pull its sources and compose them here (adaptrec compose --method mix)")
    allowed = published_files(meta.get("adapter_type"))
    if allowed is None:
        raise HubError(f"{label}: adapter type {meta.get('adapter_type')!r} cannot be pulled (known: lora, adalora, "
                       "prefix, collab)")
    extra = sorted(set(files) - set(allowed))
    if extra:
        raise HubError(f"{label}: {METADATA_FILE} lists {', '.join(extra)}, which a {meta['adapter_type']} adapter does not "
                       f"carry (allowed: {', '.join(allowed)}). Nothing was registered")
    missing = [r for r in required_files(meta.get("adapter_type")) if r not in files]
    if missing:
        raise IntegrityError(f"{label}: {METADATA_FILE} does not list {', '.join(missing)}; not a complete peft adapter")
    absent = sorted(set(files) - set(listing))
    if absent:
        raise IntegrityError(f"{label}: {METADATA_FILE} lists {', '.join(absent)}, which the repo does not hold; ask the publisher to push again")
    base = meta.get("base")
    if not isinstance(base, dict) or not all(isinstance(base.get(k), str) and base[k] for k in ("exact", "family")) \
            or not isinstance(base.get("base_model", ""), str):
        raise IntegrityError(f"{label}: {METADATA_FILE} records no base fingerprint (base.exact and base.family as "
                             "text, base.base_model text if given)")
    derived = meta.setdefault("derived_from", [])  # a manifest pushed before it was published: none listed
    if not isinstance(derived, list) or not all(isinstance(b, str) for b in derived):
        raise IntegrityError(f"{label}: {METADATA_FILE}'s 'derived_from' is not a list of base model names")
    try:  # what registering checks again, named here with the file (was: the bare check, after the download)
        check_metrics(meta.get("metrics") or None)
        check_lineage(meta.get("lineage"), "pulled")
    except RegistryError as e:
        raise IntegrityError(f"{label}: {METADATA_FILE}: {e}") from None
    return meta


# ---------------------------------------------------------------- pull steps
def _fetch_manifest(src: _HubSource | _MirrorSource, sizes: dict[str, int | None], limits: PullLimits,
                    dest: Path) -> dict:
    """Check the repo's file names, download `adaptrec.json` to `dest` and return it, checked."""
    listing = list(sizes)
    _check_names(listing, src.label, "the repo holds")
    limits.check({METADATA_FILE: sizes.get(METADATA_FILE)}, src.label)
    if METADATA_FILE not in listing:
        raise HubError(f"{src.label}: no {METADATA_FILE}, so not an adaptrec adapter (a plain peft adapter has no base "
                       "fingerprint to check); load it with peft directly, or register it with Registry.register")
    src.fetch(METADATA_FILE, dest)
    limits.check({METADATA_FILE: dest.stat().st_size}, src.label, "nothing was registered")  # a size not told
    return _read_manifest(dest, listing, src.label)


def _base_match(meta: dict, local_fp: Fingerprint, force: bool, label: str) -> tuple[Fingerprint, str]:
    """The adapter's base fingerprint and how it matches the local backbone's; another family needs `force`."""
    adapter_fp = Fingerprint.from_dict(meta["base"])
    match = local_fp.match(adapter_fp)
    if match == "none" and not force:
        raise FingerprintMismatch(
            f"{label} was made for base model {adapter_fp.base_model or '?'} (family {adapter_fp.family[:12]}), "
            f"not the local backbone {local_fp.base_model or '?'} (family {local_fp.family[:12]}); "
            f"pull with {option('backbone')} set to that model, or pass {option('force', True)} to register it anyway. "
            "Nothing was registered"
        )
    return adapter_fp, match


def _download(src: _HubSource | _MirrorSource, meta: dict, sizes: dict[str, int | None], limits: PullLimits,
              stage: Path) -> None:
    """Download the manifest's files into `stage` (a new folder), each within the limits and matching its sha256."""
    limits.check({rel: sizes.get(rel) for rel in meta["files"]}, src.label)
    stage.mkdir()
    fetched: dict[str, int | None] = {}
    for rel, expected in sorted(meta["files"].items()):
        src.fetch(rel, stage / rel, sizes.get(rel))
        fetched[rel] = (stage / rel).stat().st_size
        limits.check(fetched, src.label, "nothing was registered")  # sizes the Hub did not tell, and their sum
        if file_sha256(stage / rel) != expected:
            raise IntegrityError(f"{src.label}: '{rel}' does not match the sha256 in {METADATA_FILE} (corrupted or "
                                 "tampered with); nothing was registered")


def _as_loaded(backbone: str) -> str:
    """A backbone name as a later command in any folder loads it: a local folder by its absolute path (`models/tiny`
    typed here would read there as the Hub id `models/tiny`)."""
    folder = Path(backbone).expanduser()
    return str(folder.absolute()) if folder.is_dir() else backbone


def _published_name(meta: dict, src) -> str:
    """The name the manifest publishes, for a pull given none (was: "publishes the name None", or every adapter
    listed as its versions)."""
    published = meta.get("name")
    if not isinstance(published, str) or not published:
        raise IntegrityError(f"{src.label}: {METADATA_FILE} publishes no 'name'; pull it under one with "
                             f"{option('name')}")
    return published


def _check_published_name(registry: Registry, published: str, src) -> None:
    """A pull under the name its publisher gave joins that name's versions only when every one came from the same
    repo: the publisher's name must not become the newest version of an adapter trained here or pulled from
    elsewhere, which every bare reference, a promotion or an update would then take."""
    others = foreign_versions(registry.list(name=published), src.origin()["repo"])
    if others:
        raise HubError(f"{src.label} publishes the name {published!r}, which already names "
                       f"{describe_version(others[-1])}; pull it under another name with {option('name')}")


def _register(registry: Registry, stage: Path, meta: dict, name: str | None, adapter_fp: Fingerprint,
              origin: dict) -> AdapterRecord:
    """Register the verified `stage` folder as kind "pulled", under `name` or the published one."""
    return registry.register(
        stage, name=name or meta.get("name"), domain=meta["domain"], kind="pulled",
        adapter_type=meta["adapter_type"], adapter_config=None, fingerprint=adapter_fp,
        recipe_text=meta.get("recipe"), claimed_metrics=meta.get("metrics") or None, lineage=meta.get("lineage"),
        origin=origin, expect_files=meta["files"], joins_repo=None if name else origin["repo"],
    )


# ---------------------------------------------------------------- pull
def pull(
    source: str,
    *,
    name: str | None = None,
    backbone: str | None = None,
    quantization: str = "8bit",
    force: bool = False,
    endpoint: str | None = None,
    registry: Registry | None = None,
    backbone_fp: Fingerprint | None = None,
    limits: PullLimits | None = None,
) -> PullResult:
    """Pull `ORG/NAME[@REVISION]` (Hub) or `PATH[@REVISION]` (mirror), verify it, register it as kind "pulled".

    The base check uses `backbone_fp`, else the fingerprint of `backbone` (default: the embedded one)
    at `quantization`, computed without loading weights (an embedded backbone's first use converts it once), after the
    manifest is read. `force` registers an adapter of another
    base family anyway (every later load still checks the fingerprint and refuses it on this backbone).
    """
    from ..backbone import EMBEDDED, backbone_config, backbone_fingerprint

    registry = registry or Registry()
    limits = limits or PullLimits.from_env()
    src = _open_source(source, endpoint)
    if name is not None:
        from ..names import check_name

        check_name(name)
    with work_dir(registry.scratch_dir, "pull-") as work:  # a killed pull's: `registry gc` knows it by its free lock
        src.workdir = work / "download"
        sizes = src.listing()
        meta = _fetch_manifest(src, sizes, limits, work / METADATA_FILE)
        published = _published_name(meta, src) if name is None else None  # before the download and the backbone
        # after the manifest: an embedded backbone's first use converts it, which a broken source should not wait on
        local_fp = backbone_fp or backbone_fingerprint(backbone or EMBEDDED, quantization)
        # the architecture the tensors must fit; a caller that passes only a fingerprint checks config vs tensors only
        base_config = backbone_config(backbone or EMBEDDED) if backbone_fp is None or backbone else None
        adapter_fp, match = _base_match(meta, local_fp, force, src.label)
        stage = work / "stage"
        _download(src, meta, sizes, limits, stage)
        # a forced adapter of another family fits its own base, not this one: config against tensors only
        check_adapter_folder(stage, meta["adapter_type"], src.label, None if match == "none" else base_config)
        origin = {**src.origin(), "published_as": f"{meta.get('name')}:{meta.get('version')}",
                  "adaptrec_json_sha256": file_sha256(work / METADATA_FILE), "derived_from": meta["derived_from"],
                  # what later commands load it on: its recipe's backbone is the publisher's word, never fetched
                  "checked_on": {"quantization": quantization,
                                 **({"backbone": _as_loaded(backbone or EMBEDDED)}
                                    if backbone or backbone_fp is None else {})}}
        if published is not None:
            _check_published_name(registry, published, src)
        record = _register(registry, stage, meta, name, adapter_fp, origin)
    return PullResult(record, match, origin)
