"""What every request passes before the app sees its body: the admin token, then the body-size cap.

A pure ASGI middleware (not FastAPI dependencies): FastAPI reads and parses the JSON body before it
runs any dependency, so a dependency could neither answer 401 before a malformed body's 422 nor stop
a 20 MB body from being read and parsed on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Awaitable, Callable

from adaptrec.errors import AdaptrecError

ADMIN_KEY = "adaptrec.admin"  # scope key: True when the request carried the admin token
CLIENT_GONE = "adaptrec.client_gone"  # scope key: an `asyncio.Event` set once the client has disconnected
Scope = dict
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


def bearer(header: str | None) -> str | None:
    """The credentials of an `Authorization: Bearer <token>` header (scheme case-insensitive), else None."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def is_admin(header: str | None, token: str | None) -> bool:
    """Whether the header presents `token` (constant-time compare); no configured token admits nobody."""
    given = bearer(header)
    return bool(token) and given is not None and hmac.compare_digest(given.encode(), token.encode())


def route_path(scope: Scope) -> str:
    """The path the app's routes match: under a root path (`uvicorn --root-path /api`, a mount in a parent app) the
    scope's path still starts with it (Starlette's own helper for this is private)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root + "/") else path


CLIENT_CLOSED = 499  # nginx's "client closed request": counted as such, not as a server error; no one reads it


class ClientClosed(AdaptrecError):
    """The client disconnected before its answer: its forward is skipped and its answer neither logged nor sent."""

    status = CLIENT_CLOSED

    def __init__(self, message: str = "the client closed the connection before its answer"):
        super().__init__(message)


def client_gone(scope: Scope) -> bool:
    """Whether the request's client has disconnected (known once its body was read)."""
    gone = scope.get(CLIENT_GONE)
    return gone is not None and gone.is_set()


async def send_error(send: Callable, status: int, kind: str, message: str) -> None:
    """Answer with the `{"error": {...}}` envelope straight from the ASGI layer."""
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Admin paths need the Bearer token (401 before the body is read); bodies over `max_bytes` get 413 unread."""

    def __init__(self, app: ASGIApp, token: str | None, admin_paths: frozenset[str], max_bytes: int):
        self.app, self.admin_paths, self.max_bytes = app, admin_paths, max_bytes
        self.token = token.strip() if token else None

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        scope[ADMIN_KEY] = is_admin(headers.get("authorization"), self.token)
        if route_path(scope) in self.admin_paths and not scope[ADMIN_KEY]:
            return await send_error(send, 401, "Unauthorized", "admin endpoints need 'Authorization: Bearer <token>' "
                                    "matching $ADAPTREC_ADMIN_TOKEN (unset: admin endpoints are off)")
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_bytes:  # "²" is a digit to isdigit
            return await self._too_large(send, int(declared))
        body, more = b"", True
        while more:  # buffered up to the cap, then replayed: the app never sees a partial body
            message = await receive()
            if message["type"] == "http.disconnect":  # answered all the same: returning none is a 500 further out
                return await send_error(send, CLIENT_CLOSED, "ClientClosedRequest",
                                        "the client closed the connection before its request body arrived")
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._too_large(send, len(body))
        gone = scope[CLIENT_GONE] = asyncio.Event()  # uvicorn cancels no handler whose client left: the app asks
        listening = asyncio.ensure_future(_listen(receive, gone))
        try:
            await self.app(scope, _replay(body, gone), send)
        finally:
            listening.cancel()

    async def _too_large(self, send: Callable, size: int) -> None:
        await send_error(send, 413, "LimitExceeded",
                         f"the request body has {size} bytes, over the limit of {self.max_bytes}")


async def _listen(receive: Callable, gone: asyncio.Event) -> None:
    """Set `gone` when the client disconnects (after the body, the only message left to receive)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


def _replay(body: bytes, gone: asyncio.Event) -> Callable:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if sent:  # after the body: the client's disconnect, as `_listen` receives it
            await gone.wait()
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
