"""The database schema: SQLAlchemy 2 typed models. Alembic migrations live in shared/migrations."""

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Json = JSON().with_variant(JSONB(), "postgresql")


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: Json, list[Any]: Json}


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class User(Timestamped, Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    password_hash: Mapped[str] = mapped_column(String(255))
    locale: Mapped[str] = mapped_column(String(8), default="en")
    email_verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Face photos are biometric data: nothing is processed before explicit consent.
    face_consent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    email_results: Mapped[bool] = mapped_column(Boolean, default=True)
    deleting: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the erasure was asked for: shown while it is pending (GET /v1/me, the login refusal).
    deleting_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RefreshToken(Timestamped, Base):
    """Opaque refresh tokens, stored hashed. Each use rotates; reuse of a spent one revokes the family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EmailToken(Timestamped, Base):
    """Single-use, expiring tokens mailed to the user (address verification, password reset)."""

    __tablename__ = "email_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))  # "verify_email" | "reset_password"
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PhotoStatus(enum.StrEnum):
    checking = "checking"
    accepted = "accepted"
    rejected = "rejected"


class Photo(Timestamped, Base):
    __tablename__ = "photos"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    object_key: Mapped[str] = mapped_column(String(512))
    content_type: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[PhotoStatus] = mapped_column(
        Enum(PhotoStatus, name="photo_status"), default=PhotoStatus.checking
    )
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)  # words a person understands
    # The reason as a shared.i18n sentence ({key, values}), so it reads in English or Korean.
    reason_sentence: Mapped[dict[str, Any] | None] = mapped_column()
    face: Mapped[dict[str, Any] | None] = mapped_column()  # box, landmarks, size, sharpness
    # The 128-d dlib face embedding (float32), computed once by the photo check of a photo whose
    # face passed; the set's identity check (shared/identity.py) compares these.
    embedding: Mapped[list[float] | None] = mapped_column(ARRAY(REAL))
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PosePhoto(Timestamped, Base):
    """A photo whose pose the portraits may take (POST /v1/poses). It may show anyone: it is used
    for the pose only (OpenPose COCO-18 keypoints by the `pose_extract` job), never for a face."""

    __tablename__ = "pose_photos"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    object_key: Mapped[str] = mapped_column(String(512))  # the photo
    content_type: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="extracting")  # extracting|ready|rejected
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)  # words a person understands
    keypoints: Mapped[dict[str, Any] | None] = mapped_column()  # OpenPose JSON on the photo's canvas
    preview_key: Mapped[str | None] = mapped_column(String(512))  # skeleton over the photo (JPEG)


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled)


class Job(Timestamped, Base):
    """A unit of background work. Status changes only through shared/jobs/state.py."""

    __tablename__ = "jobs"
    __table_args__ = (
        # NULLS NOT DISTINCT (PostgreSQL 15+): system jobs (no owner) are deduplicated too.
        Index(
            "uq_jobs_idempotency",
            "user_id",
            "idempotency_key",
            unique=True,
            postgresql_nulls_not_distinct=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status"), default=JobStatus.queued, index=True
    )
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    input: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column()
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(255))
    # When its attempts began failing because a dependency was down (shared/jobs/retry.py).
    outage_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutboxMessage(Timestamped, Base):
    """A task to publish to Celery, committed in the same transaction as its job."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    task_name: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # Published only from this time on (a retry's backoff); None: at once.
    available_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LikenessStatus(enum.StrEnum):
    """Where a likeness stands. `canceled`: the user stopped its training (nothing went wrong; the
    photos stay and training can start again); `failed`: training ended with an error (the job's)."""

    training = "training"
    ready = "ready"
    failed = "failed"
    canceled = "canceled"


class Likeness(Timestamped, Base):
    """A per-user LoRA trained from the user's accepted photos."""

    __tablename__ = "likenesses"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(32), default=LikenessStatus.training)  # LikenessStatus
    class_word: Mapped[str] = mapped_column(String(32))
    trigger_word: Mapped[str] = mapped_column(String(32))
    base_model: Mapped[str] = mapped_column(String(128))
    object_prefix: Mapped[str | None] = mapped_column(String(512))
    photo_ids: Mapped[list[Any]] = mapped_column(default=list)
    scores: Mapped[dict[str, Any] | None] = mapped_column()
    meta: Mapped[dict[str, Any] | None] = mapped_column()


class Portrait(Timestamped, Base):
    __tablename__ = "portraits"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    likeness_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("likenesses.id", ondelete="SET NULL"))
    style: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    object_key: Mapped[str] = mapped_column(String(512))
    thumb_key: Mapped[str | None] = mapped_column(String(512))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    identity_score: Mapped[float | None] = mapped_column(Float)
    face_found: Mapped[bool] = mapped_column(Boolean, default=True)
    meta: Mapped[dict[str, Any] | None] = mapped_column()


class EmailDelivery(Timestamped, Base):
    """One row per mail event (services/notifier/delivery.py): committed `sending` before the SMTP
    server is asked, `sent` after its 250; the unique key makes a re-run task send nothing twice."""

    __tablename__ = "email_deliveries"
    __table_args__ = (UniqueConstraint("event_key", name="uq_email_deliveries_event"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    event_key: Mapped[str] = mapped_column(String(255))  # e.g. "job:<id>:portraits_ready"
    template: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="sending")  # sending|sent|failed|skipped
    message_id: Mapped[str | None] = mapped_column(String(255))
    # The job attempt that is sending it (`Job.id`, `Job.worker`): while that attempt runs, another
    # run of the event waits; once it is over, a row still `sending` has no known outcome.
    sender_job_id: Mapped[uuid.UUID | None] = mapped_column()
    sender_worker: Mapped[str | None] = mapped_column(String(255))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)


class AuditEvent(Timestamped, Base):
    """What happened, without personal data: subject is a salted hash, never an email or a name."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(64))
    subject_hash: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class PendingObject(Timestamped, Base):
    """An S3 object written before the row that names it commits (shared/pending_objects.py):
    deleted in that row's transaction; one still here after a grace period is an orphan."""

    __tablename__ = "pending_objects"

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
