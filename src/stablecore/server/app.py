"""The FastAPI application: wires store, event hub and engine, maps errors to status codes."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from stablecore import __version__
from stablecore.config import Settings
from stablecore.engine.engine import Engine
from stablecore.errors import InvalidParams, MethodNotAllowed, NotFound, StableCoreError, clip
from stablecore.manager.installer import isolated_envs
from stablecore.server.auth import Auth, SignInLimit, sign_in_required
from stablecore.server.events import EventHub
from stablecore.server.guards import BodyLimit, HostOriginGuard, error_headers
from stablecore.server.model_routes import router as model_router
from stablecore.server.node_routes import router as node_router
from stablecore.server.plugin_routes import router as plugin_router
from stablecore.server.routes import router
from stablecore.server.user_routes import router as user_router
from stablecore.server.workflow_routes import router as workflow_router
from stablecore.store import Store
from stablecore.users import Users

WEB_DIST = Path(__file__).resolve().parents[3] / "web" / "dist"
NO_UI = """<!doctype html><title>stable-core</title><body style="font-family:sans-serif">
<h1>stable-core is running</h1><p>The web UI is not built ({dist} is missing).
Build it with <code>make run</code> (it runs <code>npm ci && npm run build</code> in
<code>web/</code>). The API is at <a href="/docs">/docs</a>.</p></body>"""
LOCATIONS = ("body", "query", "path", "header", "cookie")


class ErrorBody(BaseModel):
    """Every error answer of the API has this shape (it is `StableCoreError.to_dict`)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="the error's type, e.g. NotFound, InvalidParams")
    detail: str = Field(description="what went wrong, naming the bad value")
    field: str | None = Field(None, description="the request field at fault, if one is")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": HTTPStatus(code).phrase}
    for code in (400, 401, 403, 404, 409, 413, 415, 422, 503)
}


def invalid_request(errors: Sequence[Any]) -> InvalidParams:
    """FastAPI's request validation errors as one InvalidParams naming the first field.

    A body that may be one of several shapes (a job or a list of jobs) gets errors per shape,
    tagged with the shape's name; those saying "not this shape" are left out when others exist.
    """
    problems = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        loc = loc[1:] if loc[:1] and loc[0] in LOCATIONS else loc
        tags = [p for p in loc if "[" in p or p[:1].isupper()]  # JobRequest, list[JobRequest]
        field = ".".join(p for p in loc if p not in tags) or "body"
        msg = ("unknown field" if err.get("type") == "extra_forbidden"
               else str(err.get("msg", "")).removeprefix("Value error, "))
        wrong_shape = bool(tags) and str(err.get("type", "")).endswith("_type")
        problems.append((wrong_shape, field, msg))
    kept = [p for p in problems if not p[0]] or problems
    return InvalidParams("; ".join(f"{f}: {m}" for _, f, m in kept), field=kept[0][1])


class NoRoute:
    """The last /api route: 405 (with Allow) for a path that takes other methods, else 404,
    so nothing under /api falls through to the web UI's static files."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.route = Route("/api/{path:path}", self, include_in_schema=False)

    def allowed(self, path: str) -> list[str]:
        """The methods documented for `path`; as in OpenAPI, a concrete path
        (/api/plugins/reload) is matched before a templated one (/api/plugins/{name})."""
        parts = path.split("/")
        found = []
        for template, operations in self.app.openapi()["paths"].items():
            names = template.split("/")
            if len(names) == len(parts) and all(
                    n == p or (n.startswith("{") and p) for n, p in zip(names, parts, strict=True)):
                found.append((template.count("{"), sorted(m.upper() for m in operations)))
        return min(found)[1] if found else []

    def answer(self, method: str, path: str) -> JSONResponse:
        allowed = self.allowed(path)
        if not allowed:
            error: StableCoreError = NotFound(f"no API route {clip(path)!r}")
            return JSONResponse(error.to_dict(), status_code=error.status)
        allow = ", ".join(allowed)
        error = MethodNotAllowed(f"{clip(method, 20)} is not allowed on {clip(path)!r}; "
                                 f"allowed: {allow}", field="method")
        return JSONResponse(error.to_dict(), status_code=error.status, headers={"Allow": allow})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.answer(scope["method"], scope["path"])(scope, receive, send)


FREEZE_AFTER_S = 2.0


def freeze_heap() -> None:
    gc.collect()
    gc.freeze()


def create_app(settings: Settings, web_dist: Path = WEB_DIST) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = EventHub()
        store = Store(settings.data_dir, on_event=hub.publish)
        engine = Engine(settings, store, partial(isolated_envs, settings.plugins_home))
        app.state.settings, app.state.hub, app.state.store = settings, hub, store
        app.state.engine = engine
        app.state.users, app.state.sign_in_limit = Users(store), SignInLimit()
        await engine.start()
        # What is alive a moment after start (modules, the app, the catalog) lives as long as
        # the server: kept out of the collector, a full collection no longer walks it (a p99
        # of ~12 -> ~7 ms). Done after start-up, so it does not delay being ready.
        asyncio.get_running_loop().call_later(FREEZE_AFTER_S, freeze_heap)
        try:
            yield
        finally:
            await engine.stop()
            store.close()

    app = FastAPI(title="stable-core", version=__version__, lifespan=lifespan)
    app.include_router(plugin_router, responses=ERROR_RESPONSES)
    app.include_router(router, responses=ERROR_RESPONSES)
    app.include_router(model_router, responses=ERROR_RESPONSES)
    app.include_router(node_router, responses=ERROR_RESPONSES)
    app.include_router(user_router, responses={**ERROR_RESPONSES, 429: {
        "model": ErrorBody, "description": "Too many failed sign-ins (Retry-After)"}})
    app.include_router(workflow_router, responses=ERROR_RESPONSES)
    app.router.routes.append(NoRoute(app).route)

    @app.exception_handler(StableCoreError)
    async def on_error(request: Request, exc: StableCoreError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = invalid_request(exc.errors())
        return JSONResponse(error.to_dict(), status_code=error.status)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        name = HTTPStatus(exc.status_code).phrase.title().replace(" ", "").replace("-", "")
        return JSONResponse({"error": name, "detail": clip(str(exc.detail), 400)},
                            status_code=exc.status_code, headers=exc.headers)

    if (web_dist / "index.html").is_file():
        app.mount("/", StaticFiles(directory=web_dist, html=True), name="web")
    else:
        @app.get("/", include_in_schema=False)
        async def no_ui() -> HTMLResponse:
            return HTMLResponse(NO_UI.format(dist=web_dist), status_code=503)

    # the first added runs innermost: the Host/Origin guard, then who calls, then the size
    app.add_middleware(BodyLimit, limit=int(settings.max_body_mb * 2**20))
    app.add_middleware(Auth, settings=settings)
    app.add_middleware(HostOriginGuard, allowed_hosts=settings.allowed_hosts,
                       check_host=lambda scope: not sign_in_required(settings,
                                                                    scope["app"].state.users))
    return app
