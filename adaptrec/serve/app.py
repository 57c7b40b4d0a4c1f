"""The HTTP face of the engine (FastAPI under uvicorn): score, recommend, feedback, adapters, health, metrics, admin.

A request passes the `guards.Guard` (admin token, body-size cap) before its body is parsed; its other
sizes are checked on the event loop; it is routed, rendered and tokenized on the preparation thread
and run on the forward thread (`worker.Worker`). `/healthz` and `/metrics` read lock-free snapshots,
so they answer while a forward or an adapter load runs. On shutdown uvicorn stops accepting, lets
in-flight requests finish, then the worker drains.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import math
import os
import signal
import socket
import threading
import time
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from adaptrec.data.online_log import OnlineLog
from adaptrec.errors import ConfigError, on_command_line, option
from adaptrec.home import adaptrec_home

from . import plans
from .engine import Engine, ServeError
from .envelope import add_error_handlers
from .explore import greedy
from .guards import ADMIN_KEY, CLIENT_GONE, ClientClosed, Guard, client_gone
from .metrics import Metrics, pyes_series, route_of
from .online import RequestLogger
from .promotions import PromotionWatcher, ServedRegistry
from .schemas import (
    ADMIN_ERRORS,
    FEEDBACK_ERRORS,
    READ_ERRORS,
    SCORING_ERRORS,
    AdaptersResponse,
    FeedbackRequest,
    FeedbackResponse,
    LoadResponse,
    RecommendRequest,
    RecommendResponse,
    RefRequest,
    ScoreRequest,
    ScoreResponse,
    UnloadResponse,
)
from .worker import CallingThreadExecutor, QueueFull, Worker, background_priority

ADMIN_TOKEN_ENV = "ADAPTREC_ADMIN_TOKEN"
ADMIN_PATHS = frozenset({"/v1/adapters/load", "/v1/adapters/unload"})
LISTING_S = 1.0  # `/v1/adapters` reads the registry at most this often
LOG_BUSY_S = 5.0  # a request log statement waits this long for each lock (the log's, then SQLite's: another
# server, a VACUUM) before its 503


@dataclass(frozen=True)
class ServeOptions:
    max_batch: int = 1  # rows merged into one forward across requests (1: each request runs alone)
    max_padding: float = 0.1  # a merge may not make more than this share of the batch's tokens padding
    max_wait_ms: float = 0.0  # how long the first request of a batch waits for company
    queue_size: int = 64  # jobs waiting; more are refused with 503
    admin_token: str | None = None  # default: $ADAPTREC_ADMIN_TOKEN; unset: admin endpoints refuse everyone
    allow_any_adapter: bool = False  # let anonymous requests name any registered adapter
    request_log: bool = True  # log each answer and accept feedback on it (data/online_log.py)
    online_log: Path | None = None  # default: $ADAPTREC_HOME/online.db
    exploration: dict[str, float] = field(default_factory=dict)  # domain -> ε of /v1/recommend's slots
    exploration_seed: int | None = None
    watch_promotions: float = 1.0  # seconds between polls for new champions to pre-warm and switch to (0: off)

    def __post_init__(self) -> None:
        """Settings that would stall or refuse every request: one line, before the backbone loads (an infinite
        `max_wait_ms` held a lone request until `max_batch` rows came)."""
        for name, value, low, high in (("max_wait_ms", self.max_wait_ms, 0, math.inf),
                                       ("max_padding", self.max_padding, 0, 1),
                                       ("watch_promotions", self.watch_promotions, 0, math.inf)):
            if not (math.isfinite(value) and low <= value <= high):
                most = f"to {high}" if high < math.inf else "or more"
                raise ConfigError(f"{option(name, value)}: give a finite number, {low} {most}")
        if self.max_batch < 1 or self.queue_size < 1:
            raise ConfigError(f"{option('max_batch', self.max_batch)}, queue size {self.queue_size}: each needs at "
                              "least 1")
        for domain, epsilon in self.exploration.items():  # ε above 1 made propensities negative
            if not (isinstance(domain, str) and domain.strip() and domain.isprintable()
                    and isinstance(epsilon, (int, float)) and 0 <= epsilon <= 1):
                named = option("exploration", f"{domain}={epsilon}", flag="--explore") if on_command_line() \
                    else f"exploration[{domain!r}]={epsilon!r}"
                raise ConfigError(f"{named}: expected a domain's exploration rate, a number from 0 to 1")

    def token(self) -> str | None:
        """The admin token: `admin_token`, else $ADAPTREC_ADMIN_TOKEN. One that an HTTP header cannot carry (not
        ASCII) is refused: no request could ever present it, so the admin endpoints would be off unannounced."""
        token = self.admin_token if self.admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV)
        if token is not None and not token.isascii():
            source = "the admin token" if self.admin_token is not None else f"${ADMIN_TOKEN_ENV}"
            raise ConfigError(f"{source} has non-ASCII characters, which an HTTP header cannot carry")
        return token


def _add_scoring_routes(app: FastAPI, engine: Engine, state: dict[str, Any], options: ServeOptions,
                        metrics: Metrics, logger: RequestLogger | None, watcher: PromotionWatcher | None) -> None:
    """`/v1/score` and `/v1/recommend`: sizes checked here, planned on the preparation thread, run on the worker,
    logged (with a `request_id`) on a thread of its own."""

    @asynccontextmanager
    async def held(req, targets):
        """The request counted from arrival to answer (its logging included), refused when the server holds
        `queue_size` already: an overload costs no routing, tokenizing or logging."""
        plans.check_sizes(engine, req, targets)
        if state["admitted"] >= options.queue_size:
            raise QueueFull(f"the server holds {options.queue_size} requests already; retry later")
        state["admitted"] += 1  # the event loop's own counter
        try:
            yield
        finally:
            state["admitted"] -= 1

    async def scores(request: Request, req, targets) -> tuple[plans.Plan, Any]:
        worker: Worker = state["worker"]
        admin, arrived = request.scope.get(ADMIN_KEY, False), time.monotonic()

        def make() -> plans.Plan:
            return plans.plan(engine, req, targets, admin, options.allow_any_adapter)

        p = await worker.prepare(make)
        if p.waiting:  # a collaborative adapter's item tokens join the tokenizer as it loads, on the forward thread
            await worker.submit(call=lambda: engine.load(p.waiting[0]), since=arrived)
            p, arrived = plans.after_load(await worker.prepare(make)), time.monotonic()  # the load was no queueing
        if watcher is not None:  # the adapters this request was routed to are in flight until it is answered
            watcher.hold(p.decision.adapters)
        gone = request.scope.get(CLIENT_GONE)
        try:  # the queue timeout counts from arrival: time spent waiting to be planned is waiting too
            if p.shared:
                logits = await worker.submit(call=lambda: p.run(engine), since=arrived, gone=gone)
            else:
                logits = await worker.submit(rows=p.rows, tokens=p.tokens, since=arrived, gone=gone)
            if client_gone(request.scope):  # an answer no one receives is not logged (was: nor its slate shown)
                raise ClientClosed()
            return p, p.scores(logits)
        finally:
            if watcher is not None:
                watcher.release(p.decision.adapters)

    async def logged(endpoint: str, req, p: plans.Plan, targets, s, slate=None) -> str | None:
        """Log the answer, then observe the P(yes) it answers (a recommendation's shown slate; TALLRec-mode scores
        are another scale), off the event loop and off the preparation thread (the log may wait for a feedback
        event's fsync; the next request's planning must not); the request id (None when not logging). A request
        whose logging fails is not observed: it gets an error, not these scores."""
        def work() -> str | None:
            request_id = logger.record(endpoint, req, p, targets, s, slate) if logger is not None else None
            if req.mode == "pyes":
                metrics.observe_scores(pyes_series(req.domain, req.adapter, p.decision.mode),
                                       s if slate is None else np.asarray(s)[slate.order])
            return request_id
        return await asyncio.to_thread(work)

    @app.post("/v1/score", response_model=ScoreResponse, responses=SCORING_ERRORS)
    async def score(req: ScoreRequest, request: Request) -> dict:
        """P(yes) of each item for the user, under the requested or routed adapter(s)."""
        async with held(req, req.items):
            p, s = await scores(request, req, req.items)
            return {"request_id": await logged("score", req, p, req.items, s), **plans.score_answer(p, s)}

    @app.post("/v1/recommend", response_model=RecommendResponse, responses=SCORING_ERRORS)
    async def recommend(req: RecommendRequest, request: Request) -> dict:
        """The top-k candidates by P(yes) (some slots explored when the domain explores), scored from one shared
        history prefix per adapter."""
        async with held(req, req.candidates):
            p, s = await scores(request, req, req.candidates)
            slate = logger.slate(req.domain, s, req.k) if logger is not None else greedy(s, req.k)
            return {"request_id": await logged("recommend", req, p, req.candidates, s, slate),
                    **plans.recommend_answer(p, s, req.candidates, slate)}

    if logger is None:
        return

    @app.post("/v1/feedback", response_model=FeedbackResponse, responses=FEEDBACK_ERRORS)
    async def feedback(req: FeedbackRequest) -> dict:
        """A label or event for one item of a logged request; answered only once it is on disk."""
        # a thread of its own, not the preparation thread: the event's fsync must not delay planning
        seq = await asyncio.to_thread(logger.log.add_feedback, req.request_id, req.item, req.label, req.event)
        return {"request_id": req.request_id, "seq": seq}


def _add_adapter_routes(app: FastAPI, engine: Engine, state: dict[str, Any]) -> None:
    """`/v1/adapters` for anyone; loading and unloading for the admin (the `Guard` checks the token)."""
    bearer = [Depends(HTTPBearer(auto_error=False))]  # documents the scheme in the OpenAPI schema; the Guard enforces it

    listing: dict[str, Any] = {"at": -LISTING_S, "refs": [], "lock": asyncio.Lock()}

    @app.get("/v1/adapters", response_model=AdaptersResponse, responses=READ_ERRORS)
    async def adapters() -> dict:
        # not on the preparation thread, which plans every scoring request; one listing at a time, at most one a
        # LISTING_S (the others read it): many or slow listings hold neither planning nor the threads that log
        async with listing["lock"]:
            if time.monotonic() - listing["at"] >= LISTING_S:
                listing["refs"] = [r.ref for r in await asyncio.to_thread(engine.registry.list)]
                listing["at"] = time.monotonic()
        return {"resident": engine.resident(), "max_resident": engine.max_resident, "registered": listing["refs"]}

    @app.post("/v1/adapters/load", response_model=LoadResponse, dependencies=bearer, responses=ADMIN_ERRORS)
    async def load(req: RefRequest) -> dict:
        resident = await state["worker"].submit(call=lambda: engine.preload(req.ref))
        return {"loaded": resident.to_dict()}

    @app.post("/v1/adapters/unload", response_model=UnloadResponse, dependencies=bearer, responses=ADMIN_ERRORS)
    async def unload(req: RefRequest) -> dict:
        await state["worker"].submit(call=lambda: engine.unload(req.ref))
        return {"unloaded": req.ref}


def _add_health_routes(app: FastAPI, engine: Engine, metrics: Metrics) -> None:
    """`/healthz` and the Prometheus `/metrics`; neither waits on the engine. A server shutting down stops accepting
    connections (uvicorn), which is what a health check sees."""

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "resident": len(engine.resident())})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.text(), media_type=CONTENT_TYPE_LATEST)


def create_app(engine: Engine, options: ServeOptions = ServeOptions(), executor: Executor | None = None) -> FastAPI:
    """The app over `engine`: its worker starts with the app and drains on shutdown; every request is measured.
    `executor`: where forwards run (default: one thread of their own)."""
    state: dict[str, Any] = {"admitted": 0}  # "worker" while the app runs; scoring requests between arrival and answer
    metrics = Metrics(lambda: len(engine.resident()), lambda: state["worker"].waiting if "worker" in state else 0,
                      lambda: engine.loads)
    token = options.token()
    watcher = None
    if options.watch_promotions > 0:
        engine.routing = ServedRegistry(engine.registry)
        watcher = PromotionWatcher(engine.routing)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        worker = Worker(engine, metrics, options.max_batch, options.max_wait_ms, options.queue_size,
                        options.max_padding, executor)
        worker.start()
        state["worker"] = worker
        watching = None
        if watcher is not None:
            await worker.prepare(watcher.start)
            watching = asyncio.create_task(watcher.run(engine, worker, options.watch_promotions))
        yield
        if watching is not None:
            watching.cancel()
        await worker.stop()

    app = FastAPI(title="adaptrec", summary="Per-domain adapters on one frozen LLM: P(yes) scores and rankings",
                  lifespan=lifespan)

    add_error_handlers(app, (adaptrec_home(), engine.registry.home))
    logger = RequestLogger(OnlineLog(options.online_log, busy_s=LOG_BUSY_S), options.exploration,
                           options.exploration_seed) if options.request_log else None
    metrics.known_domains = (lambda: engine.routing.served) if watcher is not None else engine.registry.aliases
    app.state.promotions = watcher
    _add_scoring_routes(app, engine, state, options, metrics, logger, watcher)
    _add_adapter_routes(app, engine, state)
    _add_health_routes(app, engine, metrics)
    app.add_middleware(Guard, token=token, admin_paths=ADMIN_PATHS, max_bytes=engine.limits.max_body_bytes)

    @app.middleware("http")  # added last: outermost, so it also counts the Guard's 401 and 413 answers
    async def _observe(request: Request, call_next):
        start = time.perf_counter()
        with metrics.in_progress.labels(route_of(request)).track_inprogress():
            try:
                response = await call_next(request)
            except Exception:  # the 500 itself is answered further out (Starlette's ServerErrorMiddleware)
                metrics.record(request, 500, time.perf_counter() - start)
                raise
        metrics.record(request, response.status_code, time.perf_counter() - start)
        return response

    return app


def one_malloc_arena() -> None:
    """Make every thread allocate from glibc's main arena (no-op elsewhere). With a per-thread arena (glibc's
    default) forwards on a worker thread ran slower than the same forwards on the main thread in probes."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # M_ARENA_MAX = 1
    except (OSError, AttributeError):
        pass


