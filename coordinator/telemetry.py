"""Prometheus metrics at ``/metrics`` (text exposition format; OpenMetrics when the scraper
asks for it): queue depth and job outcomes read from the database at scrape time, request
latency per route template, conversion time. docs/monitoring.md lists them.

- **From the database** (:class:`DatabaseCollector`): counted when scraped, so every
  coordinator process sharing one database reports the same numbers, and a restart loses
  none of them.
- **In this process**: :data:`REQUEST_SECONDS` (a pure ASGI middleware,
  :class:`RequestTimer`, labels each request by the route template it matched — never the
  raw URL, so label values stay bounded whatever clients send) and
  :data:`CONVERSION_SECONDS` (:func:`observe_conversion`, called where a conversion ends).
  With several coordinator processes, scrape each one (Prometheus' ``instance`` label).

``install(app, ctx)`` adds the middleware and the route to an app built by
``coordinator.app.create_app``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bnnbench.schemas import API_PREFIX, ArtifactStatus, JobStatus
from coordinator.auth import admin_token_problem, bearer_token
from coordinator.db import Database
from coordinator.errors import Unauthorized
from coordinator.models import Artifact, Job, Model

if TYPE_CHECKING:
    from fastapi import FastAPI

    from coordinator.context import AppContext

METRICS_PATH = "/metrics"

# the label of a request no route matched (404s of random URLs, scanners): one series
UNMATCHED = "unmatched"
# methods outside this set (a client may send any token as a method) share one label value
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# the lease long-polls for up to long_poll_seconds (20 s by default): buckets reach past it
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)
# from a small model's analysis to an LCE conversion (TensorFlow); the worker is killed at
# conversion_timeout_seconds (1800 s by default)
CONVERSION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)

# metrics this process measures itself; one registry for the module, so every app built in
# the process (tests build several) exports the same objects
PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)
REQUEST_SECONDS = Histogram(
    "bnnbench_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template "
    f"({UNMATCHED!r}: no route matched), method and status code",
    ["route", "method", "status"],
    buckets=REQUEST_BUCKETS,
    registry=PROCESS_REGISTRY,
)
CONVERSION_SECONDS = Histogram(
    "bnnbench_conversion_seconds",
    "Wall time of an analysis or conversion worker, by library and outcome",
    ["library", "outcome"],
    buckets=CONVERSION_BUCKETS,
    registry=PROCESS_REGISTRY,
)


def observe_conversion(library: str, outcome: str, seconds: float) -> None:
    """Record one finished conversion: ``library`` (native, lce, tflite, dabnn; ``analysis``
    for a model's analysis), ``outcome`` (``ok``, ``failed`` or ``timeout``: the worker's, before
    the fidelity gate) and its wall time in seconds."""
    CONVERSION_SECONDS.labels(library=library, outcome=outcome).observe(max(0.0, seconds))


# ------------------------------------------------------------------ database collector

QUEUE_STATUSES = (JobStatus.waiting, JobStatus.queued, JobStatus.leased)
OUTCOME_STATUSES = (JobStatus.done, JobStatus.failed, JobStatus.cancelled)
ANALYSIS_STATUSES = ("pending", "running", "done", "failed")


class DatabaseCollector(Collector):
    """Counts read from the database at each scrape (one GROUP BY per table)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterable[Metric]:
        with self.db.session() as s:
            jobs = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            arts = dict(
                s.execute(select(Artifact.status, func.count()).group_by(Artifact.status)).all()
            )
            models = dict(
                s.execute(
                    select(Model.analysis_status, func.count()).group_by(Model.analysis_status)
                ).all()
            )
        depth = GaugeMetricFamily(
            "bnnbench_queue_depth",
            "Jobs not finished, by status: waiting (for their artifact), queued (leasable), "
            "leased (running on a device)",
            labels=["status"],
        )
        for status in QUEUE_STATUSES:
            depth.add_metric([status.value], jobs.get(status.value, 0))
        # a gauge, not a counter: retrying a failed or cancelled job moves it back to the queue
        outcomes = GaugeMetricFamily(
            "bnnbench_jobs_finished",
            "Jobs that ended, by outcome (done, failed, cancelled)",
            labels=["outcome"],
        )
        for status in OUTCOME_STATUSES:
            outcomes.add_metric([status.value], jobs.get(status.value, 0))
        artifacts = GaugeMetricFamily(
            "bnnbench_artifacts",
            "Artifacts by status: pending and converting are the conversion backlog",
            labels=["status"],
        )
        for a_status in ArtifactStatus:
            artifacts.add_metric([a_status.value], arts.get(a_status.value, 0))
        analyses = GaugeMetricFamily(
            "bnnbench_model_analyses", "Uploaded models by analysis status", labels=["status"]
        )
        for m_status in ANALYSIS_STATUSES:
            analyses.add_metric([m_status], models.get(m_status, 0))
        yield from (depth, outcomes, artifacts, analyses)


