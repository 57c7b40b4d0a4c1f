"""Every error the app answers, in one envelope `{"error": {"type", "message"}}`, with no paths or internals."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from adaptrec.data.online_log import OnlineLogError
from adaptrec.errors import (
    AdaptrecError,
    FingerprintMismatch,
    IntegrityError,
    RegistryBusy,
    RegistryError,
    RegistryUnavailable,
)
from adaptrec.router.sources import RouteError

log = logging.getLogger("adaptrec.serve")
# the first class an error is an instance of decides (RegistryBusy before RegistryError); the server's storage
# (503) is its trouble, worth a retry
_STATUS = {IntegrityError: 409, FingerprintMismatch: 409, RegistryBusy: 503, RegistryError: 404, RouteError: 404,
           OnlineLogError: 503, RegistryUnavailable: 503}
# an absolute path of two parts or more; quoted, it may hold spaces ('/srv/my models/x')
_PATHS = (re.compile(r"""(?<=(?P<q>['"]))(?:[A-Za-z]:)?/[^'"\n/]+/[^'"\n]*(?=(?P=q))"""),
          re.compile(r"(?<![\w$])(?<!<path>)(?:[A-Za-z]:)?(?:/[\w.@+-]+){2,}/?"))
_HTTP_KINDS = {404: "NotFound", 405: "MethodNotAllowed"}


def error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"type": kind, "message": message}}, headers=headers)


def scrub(message: str, homes: tuple[Path, ...]) -> str:
    """`message` with the registry home written `$ADAPTREC_HOME` and any other absolute path as `<path>` (a relative
    home is matched as the absolute path it stands for, never as a bare substring of the words)."""
    for home in homes:
        message = message.replace(str(Path(home).absolute()), "$ADAPTREC_HOME")
    for pattern in _PATHS:
        message = pattern.sub("<path>", message)
    return message


def add_error_handlers(app: FastAPI, homes: tuple[Path, ...]) -> None:
    """Answer adaptrec errors, validation errors, unknown routes and crashes with the envelope."""

    @app.exception_handler(AdaptrecError)
    async def _adaptrec_error(_: Request, e: AdaptrecError) -> JSONResponse:
        status = getattr(e, "status", None) or next((s for t, s in _STATUS.items() if isinstance(e, t)), 422)
        return error(status, scrub(str(e), homes), type(e).__name__)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return error(422, f"malformed request: {where}", "RequestValidationError")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException) -> JSONResponse:
        if e.status_code == 400:  # FastAPI could not parse the body (bytes that are not UTF-8)
            return error(422, "malformed request: the body is not UTF-8 JSON", "RequestValidationError")
        message = "no such endpoint" if e.status_code == 404 else f"{request.method} is not allowed here"
        return error(e.status_code, message, _HTTP_KINDS.get(e.status_code, "HTTPError"),
                     e.headers)  # a 405's `Allow`, which RFC 9110 requires

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error(500, "internal error; the server log has the details", "InternalError")
