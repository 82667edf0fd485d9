"""Which models are live, health, readiness."""

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from services.gateway.api.schemas import SystemOut
from shared.config import get_settings
from shared.health import PROCESS_DEPENDENCIES, dependencies_ready
from shared.i18n import current_locale, say

router = APIRouter(tags=["system"])
# Pages and probes answer HEAD like GET without a body (RFC 9110 9.3.2): uptime checkers and load
# balancers use it. FastAPI, unlike Starlette's Route, does not add HEAD to a GET route by itself.
GET_HEAD = ["GET", "HEAD"]
probes = APIRouter(include_in_schema=False)


@router.get("/system", response_model=SystemOut)
def system_info() -> SystemOut:
    s = get_settings()
    demo = s.model_preset == "tiny"
    return SystemOut(
        model_preset=s.model_preset,
        demo=demo,
        message=say("system.demo" if demo else "system.real", current_locale.get()),
        min_photos=s.min_training_photos,
        photo_retention_days=s.photo_retention_days,
    )


# HEAD apart and out of the schema: with GET in one api_route, both operations got one operationId
# ("Duplicate Operation ID system_info_v1_system_get"), which generated clients trip on.
router.add_api_route(
    "/system", system_info, methods=["HEAD"], response_model=SystemOut, include_in_schema=False
)


@probes.api_route("/healthz", methods=GET_HEAD, response_class=PlainTextResponse)
def healthz() -> str:
    """Liveness: the process answers; never looks at a dependency."""
    return "ok"


@probes.api_route("/readyz", methods=GET_HEAD, response_class=PlainTextResponse)
def readyz() -> PlainTextResponse:
    """Readiness: 503 naming each dependency that does not answer within `readiness_timeout`."""
    ok, why = dependencies_ready(PROCESS_DEPENDENCIES["gateway"])
    return PlainTextResponse(why, status_code=200 if ok else 503)
