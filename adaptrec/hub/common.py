"""What push and pull share: the Hub endpoint and client, error translation, path and name rules.

Tokens are never handled here: `huggingface_hub` finds them itself (`HF_TOKEN`, then the
`hf auth login` cache), and adaptrec never prints, logs or writes one. Error messages are built
from status codes and repo names, and any text taken from an exception is scrubbed of the token.
"""

from __future__ import annotations

import errno
import os
import re
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

from ..adapters.files import PICKLE_SUFFIXES
from ..errors import AdaptrecError, option

DEFAULT_BRANCH = "main"
CARD_FILE = "README.md"
HUB_ONLY_FILES = frozenset({".gitattributes", CARD_FILE})  # in a repo, never part of the adapter
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO_ID_RE = re.compile(rf"{_PART}/{_PART}")
_BRANCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
_MIRROR_REV_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class HubError(AdaptrecError):
    """A push or pull failed: the Hub refused (token, permissions, unknown repo) or a repo is unsafe."""


def is_repo_id(value: str | None, hub: bool = True) -> bool:
    """`org/name` as the Hub spells repo ids: adaptrec's shape, and with `hub` what `huggingface_hub` accepts too
    (HUB_RULES), which it checks before any request (a mirror's folder names need only the shape)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not (isinstance(value, str) and _REPO_ID_RE.fullmatch(value) and ".." not in value):
        return False
    if not hub:
        return True
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


HUB_RULES = "no '--' or '..', each part starting and ending with a letter or digit, no '.git' ending"


def check_repo_id(repo_id: str) -> str:
    if not is_repo_id(repo_id):
        raise HubError(f"bad Hub repo {repo_id!r}: write ORG/NAME with letters, digits and . _ - ({HUB_RULES}), e.g. "
                       "'my-team/movie-lora'")
    return repo_id


def check_branch(revision: str, pull: bool = False) -> str:
    """A branch name a push may commit to, or (`pull`) a branch, tag or commit a pull may read."""
    if not _BRANCH_RE.fullmatch(revision) or ".." in revision or revision.endswith(("/", ".lock")):
        takes = ("pull a branch, tag or commit such as 'main' or a commit sha" if pull
                 else "push to a branch name such as 'main' or 'movie-v2'")
        raise HubError(f"bad revision {revision!r}: {takes}")
    return revision


def check_mirror_revision(revision: str) -> str:
    if not _MIRROR_REV_RE.fullmatch(revision) or ".." in revision:
        raise HubError(f"bad mirror revision {revision!r}: use letters, digits and . _ - (a folder name), e.g. 'v2'")
    return revision


def unsafe_path_reason(rel: str) -> str | None:
    """Why a repo file name could write outside the target folder (None: it is a plain relative path)."""
    if not isinstance(rel, str) or not rel:
        return "an empty file name"
    if "\\" in rel or "\0" in rel or ":" in rel:
        return "a backslash, colon or NUL in the name"
    p = PurePosixPath(rel)
    if p.is_absolute():
        return "an absolute path"
    if any(part in ("..", ".", "") for part in rel.split("/")):
        return "a '..' (or empty) path component"
    return None


def is_pickle_name(rel: str) -> bool:
    return PurePosixPath(rel).suffix.lower() in PICKLE_SUFFIXES


def resolve_endpoint(endpoint: str | None = None) -> str:
    """`endpoint`, else `$HF_ENDPOINT` read now (huggingface_hub reads it only at import), else the library default;
    one that is no http(s) URL with a host (and a port from 0 to 65535) is one line naming where it came from."""
    given = (endpoint, "endpoint") if endpoint else (os.environ.get("HF_ENDPOINT"), "$HF_ENDPOINT")
    if given[0]:
        url = given[0].rstrip("/")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as e:  # was: urllib's traceback
            raise HubError(f"{given[1]} {url!r} is no URL ({e})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HubError(f"{given[1]} {url!r} is no http(s) URL with a host, e.g. https://huggingface.co")
        return url
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def public_endpoint(endpoint: str) -> str:
    """The endpoint without any user:password part, for records and messages."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def hf_api(endpoint: str):
    from huggingface_hub import HfApi

    from .. import __version__

    return HfApi(endpoint=endpoint, library_name="adaptrec", library_version=__version__)  # token: HF_TOKEN / login cache


def _current_token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # an OIDC exchange failure etc.: treat as no token, the request will say more
        return None


def scrub(text: str) -> str:
    """`text` with the current token (if any) masked, for anything derived from an exception."""
    token = _current_token()
    return text.replace(token, "***") if token else text


