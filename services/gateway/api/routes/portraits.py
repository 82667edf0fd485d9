"""Styles and portraits: list the styles, start a generation, list, zip and delete portraits."""

import tempfile
import uuid
import zipfile
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.gateway.api.deletion import FILES_DELETED_LATER, delete_with_objects
from services.gateway.api.deps import (
    ConsentedUser,
    CurrentUser,
    IdempotencyKey,
    SessionDep,
    conflict,
    not_found,
    owned,
)
from services.gateway.api.face_data import ACTIVE
from services.gateway.api.language import Refusal
from services.gateway.api.schemas import BodyIn, JobOut, JsonUUID, Message
from services.gateway.idempotency import replay
from shared import storage
from shared.config import get_settings
from shared.contracts import GeneratePortraits
from shared.contracts.generate_portraits import MAX_COUNT
from shared.jobs import IdempotencyConflict, enqueue
from shared.jobs.outbox import request_fingerprint
from shared.models import Job, Likeness, Portrait, PosePhoto, User
from shared.quota import check_daily_quota
from shared.styles import PREVIEW_TYPES, load_styles, preview_path

router = APIRouter(prefix="/portraits", tags=["portraits"])
styles_router = APIRouter(prefix="/styles", tags=["styles"])

KIND = GeneratePortraits.kind


# -- styles -----------------------------------------------------------------------------------


class StyleOut(BaseModel):
    id: str
    name: dict[str, str]  # by locale: {"en": ..., "ko": ...} (shared/styles/*.yaml)
    description: dict[str, str]  # by locale
    preview_url: str | None  # the style's sample card (an SVG drawn from its YAML); null: none


class StyleList(BaseModel):
    styles: list[StyleOut]


@styles_router.get("", response_model=StyleList)
def list_styles(user: CurrentUser) -> StyleList:
    return StyleList(
        styles=[
            StyleOut(
                id=s.id,
                name=s.name.model_dump(),
                description=s.description.model_dump(),
                preview_url=f"/v1/styles/{s.id}/preview" if s.preview else None,
            )
            for s in load_styles().values()
        ]
    )


