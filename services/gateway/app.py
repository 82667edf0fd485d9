"""The gateway: the public /v1 API, the web page, health and metrics."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from slowapi.errors import RateLimitExceeded

from services.gateway.api.errors import install_validation_errors
from services.gateway.api.language import install_languages
from services.gateway.api.router import api_router
from services.gateway.api.routes.system import GET_HEAD, probes
from services.gateway.body_limits import RequestBodyLimits
from services.gateway.head_requests import HeadAsGet
from services.gateway.metrics import RequestMetrics
from services.gateway.outages import install_outage_handlers
from services.gateway.ratelimit import limiter
from shared import storage
from shared.db_async import close_read_pool
from shared.i18n import current_locale, say
from shared.jobs import IdempotencyConflict, IdempotencyInProgress

STATIC = Path(__file__).parent / "static"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build the S3 clients before the first request: loading botocore's models takes a second of CPU,
    which would otherwise count against the first upload's time bound. On shutdown, close the
    signed-in reads' pool (made on their first use, in this process)."""
    storage.client()
    storage.public_client()
    yield
    await close_read_pool()


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="Portrait Studio",
        version="0.1.0",
        description=(
            "Studio portraits from your own photos. Jobs follow one contract: `queued → running → "
            "succeeded | failed | canceled`, progress as server-sent events, `Idempotency-Key` on "
            "every request that creates a job. On the `tiny` model preset (demo and CI), images are "
            "noise from small random-weight models; see GET /v1/system. Errors answer "
            '`{"detail": "a sentence"}` in English, or in Korean with `Accept-Language: ko` or '
            "`?lang=ko` on any request."
        ),
    )
    app.state.limiter = limiter
    install_validation_errors(app)  # 422s as one sentence, like every other error
    app.include_router(api_router)
    app.include_router(probes)

    @app.exception_handler(RateLimitExceeded)
    async def too_many(request: Request, exc: RateLimitExceeded) -> JSONResponse:
        return JSONResponse(
            {"detail": say("request.rate_limited", current_locale.get())},
            status_code=429,
            headers={"Retry-After": "60"},
        )

    install_outage_handlers(app)
    install_languages(app)  # sentences in the request's language (Accept-Language)

    @app.exception_handler(IdempotencyConflict)
    async def idempotency_conflict(request: Request, exc: IdempotencyConflict) -> JSONResponse:
        return JSONResponse({"detail": say("request.key_reused", current_locale.get())}, status_code=409)

    @app.exception_handler(IdempotencyInProgress)
    async def idempotency_in_progress(request: Request, exc: IdempotencyInProgress) -> JSONResponse:
        return JSONResponse(
            {"detail": say("request.key_in_progress", current_locale.get())},
            status_code=409,
            headers={"Retry-After": "1"},
        )

    app.add_middleware(RequestBodyLimits)  # 413 / 408 with a sentence
    app.add_middleware(RequestMetrics)
    app.add_middleware(HeadAsGet)  # outermost: every route that takes GET takes HEAD

    @app.get("/metrics", include_in_schema=False)
    def no_public_metrics() -> JSONResponse:
        """Metrics are for Prometheus inside the cluster: served on HEALTH_PORT (shared/health.py)."""
        return JSONResponse({"detail": say("not_found.metrics", current_locale.get())}, 404)

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.api_route("/", methods=GET_HEAD, include_in_schema=False)
    def index() -> Response:
        page = STATIC / "index.html"
        if not page.exists():
            return JSONResponse({"detail": say("not_found.page", current_locale.get())}, 404)
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    return app
