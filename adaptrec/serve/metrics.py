"""The server's Prometheus metrics (prometheus_client, one registry per app), labelled by route template."""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.routing import Match

from adaptrec.errors import AdaptrecError
from adaptrec.names import COLD_SUFFIX

UNMATCHED = "<unmatched>"  # every path no route matches: one series, whatever the path
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
SCORE_BUCKETS = tuple(i / 10 for i in range(1, 11))
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # any other token: `other`
OTHER_DOMAIN = "<other>"  # domains without a promoted adapter share one series: a label never grows unbounded


def pyes_series(domain: str, named_adapter: str | None, mode: str) -> str:
    """The `adaptrec_pyes` series an answer feeds: a routed warm user's, its domain's (the champion's drift signal);
    a cold-start user's, `<domain>:cold` (other-domain history, most often another adapter); a request naming its own
    adapter (a challenger, say), `OTHER_DOMAIN`. A series no promoted alias names goes to `OTHER_DOMAIN` when
    observed."""
    if named_adapter is not None:
        return OTHER_DOMAIN
    return domain + COLD_SUFFIX if mode == "cold" else domain


def route_of(request: Request) -> str:
    """The matched route's template (`/v1/score`), or `UNMATCHED`: labels never carry a raw request path."""
    route = request.scope.get("route")
    if route is None:  # Starlette's own routes (/openapi.json, /docs) leave no "route" in the scope
        route = next((r for r in request.app.routes if r.matches(request.scope)[0] == Match.FULL), None)
    return getattr(route, "path", UNMATCHED) if route is not None else UNMATCHED


class Metrics:
    """Request counts, requests in progress and latency by route (counts by status too), batch sizes, residency,
    queue depth, adapter loads."""

    def __init__(self, resident: Callable[[], int], queued: Callable[[], int], loads: Callable[[], int]):
        self.registry = CollectorRegistry()
        self.requests = Counter("adaptrec_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=self.registry)
        self.server_errors = Counter("adaptrec_server_errors", "HTTP answers with a 5xx status", ["route"],
                                     registry=self.registry)
        self.in_progress = Gauge("adaptrec_requests_in_progress", "HTTP requests received and not yet answered",
                                 ["route"], registry=self.registry)
        self.latency = Histogram("adaptrec_request_seconds", "Time to answer", ["route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.batch_rows = Histogram("adaptrec_batch_rows", "Rows per merged full-prompt batch (one-item requests; "
                                    "shared-prefix ranking runs apart)", buckets=BATCH_BUCKETS, registry=self.registry)
        self.pyes = Histogram("adaptrec_pyes", "Scores answered (P(yes)), by domain", ["domain"],
                              buckets=SCORE_BUCKETS, registry=self.registry)
        self.known_domains: Callable[[], Iterable[str]] = lambda: ()
        Gauge("adaptrec_adapters_resident", "Adapters held in memory", registry=self.registry).set_function(resident)
        Gauge("adaptrec_queue_depth", "Jobs waiting for the forward thread", registry=self.registry).set_function(queued)
        Gauge("adaptrec_adapter_loads", "Adapters loaded from disk since start (monotonic)",
              registry=self.registry).set_function(loads)

    def record(self, request: Request, status: int, seconds: float) -> None:
        route = route_of(request)
        method = request.method if route != UNMATCHED and request.method in METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 500:
            self.server_errors.labels(route).inc()

    def observe_scores(self, domain: str, scores: Iterable[float]) -> None:
        """Feed the P(yes) histogram of `domain` (drift shows in its shape); unknown domains go to `OTHER_DOMAIN`."""
        try:
            known = domain in self.known_domains()
        except AdaptrecError:  # a busy registry must not fail an answer already scored
            known = False
        series = self.pyes.labels(domain if known else OTHER_DOMAIN)
        for value in scores:
            series.observe(float(value))

    def text(self) -> bytes:
        return generate_latest(self.registry)