@styles_router.get("/{style_id}/preview", response_class=FileResponse, responses={404: {"model": Message}})
def style_preview(style_id: str) -> FileResponse:
    """The style's sample card (SVG) or picture; public (an <img> sends no token), 404 when it has
    none. An SVG opened on its own runs no script (Content-Security-Policy).
    \f
    The cards are drawn from the styles' YAML by services/generator/style_cards.py."""
    style = load_styles().get(style_id)
    if style is None or style.preview is None:
        raise not_found("style_preview")
    path = preview_path(style)
    return FileResponse(
        path,
        media_type=PREVIEW_TYPES[path.suffix.lower()],
        headers={
            "Cache-Control": "max-age=3600",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )


# -- portraits --------------------------------------------------------------------------------


STYLE_UNKNOWN = "not one of the styles: {choices}"


def known_style(style_id: str) -> str:
    """`style_id` if the catalogue has it (shared/styles), else a 422 `style_unknown` at its place in
    the list that names the styles, never the value sent (a typo, or 1,000 emoji, or a NUL byte)."""
    styles = load_styles()
    if style_id not in styles:
        raise PydanticCustomError("style_unknown", STYLE_UNKNOWN, {"choices": ", ".join(styles)})
    return style_id


def _style_enum(schema: dict) -> None:
    """The catalogue's style ids as the OpenAPI `enum` of a style (a generated client's choices)."""
    schema["enum"] = list(load_styles())


StyleId = Annotated[
    str,
    Field(max_length=64, examples=["studio-business"], json_schema_extra=_style_enum),
    AfterValidator(known_style),
]
STYLES_REPEATED = "{style} is listed more than once: choose each style once, and set count for more of one"


def each_style_once(styles: list[str]) -> list[str]:
    """`styles` if no style repeats, else a 422 `styles_repeated` naming it: a repeated style was
    merged silently, and the client got fewer portraits than it asked for (`count` asks for more)."""
    seen: set[str] = set()
    for style in styles:
        if style in seen:
            raise PydanticCustomError("styles_repeated", STYLES_REPEATED, {"style": style})
        seen.add(style)
    return styles


class PortraitsIn(BodyIn):
    likeness_id: JsonUUID
    styles: Annotated[
        list[StyleId],
        Field(min_length=1, max_length=16, json_schema_extra={"uniqueItems": True}),
        AfterValidator(each_style_once),
    ]
    count: int = Field(default=1, ge=1, le=MAX_COUNT)
    pose_id: JsonUUID | None = None  # one of the user's ready pose photos, in place of each style's pose


class PortraitsStarted(BaseModel):
    job: JobOut


class PortraitOut(BaseModel):
    id: uuid.UUID
    job_id: uuid.UUID | None
    style: str
    url: str = Field(description="the PNG, to show (presigned, valid `urls_expire_in` seconds)")
    download_url: str = Field(
        description="the PNG as a download (`Content-Disposition: attachment`), presigned like `url`"
    )
    urls_expire_in: int = Field(description="seconds the URLs stay valid; read the list again for new ones")
    thumb_url: str | None
    identity_score: float | None
    face_found: bool
    width: int
    height: int
    created_at: datetime | None

    @classmethod
    def of(cls, p: Portrait) -> "PortraitOut":
        return cls(
            id=p.id,
            job_id=p.job_id,
            style=p.style,
            url=storage.presign_get(p.object_key),
            download_url=storage.presign_get(p.object_key, filename=download_name(p)),
            urls_expire_in=get_settings().presign_seconds,
            thumb_url=storage.presign_get(p.thumb_key) if p.thumb_key else None,
            identity_score=p.identity_score,
            face_found=p.face_found,
            width=p.width,
            height=p.height,
            created_at=p.created_at,
        )


def download_name(p: Portrait) -> str:
    """The file name a download is saved under: `portrait-<style>-<first 8 of its id>.png`."""
    return f"portrait-{p.style}-{str(p.id)[:8]}.png"


class PortraitList(BaseModel):
    portraits: list[PortraitOut]


@router.post("", status_code=202, response_model=PortraitsStarted)
def start_generation(
    body: PortraitsIn, user: ConsentedUser, session: SessionDep, idempotency_key: IdempotencyKey
) -> PortraitsStarted:
    """Generate `count` portraits in each chosen style; follow the returned job for progress."""
    styles = body.styles  # each once (PortraitsIn), in the order asked
    likeness = owned(session, Likeness, body.likeness_id, user, "Likeness")
    if likeness.status != "ready":
        raise conflict("portraits.likeness_not_ready", status=likeness.status)

    pose_id = None
    if body.pose_id is not None:
        pose = owned(session, PosePhoto, body.pose_id, user, "Pose")
        if pose.status != "ready":
            raise conflict("portraits.pose_not_ready", status=pose.status)
        pose_id = pose.id
    job_input = GeneratePortraits(likeness_id=likeness.id, styles=styles, count=body.count, pose_id=pose_id)

    def add_job() -> Job:
        try:
            return enqueue(session, job_input, user_id=user.id, idempotency_key=idempotency_key)
        except IdempotencyConflict:
            raise conflict("request.key_reused") from None

    fingerprint = request_fingerprint(KIND, job_input.to_row())
    first = replay(session, user.id, idempotency_key, GeneratePortraits, fingerprint)
    if first is not None:  # a retried request: the first job
        return PortraitsStarted(job=JobOut.of(first.job))

    settings = get_settings()
    # Fair share of the GPU pool; the user's row lock makes these checks and the insert atomic.
    session.execute(select(User.id).where(User.id == user.id).with_for_update())
    running = (
        session.scalar(
            select(func.count(Job.id)).where(Job.user_id == user.id, Job.kind == KIND, Job.status.in_(ACTIVE))
        )
        or 0
    )
    if running >= settings.max_running_jobs_per_user:
        raise conflict("portraits.busy", count=running)
    over = check_daily_quota(session, user.id, len(styles) * body.count)
    if over is not None:
        raise Refusal(status.HTTP_429_TOO_MANY_REQUESTS, "portraits.quota", limit=over.limit, left=over.left)
    job = add_job()
    session.commit()  # the job and its outbox row together
    return PortraitsStarted(job=JobOut.of(job))


def _portraits(session: Session, user: User, job_id: uuid.UUID | None) -> list[Portrait]:
    """The user's portraits, best first; of one job with `job_id` (404 unless the job is the user's)."""
    query = select(Portrait).where(Portrait.user_id == user.id)
    if job_id is not None:
        owned(session, Job, job_id, user, "Job")  # another user's job: 404, not an empty list
        query = query.where(Portrait.job_id == job_id)
    return list(
        session.scalars(
            query.order_by(Portrait.identity_score.desc().nulls_last(), Portrait.created_at, Portrait.id)
        ).all()
    )


@router.get("", response_model=PortraitList)
def list_portraits(
    user: CurrentUser, session: SessionDep, job_id: uuid.UUID | None = Query(default=None)
) -> PortraitList:
    """The user's portraits (of one job with `job_id`), best identity score first."""
    return PortraitList(portraits=[PortraitOut.of(p) for p in _portraits(session, user, job_id)])


@router.get("/zip")
def download_zip(user: CurrentUser, session: SessionDep, job_id: uuid.UUID = Query()):
    """All portraits of a job as one zip, in ranked order."""
    portraits = _portraits(session, user, job_id)
    if not portraits:
        raise not_found("job_portraits")
    spool = tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024)  # noqa: SIM115 (streamed)
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs: compressed
        for number, p in enumerate(portraits, start=1):
            zf.writestr(f"portrait-{number}-{p.style}.png", storage.get_bytes(p.object_key))
    spool.seek(0)
    return StreamingResponse(
        iter(lambda: spool.read(1 << 20), b""),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="portraits-{job_id}.zip"'},
        background=None,
    )


@router.delete("/{portrait_id}", status_code=204, responses=FILES_DELETED_LATER)
def delete_portrait(portrait_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Delete the portrait and its thumbnail: 204, or 202 with a sentence while S3 is down."""
    portrait = owned(session, Portrait, portrait_id, user, "Portrait")
    return delete_with_objects(session, portrait, [k for k in (portrait.object_key, portrait.thumb_key) if k])
