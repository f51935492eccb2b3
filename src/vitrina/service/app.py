"""``create_app``: wiring only. Shared types live in ``core``, errors in ``errors``, presentation
in ``present``; the routes in ``api`` (JSON) and ``web`` (pages) import from those, never from here."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .._version import __version__
from . import api, explore, tiles, web
from . import workbench as workbench_routes
from .core import Service, ServiceConfig
from .errors import install_error_handlers
from .middleware import BodyLimit, CommonHeaders, HeadAsGet


def create_app(collection: str | Path | ServiceConfig, **options: Any) -> FastAPI:
    """The JSON API and web page for one collection. ``options`` are ``ServiceConfig`` fields."""
    config = collection if isinstance(collection, ServiceConfig) else ServiceConfig(collection=collection, **options)
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        await run_in_threadpool(service.start)
        yield

    app = FastAPI(
        title=config.title or f"vitrina: {service.name}",
        version=__version__,
        description='Search a digitised image collection by text, by image, or both. Errors are `{"error": {"code", "message", "request_id"}}`.',
        lifespan=lifespan,
        docs_url=None,  # served by web.py from the package's own copy of Swagger UI / ReDoc (no CDN)
        redoc_url=None,
    )
    app.state.service = service

    install_error_handlers(app)
    app.include_router(api.build_router(config))
    app.include_router(web.router)
    app.include_router(explore.router)
    app.include_router(tiles.router)
    app.include_router(workbench_routes.router)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    # BodyLimit sits inside CORS, so that its 413 carries the CORS headers a browser needs to read it.
    app.add_middleware(CommonHeaders)
    app.add_middleware(BodyLimit, limit=config.max_upload_bytes + 64 * 1024)  # room for multipart framing
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_credentials=False,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    app.add_middleware(HeadAsGet)
    return app
