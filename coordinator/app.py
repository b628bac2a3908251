"""The FastAPI application: ``create_app(settings)``.

Background tasks (lease reaper, conversion dispatcher, on PostgreSQL the NOTIFY bus) live in
the lifespan: started with the server, cancelled on shutdown (running converter processes are
killed and the items this coordinator claimed go back to pending). Several coordinators may
share one PostgreSQL database and data_dir (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import bnnbench
from bnnbench.schemas import API_PREFIX, Endpoint, ErrorOut
from bnnbench.settings import CoordinatorSettings
from coordinator import queue, telemetry, web
from coordinator.api import (
    agents,
    artifacts,
    compare,
    devices,
    jobs,
    models,
    plots,
    results,
    system,
    tokens,
)
from coordinator.auth import check_admin_token
from coordinator.context import AppContext
from coordinator.conversion import ConversionDispatcher, recover_interrupted
from coordinator.db import Database
from coordinator.errors import CoordinatorError
from coordinator.signals import PgSignalBus
from coordinator.store import BlobStore
from coordinator.web.session import Sessions

log = logging.getLogger("bnnbench.coordinator")

STATIC_DIR = Path(__file__).parent / "static"
DOCS_STATIC = "/static/apidocs"  # Swagger UI and ReDoc, served from the installed package
# the docs pages reach nothing but this server: ReDoc's footer logo (a CDN image) is refused
# and hidden, and no spec or font leaves for a third party
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'"
)


def docs_assets_dir() -> Path:
    """Swagger UI (swagger-ui-bundle.js, swagger-ui.css) and ReDoc (redoc.standalone.js) as
    shipped by the fastapi-offline package: /docs and /redoc work without the internet."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def _mount_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc load their scripts from this server, not a CDN."""
    app.mount(DOCS_STATIC, StaticFiles(directory=docs_assets_dir()), name="apidocs")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
            # no spec validation badge: it would send the spec to validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page


