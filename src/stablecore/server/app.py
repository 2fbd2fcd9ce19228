"""The FastAPI application: wires store, event hub and engine, maps errors to status codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from stablecore import __version__
from stablecore.config import Settings
from stablecore.engine.engine import Engine
from stablecore.errors import StableCoreError
from stablecore.server.auth import TokenAuth
from stablecore.server.events import EventHub
from stablecore.server.model_routes import router as model_router
from stablecore.server.plugin_routes import router as plugin_router
from stablecore.server.routes import router
from stablecore.store import Store

WEB_DIST = Path(__file__).resolve().parents[3] / "web" / "dist"
NO_UI = """<!doctype html><title>stable-core</title><body style="font-family:sans-serif">
<h1>stable-core is running</h1><p>The web UI is not built ({dist} is missing).
Build it with <code>make run</code> (it runs <code>npm ci && npm run build</code> in
<code>web/</code>). The API is at <a href="/docs">/docs</a>.</p></body>"""


def create_app(settings: Settings, web_dist: Path = WEB_DIST) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = EventHub()
        store = Store(settings.data_dir, on_event=hub.publish)
        engine = Engine(settings, store)
        app.state.settings, app.state.hub, app.state.store = settings, hub, store
        app.state.engine = engine
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()
            store.close()

    app = FastAPI(title="stable-core", version=__version__, lifespan=lifespan)
    app.include_router(plugin_router)
    app.include_router(router)
    app.include_router(model_router)

    @app.exception_handler(StableCoreError)
    async def on_error(request: Request, exc: StableCoreError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    if (web_dist / "index.html").is_file():
        app.mount("/", StaticFiles(directory=web_dist, html=True), name="web")
    else:
        @app.get("/", include_in_schema=False)
        async def no_ui() -> HTMLResponse:
            return HTMLResponse(NO_UI.format(dist=web_dist), status_code=503)

    if settings.token:
        app.add_middleware(TokenAuth, token=settings.token)
    return app
