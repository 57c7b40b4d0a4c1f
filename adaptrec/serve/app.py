"""The HTTP face of the engine (FastAPI under uvicorn): score, recommend, adapters, health, metrics, admin.

Every model operation (forwards, adapter loads and unloads) runs on ONE worker thread fed by a
bounded queue: `/v1/score` requests waiting together are merged into one mixed-adapter batch (up to
`max_batch` rows, after at most `max_wait_ms`), `/v1/recommend` runs shared-prefix ranking as its own
job. A full queue answers 503 at once; a job that waited past the queue timeout is refused before it
runs. On shutdown uvicorn stops accepting, lets in-flight requests finish, then the worker drains.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal

import numpy as np
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from adaptrec.data.records import Case, HistoryItem
from adaptrec.errors import AdaptrecError, FingerprintMismatch, IntegrityError, RegistryError
from adaptrec.router.policy import Decision, RouteError, route
from adaptrec.scoring.logits import to_scores
from adaptrec.scoring.variants import mix

from .engine import Engine, ServeError, wait_or_refuse

ADMIN_TOKEN_ENV = "ADAPTREC_ADMIN_TOKEN"
_STATUS = {IntegrityError: 409, FingerprintMismatch: 409, RegistryError: 404, RouteError: 404}


# ---------------------------------------------------------------- request and response bodies
class Item(BaseModel):
    text: str = Field(..., description="the item as the prompt lists it, e.g. '\"Heat (1995)\"'")
    liked: bool = True
    domain: str | None = None


class UserRequest(BaseModel):
    user_id: str = "anonymous"
    domain: str = Field(..., description="the target domain; routes to its promoted adapter unless `adapter` is given")
    noun: str = Field("item", description="the item kind named in the prompt ('movie', 'book', ...)")
    history: list[Item] = Field(default_factory=list, description="oldest first")
    adapter: str | None = Field(None, description="a registry ref that overrides routing")
    mode: Literal["pyes", "tallrec"] = "pyes"

    def case(self, target: str) -> Case:
        history = tuple(HistoryItem(h.text, h.liked, domain=h.domain) for h in self.history)
        return Case(self.user_id, self.domain, self.noun, history, target)


class ScoreRequest(UserRequest):
    items: list[str] = Field(..., min_length=1, description="target items to score")


class RecommendRequest(UserRequest):
    candidates: list[str] = Field(..., min_length=1)
    k: int = Field(10, ge=1)


class RefRequest(BaseModel):
    ref: str


# ---------------------------------------------------------------- metrics (Prometheus text format)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        counts = self.counts or [0] * len(self.buckets)
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{b}"}} {c}' for b, c in zip(self.buckets, counts)]
        out += [f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}', f"{name}_sum{{{labels}}} {self.total}",
                f"{name}_count{{{labels}}} {self.n}"]
        return out


@dataclass
class Metrics:
    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    latency: dict[str, Histogram] = field(default_factory=dict)
    batch_rows: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))

    def record(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
        self.latency.setdefault(path, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def text(self, resident: int, queued: int) -> str:
        lines = ["# TYPE adaptrec_requests_total counter"]
        lines += [f'adaptrec_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in sorted(self.requests.items())]
        lines.append("# TYPE adaptrec_request_seconds histogram")
        for path, h in sorted(self.latency.items()):
            lines += h.lines("adaptrec_request_seconds", f'path="{path}"')
        lines.append("# TYPE adaptrec_batch_rows histogram")
        lines += self.batch_rows.lines("adaptrec_batch_rows")
        lines += ["# TYPE adaptrec_adapters_resident gauge", f"adaptrec_adapters_resident {resident}",
                  "# TYPE adaptrec_queue_depth gauge", f"adaptrec_queue_depth {queued}"]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the worker: dynamic batching on one thread
@dataclass
class Job:
    """Score rows (merged with other row jobs into one batch) or a callable run alone on the worker."""

    future: asyncio.Future
    rows: list[tuple[str, str]] | None = None
    call: Callable[[], Any] | None = None
    enqueued: float = field(default_factory=time.monotonic)


class QueueFull(ServeError):
    status = 503


class Unauthorized(ServeError):
    status = 401


class Worker:
    def __init__(self, engine: Engine, metrics: Metrics, max_batch: int, max_wait_ms: float, queue_size: int):
        self.engine, self.metrics = engine, metrics
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=queue_size)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptrec-forward")
        self.task: asyncio.Task | None = None

    async def submit(self, rows: list[tuple[str, str]] | None = None, call: Callable[[], Any] | None = None) -> Any:
        job = Job(asyncio.get_running_loop().create_future(), rows, call)
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(f"the server queue is full ({self.queue.maxsize} jobs); retry later") from None
        return await job.future

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Finish every queued job, then stop."""
        await self.queue.put(None)
        if self.task is not None:
            await self.task
        self.pool.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        pending: Job | None = None
        while True:
            job = pending or await self.queue.get()
            pending = None
            if job is None:
                return
            if not self._admit(job):
                continue
            if job.call is not None:
                await self._run([job], job.call)
                continue
            batch, deadline = [job], loop.time() + self.max_wait
            refs = {ref for ref, _ in job.rows}
            while sum(len(j.rows) for j in batch) < self.max_batch:
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), max(deadline - loop.time(), 0))
                except asyncio.TimeoutError:
                    break
                more = refs | {ref for ref, _ in nxt.rows} if nxt is not None and nxt.rows else refs
                if nxt is None or nxt.call is not None or len(more) > self.engine.max_resident:
                    pending = nxt  # runs next, on its own: a callable, the stop mark, or one adapter too many
                    break
                if self._admit(nxt):
                    batch.append(nxt)
                    refs = more
            rows = [r for j in batch for r in j.rows]
            self.metrics.batch_rows.observe(len(rows))
            await self._run(batch, lambda: self.engine.logits(rows))

    def _admit(self, job: Job) -> bool:
        try:
            wait_or_refuse(job.enqueued, self.engine.limits)
            return True
        except ServeError as e:
            job.future.set_exception(e)
            return False

    async def _run(self, jobs: list[Job], fn: Callable[[], Any]) -> None:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self.pool, fn)
        except Exception as e:  # noqa: BLE001 - handed to the waiting request
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        start = 0
        for j in jobs:
            part = result if j.rows is None else result[start : start + len(j.rows)]
            start += len(j.rows or ())
            if not j.future.done():  # a client that went away cancelled its future
                j.future.set_result(part)