async def _reaper(ctx: AppContext) -> None:
    """Requeue jobs whose lease expired (agent died, network gone)."""

    def _once() -> int:
        with ctx.db.session() as s:
            return queue.requeue_expired(s, ctx.settings.max_attempts)

    while True:
        await asyncio.sleep(ctx.settings.reaper_interval_seconds)
        try:
            n = await asyncio.to_thread(_once)
        except OperationalError as exc:  # the database is away (restart): one line per try
            log.warning("lease reaper: database unavailable, retrying: %s", str(exc).split("\n")[0])
            continue
        except Exception:
            log.exception("lease reaper failed; retrying")
            continue
        if n:
            log.info("lease reaper: %d expired lease(s) requeued or failed", n)
            ctx.jobs_signal.notify()


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413 before the app parses it: FastAPI
    reads a JSON body whole into memory, then parses and validates it. A declared
    Content-Length over the limit is refused unread; a chunked body is counted as it arrives.
    The routes in ``exempt`` ((method, path): the model upload, which streams to disk under
    its own max_upload_bytes) are passed through untouched."""

    def __init__(self, app: ASGIApp, limit: int, exempt: frozenset[tuple[str, str]]) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # the route's path below any root_path the server is mounted at
        path = scope.get("path", "").removeprefix(scope.get("root_path", ""))
        if scope["type"] != "http" or (scope["method"], path) in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit():
            n = int(declared) if len(declared) <= 18 else None  # None: past any limit
            if n is None or n > self.limit:
                await self._refuse(scope, receive, send, n)
                return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nobody to answer
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(scope, receive, send, None)
                return
            more = message.get("more_body", False)
        body: Message | None = {"type": "http.request", "body": b"".join(chunks)}

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()  # later calls: disconnect detection (the long poll)

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int | None) -> None:
        what = f"request body of {size} bytes" if size is not None else "request body"
        detail = f"{what} exceeds the limit of {self.limit} bytes (max_json_bytes)"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def _loc_part(x: object) -> str:
    # a location may be a client's dict key of any length: the answer names it, briefly
    s = str(x)
    return s if len(s) <= 40 else s[:37] + "..."


def _validation_detail(exc: RequestValidationError, most: int = 10) -> str:
    errors = exc.errors()
    parts = []
    for err in errors[:most]:  # a list of 100 000 bad items answers with a few, and the count
        loc = ".".join(_loc_part(x) for x in err.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    if len(errors) > most:
        parts.append(f"and {len(errors) - most} more")
    return "invalid request: " + "; ".join(parts)


def create_app(settings: CoordinatorSettings | None = None) -> FastAPI:
    settings = settings or CoordinatorSettings()
    check_admin_token(settings.admin_token)  # a missing, short or placeholder one: refused
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ctx = AppContext(settings=settings, db=Database(settings), store=BlobStore(settings.data_dir))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        ctx.jobs_signal.bind(loop)
        ctx.work_signal.bind(loop)
        log.info("coordinator instance %s", ctx.instance_id)
        if ctx.db.engine.dialect.name == "postgresql":
            # notify() reaches every coordinator on this database (coordinator.signals)
            ctx.bus = PgSignalBus(
                ctx.db.engine, ctx.instance_id, [ctx.jobs_signal, ctx.work_signal]
            )
            ctx.bus.start()
            if not await asyncio.to_thread(ctx.bus.wait_listening, 10.0):
                log.warning("LISTEN not in place yet: other coordinators' wake-ups come late")
        # partial writes of crashed processes; a live coordinator's on this data_dir are kept
        ctx.store.clean_tmp()
        # only work whose coordinator died: another live one keeps its claims
        n = await asyncio.to_thread(recover_interrupted, ctx.db, None, ctx.holder_alive)
        if n:
            log.info("resuming %d interrupted analysis/conversion item(s)", n)
        reaper = asyncio.create_task(_reaper(ctx), name="lease-reaper")
        dispatcher = None
        if settings.conversion_workers > 0:
            dispatcher = ConversionDispatcher(
                settings, ctx.db, ctx.store, ctx.work_signal, ctx.jobs_signal, ctx.instance_id
            )
            dispatcher.start()
        else:
            log.warning("conversion_workers=0: analyses and conversions are paused")
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            if dispatcher is not None:
                await dispatcher.stop()
            if ctx.bus is not None:
                await asyncio.to_thread(ctx.bus.stop)
            ctx.store.close()
            ctx.db.dispose()

    app = FastAPI(
        title="bnnbench coordinator",
        version=bnnbench.__version__,
        description="Benchmark binarized neural networks on real hardware: upload ONNX models, "
        "convert them per library, queue jobs for agents, collect hardware-track tables.",
        lifespan=lifespan,
        docs_url=None,  # _mount_docs serves them with local assets
        redoc_url=None,
        responses={
            401: {"model": ErrorOut},
            403: {"model": ErrorOut},
            404: {"model": ErrorOut},
            409: {"model": ErrorOut},
            413: {"model": ErrorOut},
            422: {"model": ErrorOut},
        },
    )
    app.state.ctx = ctx
    upload = ("POST", API_PREFIX + Endpoint.MODELS)  # streamed to disk, capped on its own
    app.add_middleware(BodyLimit, limit=settings.max_json_bytes, exempt=frozenset({upload}))
    app.state.web_sessions = Sessions(settings.admin_token)  # dashboard sign-ins

    @app.exception_handler(CoordinatorError)
    async def _coordinator_error(_: Request, exc: CoordinatorError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal server error ({type(exc).__name__}); see the server log"},
            status_code=500,
        )

    for r in (system, models, artifacts, jobs, agents, tokens, devices, results, plots, compare):
        app.include_router(r.router, prefix=API_PREFIX)
    # /health too, for load balancers and scripts
    app.include_router(system.router, include_in_schema=False)
    _mount_docs(app)  # before /static: the more specific mount must match first
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(web.router)
    telemetry.install(app, ctx)
    return app