@contextmanager
def hub_errors(what: str, repo_id: str, endpoint: str, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub / network failures into one-line `HubError`s that say what to do next."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    RemoteEntryNotFound = getattr(hf_errors, "RemoteEntryNotFoundError", hf_errors.EntryNotFoundError)

    where = public_endpoint(endpoint)
    has_token = _current_token() is not None
    login = "set HF_TOKEN to a valid token or run `hf auth login`"
    try:
        yield
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):  # before the HTTP ones: both are OSErrors
        raise HubError(f"{what}: cannot reach {where} (offline, or HF_HUB_OFFLINE is set); "
                       f"use an offline mirror folder instead (push with {option('to', 'FOLDER')}, pull from "
                       "FOLDER)") from None
    except RevisionNotFoundError:
        raise HubError(f"{what}: {repo_id} has no revision {revision!r} at {where}; check the branch, tag or commit") from None
    except RepositoryNotFoundError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401 and not has_token:
            raise HubError(f"{what}: {where} wants a token for {repo_id} and none is set; {login}") from None
        raise HubError(
            f"{what}: no repo {repo_id} at {where}, or your token cannot see it (private or gated); "
            f"check the name, or {login} with read access"
        ) from None
    except RemoteEntryNotFound:
        raise HubError(f"{what}: a file listed by {repo_id} is missing at {where}; the repo changed during the pull, retry") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            if has_token:
                raise HubError(f"{what}: {where} refused the token (401 Unauthorized: invalid or expired); {login}") from None
            raise HubError(f"{what}: {where} needs a token and none is set; {login}") from None
        if status == 403 and what.startswith("pull"):
            raise HubError(f"{what}: {where} refused {repo_id} (403 Forbidden): the token may not read it (a gated "
                           f"repo whose terms are not accepted, or an organisation's); {login} with read "
                           "access") from None
        if status == 403:
            raise HubError(f"{what}: {where} refused {repo_id} (403 Forbidden): the token lacks write access to it; "
                           "use a token with write permission for that namespace") from None
        if status == 412:  # create_commit's parent_commit is no longer the branch head
            raise HubError(f"{what}: another commit reached {repo_id}@{revision} while this one was prepared; "
                           "nothing was committed, push again") from None
        server_msg = e.response.headers.get("X-Error-Message", "") if e.response is not None else ""
        detail = f" ({scrub(server_msg)[:200]})" if server_msg else ""
        raise HubError(f"{what}: {where} answered HTTP {status}{detail} for {repo_id}; retry later or check the repo") from None
    except OSError as e:  # httpx connection errors are OSErrors in huggingface_hub 2.x, as are disk errors
        if e.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT):  # the local disk, not the network
            raise HubError(f"{what}: cannot write the download here ({scrub(str(e)).splitlines()[0][:200]}); free "
                           "space or fix the permissions of $ADAPTREC_HOME") from None
        raise HubError(f"{what}: cannot talk to {where} ({type(e).__name__}: {scrub(str(e)).splitlines()[0][:200] if str(e) else ''}); "
                       "check the network and HF_ENDPOINT") from None
    except Exception as e:
        if type(e).__module__.startswith(("httpx", "httpcore", "requests", "urllib3")):
            raise HubError(f"{what}: cannot talk to {where} ({type(e).__name__}); check the network and HF_ENDPOINT") from None
        raise


# Absolute local paths (or ~/…, or file:// URLs of them), tried in this order: a whole string that is one, spaces
# and all, unless a second path starts in it (a lineage or metric value: "/home/me/my data/x.json"); a quoted one
# ("'/home/me/my data/x.json'"); the value of a YAML line or of a recipe's `# --set KEY=` line, which runs to the line's end or its comment ("train: /home/me/my data/x.json");
# any other one not inside a URL or a relative path ("/home/me/x", "~/runs/a", "file:///x"), which ends at a space.
_PATH = r"(?:file://(?:localhost)?)?~?/"
_LOCAL_PATHS = (re.compile(rf"\A{_PATH}(?:[^\s]|[ \t](?![~/]|file:))*\Z"),  # no second path in it
                re.compile(rf"""(?<=(?P<q>['"])){_PATH}[^'"\n]*(?=(?P=q))"""),
                re.compile(rf"(?m)^(?P<key>[ \t]*(?:-[ \t]+(?:[\w.-]+:[ \t]+)?|[\w.-]+:[ \t]+|#[ \t]*--set[ \t]+[\w.]+=))"
                           rf"{_PATH}[^\n]*"),
                re.compile(rf"(?<![\w.:/~<-])(?<!<local>){_PATH}(?:[^\s'\"`,;()\[\]{{}}<>/]+/)*"
                           r"[^\s'\"`,;()\[\]{}<>/]+"))
_COMMENT = re.compile(r"(?<=[ \t])#")  # a YAML comment's start (linear: no run of spaces is rescanned)


def _local(match: re.Match) -> str:
    """The match with its path written `<local>/<last part>` (a YAML value's comment and the spaces before it kept)."""
    key = match.groupdict().get("key") or ""
    path, rest = match.group(0)[len(key):], ""
    if key:  # a YAML value: up to its comment
        comment = _COMMENT.search(path)
        value = path[:comment.start()] if comment else path
        stripped = value.rstrip(" \t")
        path, rest = stripped, path[len(stripped):]
    path = path.removeprefix("file://").removeprefix("localhost")
    return f"{key}<local>/{Path(path.rstrip('/')).name}{rest}"


def redact_local_paths(obj):
    """`obj` (str, or dicts/lists of them) with every absolute local path replaced by `<local>/<its last part>`:
    a published file must not tell the world how the publisher's disk is laid out."""
    if isinstance(obj, str):
        for pattern in _LOCAL_PATHS:
            obj = pattern.sub(_local, obj)
        return obj
    if isinstance(obj, dict):
        return {k: redact_local_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_local_paths(v) for v in obj]
    return obj