# ---------------------------------------------------------------- the app
@dataclass(frozen=True)
class ServeOptions:
    max_batch: int = 16  # rows merged into one forward
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    queue_size: int = 64  # jobs waiting; more are refused with 503
    admin_token: str | None = None  # default: $ADAPTREC_ADMIN_TOKEN; unset: admin endpoints refuse everyone


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"type": kind, "message": message}})


def _add_error_handlers(app: FastAPI) -> None:
    """Answer every error with the envelope `{"error": {"type", "message"}}` and its HTTP status."""

    @app.exception_handler(AdaptrecError)
    async def _adaptrec_error(_: Request, e: AdaptrecError) -> JSONResponse:
        status = getattr(e, "status", None) or next((s for t, s in _STATUS.items() if isinstance(e, t)), 422)
        return _error(status, str(e), type(e).__name__)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(e).__name__}: {e}", "InternalError")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return _error(422, f"malformed request: {where}", "RequestValidationError")


def _plan(engine: Engine, req: UserRequest, target: str) -> tuple[Decision, Case]:
    """The requested adapter, or the router's decision; and the case with the history the decision shows."""
    case = req.case(target)
    if req.adapter is not None:
        return Decision(req.user_id, req.domain, "warm", (req.adapter,), (1.0,), "both",
                        f"adapter {req.adapter} requested"), case
    decision = route(engine.registry, engine.backbone.fingerprint, case)
    return decision, decision.prompt_case(case)