class UnservedExplorationWarning(UserWarning):
    """An exploration rate for a domain no registered adapter serves (yet): a misspelt one explores nothing."""


def check_address(host: str, port: int) -> None:
    """`ServeError` unless `host`:`port` can be listened on now, bound as uvicorn binds it (so a typo or a busy port
    is refused before the backbone loads, not after). A blank host is refused: bound, it listens on every interface."""
    if not host.strip():
        raise ServeError(f"{option('host', host)}: blank; give an address (127.0.0.1: this machine only, 0.0.0.0: "
                         "every interface)")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except (OSError, OverflowError, UnicodeError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ServeError(f"{option('host', host)}, {option('port', port)}: cannot listen there ({reason})") from None


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8000, options: ServeOptions = ServeOptions()) -> None:
    """Run the app under uvicorn until SIGINT/SIGTERM (in-flight requests finish first).

    Forwards run on this (the main) thread, uvicorn's event loop on another (see `CallingThreadExecutor`)."""
    import uvicorn

    one_malloc_arena()
    forwards = CallingThreadExecutor()
    server = uvicorn.Server(uvicorn.Config(create_app(engine, options, forwards), host=host, port=port,
                                          log_level="info", timeout_graceful_shutdown=30))

    def run_server() -> None:
        background_priority()
        try:
            server.run()
        finally:
            forwards.shutdown()  # also when uvicorn could not start: the main thread must not wait forever

    def stop(signum: int, _frame) -> None:  # as uvicorn's own handler: a second Ctrl-C stops without waiting
        server.force_exit = server.force_exit or (server.should_exit and signum == signal.SIGINT)
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # in this context: messages spell options as the caller of `serve` does (flags under `adaptrec serve`)
        thread = threading.Thread(target=contextvars.copy_context().run, args=(run_server,), name="adaptrec-http")
        thread.start()
        forwards.run()
        thread.join()
    finally:  # a REPL or notebook that called `adaptrec.serve` gets its own Ctrl-C back
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise ServeError(f"the server could not start on {host}:{port} (see the log above)")
