"""Rows the in-process tests start from, as the API and the workers leave them: a consented user, a
likeness, a job, and one finished portrait as the pipeline hands it to the generate worker."""

import io
import uuid
from types import SimpleNamespace

from PIL import Image
from sqlalchemy import func

from shared.db import session_scope
from shared.models import Job, JobStatus, Likeness, User


def user() -> uuid.UUID:
    """A user who consented to face processing; returns its id."""
    uid = uuid.uuid4()
    with session_scope() as session:
        session.add(
            User(id=uid, email=f"{uid.hex}@example.com", password_hash="x", face_consent_at=func.now())
        )
    return uid


def likeness(uid: uuid.UUID, status: str = "ready") -> uuid.UUID:
    with session_scope() as session:
        row = Likeness(user_id=uid, status=status, class_word="woman", trigger_word="ohwx", base_model="b")
        session.add(row)
        session.flush()
        return row.id


def job(
    uid: uuid.UUID, kind: str, job_input: dict | None = None, *, running_on: str | None = None
) -> uuid.UUID:
    """A job row, `queued`, or `running` on worker `running_on` with a fresh heartbeat."""
    row = Job(kind=kind, user_id=uid, status=JobStatus.queued, input=job_input or {}, max_attempts=10)
    if running_on is not None:
        row.status, row.worker, row.heartbeat_at = JobStatus.running, running_on, func.now()
    with session_scope() as session:
        session.add(row)
        session.flush()
        return row.id


def portrait_result(style: str = "soft-beauty", seed: int = 7) -> SimpleNamespace:
    """One finished portrait as `PortraitPipeline` hands it to the generate worker's `_store`."""
    image = Image.new("RGB", (64, 64), (200, 120, 90))
    png = io.BytesIO()
    image.save(png, format="PNG")
    return SimpleNamespace(
        style=style, seed=seed, png=png.getvalue(), image=image, width=64, height=64,
        identity_score=0.9, face_found=True, meta={},
    )  # fmt: skip