def _add_scoring_routes(app: FastAPI, engine: Engine, state: dict[str, Any]) -> None:
    """`/v1/score` and `/v1/recommend`, run on the worker in `state`."""

    @app.post("/v1/score")
    async def score(req: ScoreRequest) -> dict:
        """P(yes) of each item for the user, under the requested or routed adapter(s)."""
        engine.check_candidates(len(req.items))
        decision, case = _plan(engine, req, req.items[0])
        prompts = [engine.prompt(replace(case, target=t)) for t in req.items]
        logits = await state["worker"].submit(rows=[(ref, p) for ref in decision.adapters for p in prompts])
        per_adapter = to_scores(np.asarray(logits), req.mode).reshape(len(decision.adapters), len(prompts))
        return {"scores": mix(per_adapter, decision.weights).tolist(), "adapters": list(decision.adapters),
                "reason": decision.reason}

    @app.post("/v1/recommend")
    async def recommend(req: RecommendRequest) -> dict:
        """The top-k candidates by P(yes), scored from one shared history prefix per adapter."""
        engine.check_candidates(len(req.candidates))
        decision, case = _plan(engine, req, req.candidates[0])
        rows = await state["worker"].submit(
            call=lambda: [engine.rank(case, req.candidates, ref, req.mode) for ref in decision.adapters])
        scores = mix(np.stack(rows), decision.weights)
        order = np.argsort(-scores, kind="stable")[: req.k]
        return {"items": [{"item": req.candidates[i], "score": float(scores[i])} for i in order],
                "adapters": list(decision.adapters), "reason": decision.reason}


def _add_adapter_routes(app: FastAPI, engine: Engine, state: dict[str, Any], token: str | None) -> None:
    """`/v1/adapters` for anyone; loading and unloading for callers that present the admin `token`."""

    def admin(authorization: str | None = Header(None)) -> None:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized(f"admin endpoints need 'Authorization: Bearer <token>' matching ${ADMIN_TOKEN_ENV}")

    @app.get("/v1/adapters")
    async def adapters() -> dict:
        return {"resident": engine.resident(), "max_resident": engine.max_resident,
                "registered": [r.ref for r in engine.registry.list()]}

    @app.post("/v1/adapters/load", dependencies=[Depends(admin)])
    async def load(req: RefRequest) -> dict:
        resident = await state["worker"].submit(call=lambda: engine.load(req.ref, refresh=True))
        return {"loaded": resident.to_dict()}

    @app.post("/v1/adapters/unload", dependencies=[Depends(admin)])
    async def unload(req: RefRequest) -> dict:
        await state["worker"].submit(call=lambda: engine.unload(req.ref))
        return {"unloaded": req.ref}


def _add_health_routes(app: FastAPI, engine: Engine, state: dict[str, Any], metrics: Metrics) -> None:
    """`/healthz` (503 while shutting down) and the Prometheus `/metrics`."""

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if state.get("closing"):
            return _error(503, "shutting down", "ShuttingDown")
        return JSONResponse({"status": "ok", "resident": len(engine.resident())})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> str:
        worker = state.get("worker")
        return metrics.text(len(engine.resident()), worker.queue.qsize() if worker else 0)


def create_app(engine: Engine, options: ServeOptions = ServeOptions()) -> FastAPI:
    """The app over `engine`: its worker starts with the app and drains on shutdown; every request is measured."""
    metrics = Metrics()
    token = options.admin_token if options.admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV)
    state: dict[str, Any] = {}  # "worker" while the app runs; "closing" once shutdown has begun

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        worker = Worker(engine, metrics, options.max_batch, options.max_wait_ms, options.queue_size)
        worker.start()
        state["worker"] = worker
        yield
        state["closing"] = True
        await worker.stop()

    app = FastAPI(title="adaptrec", summary="Per-domain adapters on one frozen LLM: P(yes) scores and rankings",
                  lifespan=lifespan)

    @app.middleware("http")
    async def _observe(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        metrics.record(request.url.path, response.status_code, time.perf_counter() - start)
        return response

    _add_error_handlers(app)
    _add_scoring_routes(app, engine, state)
    _add_adapter_routes(app, engine, state, token)
    _add_health_routes(app, engine, state, metrics)
    return app


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8000, options: ServeOptions = ServeOptions()) -> None:
    """Run the app under uvicorn until SIGINT/SIGTERM (in-flight requests finish first)."""
    import uvicorn

    uvicorn.run(create_app(engine, options), host=host, port=port, log_level="info", timeout_graceful_shutdown=30)