# ------------------------------------------------------------------ request timing


class RequestTimer:
    """Pure ASGI middleware: observes :data:`REQUEST_SECONDS` for every HTTP request, labelled
    by the template of the route that answered it (``/api/v1/jobs/{job_id}``), read from the
    scope once the router has chosen (``scope["route"]``; a mount changes ``root_path``).
    A request no route took (an unknown URL, a body refused before routing) is labelled
    :data:`UNMATCHED`; an exception escaping the app counts as a 500."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...] = ("",)) -> None:
        self.app = app
        # where routers are included (FastAPI may hand over the route as declared, without
        # its router's prefix): the template is the prefix the path has plus the route's path
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path, root = scope.get("path", ""), scope.get("root_path", "")
        status = 500  # unless the app starts an answer

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope.get("method", "")
            REQUEST_SECONDS.labels(
                route=self.template(scope, path.removeprefix(root), root),
                method=method if method in KNOWN_METHODS else "other",
                status=str(status),
            ).observe(time.perf_counter() - started)

    def template(self, scope: Scope, path: str, root: str) -> str:
        """The route template of a routed ``scope`` (``path``: the request's path below the
        ``root`` path it came with), or UNMATCHED."""
        route = scope.get("route")
        regex = getattr(route, "path_regex", None)
        declared = getattr(route, "path_format", None) or getattr(route, "path", None)
        if regex is not None and isinstance(declared, str):
            for prefix in self.prefixes:
                if path.startswith(prefix) and regex.match(path[len(prefix) :]):
                    return prefix + declared
            return declared
        mounted = str(scope.get("root_path", ""))
        if mounted != root and mounted.startswith(root):  # a mount (static files) took it
            return mounted[len(root) :] + "/{path}"
        return UNMATCHED


# ------------------------------------------------------------------ exposition


class Exposition:
    """The metrics of one app: this process' registry and the app's database counts."""

    def __init__(self, db: Database, token: str | None, admin_token: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(DatabaseCollector(db))
        self.token = token
        self.admin_token = admin_token

    def check(self, authorization: str | None) -> None:
        """Without a metrics token: open, like /health. With one: that token or the admin
        token, as ``Authorization: Bearer``."""
        if self.token is None:
            return
        given = bearer_token(authorization).encode()
        if not any(hmac.compare_digest(given, t.encode()) for t in (self.token, self.admin_token)):
            raise Unauthorized(
                "invalid token for /metrics: send the metrics token (metrics_token) or the "
                "admin token"
            )

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition in the format ``accept`` asks for (Prometheus text by default):
        the body and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(_Both(PROCESS_REGISTRY, self.registry)), content_type


class _Both:
    """Two registries read as one by the encoders (they only call ``collect``)."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Metric]:
        for r in self.registries:
            yield from r.collect()


class InsecureMetricsToken(ValueError):
    """metrics_token is set but short or a placeholder."""


def install(app: FastAPI, ctx: AppContext) -> None:
    """Add the request timer (outermost, so every answer is timed) and ``GET /metrics``."""
    from coordinator.api.system import metrics_router

    token = ctx.settings.metrics_token or None
    if token is not None and (problem := admin_token_problem(token)):
        raise InsecureMetricsToken(
            f"refusing to start: metrics_token is unusable: {problem.replace('admin', 'metrics')}"
        )
    app.state.metrics = Exposition(ctx.db, token, ctx.settings.admin_token)
    app.include_router(metrics_router)
    app.add_middleware(RequestTimer, prefixes=("", API_PREFIX))
