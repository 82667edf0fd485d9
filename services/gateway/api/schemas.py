"""Request and response bodies of the public API."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import email_validator
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    Strict,
    model_validator,
)
from pydantic_core import PydanticCustomError

from services.gateway.api.errors import CONSENT_TRUE, NOT_MAILABLE, NULL_FIELD
from shared.i18n import Sentence, by_code, current_locale, job_error_message, stage_text
from shared.jobs.events import job_values
from shared.models import Job, Likeness, LikenessStatus, Photo, User


class Message(BaseModel):
    detail: str


class BodyIn(BaseModel):
    """A request body. A field it does not have is a 422 that names it: a typo (`local` for
    `locale`) or a field of another endpoint would otherwise be dropped while the answer says 200.

    Strict: a field takes JSON's own type (`true`/`false` for a bool, a number for an int), not
    `"yes"` or `"2"`. FastAPI validates the body after `json.loads` in pydantic's Python mode, where
    strict also refuses the strings JSON carries UUIDs, datetimes and enums in: give such a field a
    type that takes them (`JsonUUID`). tests/gateway/test_request_bodies.py sends every body.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


# A UUID as JSON carries it, a string (or a uuid.UUID from Python).
JsonUUID = Annotated[uuid.UUID, Strict(False)]


def json_bool(value: object) -> object:
    """`value` if it is JSON's true or false, else a 422 `bool_type`: a `Literal[True]` field takes
    1 as well, strict or not (1 == True in Python)."""
    if not isinstance(value, bool):
        raise PydanticCustomError("bool_type", "Input should be a valid boolean")
    return value


def consent_given(value: object) -> object:
    """JSON's true, else a 422 `consent_true` that says how to give consent and how it ends."""
    if value is not True:
        raise PydanticCustomError("consent_true", CONSENT_TRUE)
    return value


def not_null(value: object) -> object:
    """A PATCH field's value, never null: left out, the field keeps its value; a null for a field
    that cannot be null was dropped while the answer said 200."""
    if value is None:
        raise PydanticCustomError("null_forbidden", NULL_FIELD)
    return value


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # `null` is no value the field takes


T = TypeVar("T")
# A field of a PATCH body: `X` or left out (None on the model: read it with `exclude_unset`); null is
# a 422 naming it. Its OpenAPI schema is X's alone.
Patch = Annotated[T, BeforeValidator(not_null), Field(json_schema_extra=_no_default)]


def mailable(address: str) -> str:
    """An address our SMTP path can deliver to, as ASCII: an internationalized domain IDNA-encoded
    (`jose@exämple.com` -> `jose@xn--exmple-cua.com`, email-validator's `ascii_email`).

    Raises ValueError (a 422) for a local part outside ASCII: it needs SMTPUTF8 (RFC 6531), which
    the notifier does not use.
    """
    try:
        parts = email_validator.validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except email_validator.EmailNotValidError as exc:
        # Not email-validator's reason: it quotes the characters sent (README: never the values).
        raise ValueError(NOT_MAILABLE) from exc
    return parts.ascii_email


def ascii_domain(address: str) -> str:
    """The address as sign-up stored it (see `mailable`), for finding an account by its address."""
    parts = email_validator.validate_email(address, check_deliverability=False)
    return parts.ascii_email or parts.normalized


class SignupIn(BodyIn):
    email: Annotated[EmailStr, AfterValidator(mailable)]
    password: str = Field(min_length=10, max_length=256)
    locale: Literal["en", "ko"] | None = Field(
        default=None,
        description=(
            "The language of the account's mails (and of the web page's default). Not sent: the "
            "request's `Accept-Language` (`ko`, `ko-KR` -> Korean), else English."
        ),
    )


class LoginIn(BodyIn):
    email: Annotated[EmailStr, AfterValidator(ascii_domain)]
    password: str = Field(max_length=256)


class RefreshIn(BodyIn):
    refresh_token: str = Field(max_length=512)


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class TokenIn(BodyIn):
    token: str = Field(max_length=512)


class ResetRequestIn(BodyIn):
    email: Annotated[EmailStr, AfterValidator(ascii_domain)]


class ResetConfirmIn(BodyIn):
    token: str = Field(max_length=512)
    password: str = Field(min_length=10, max_length=256)


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    locale: str
    email_verified: bool
    face_consent_at: datetime | None
    email_results: bool
    created_at: datetime
    erasing_since: datetime | None = None  # the erasure asked for at this time is under way

    @classmethod
    def of(cls, user: User) -> "UserOut":
        return cls(
            id=user.id,
            email=user.email,
            locale=user.locale,
            email_verified=user.email_verified_at is not None,
            face_consent_at=user.face_consent_at,
            email_results=user.email_results,
            created_at=user.created_at,
            erasing_since=user.deleting_since if user.deleting else None,
        )


class UserPatch(BodyIn):
    """The account settings to change; a field left out keeps its value (null is a 422)."""

    locale: Patch[Literal["en", "ko"]] = None
    email_results: Patch[bool] = None


class ConsentIn(BodyIn):
    accept: Annotated[Literal[True], BeforeValidator(consent_given)]

    @model_validator(mode="before")
    @classmethod
    def accept_left_out(cls, data: Any) -> Any:
        """`{}` hears the hint that `false` hears (`consent_given`), not pydantic's "is missing",
        which does not say to send true; the field stays required in the schema."""
        if isinstance(data, dict) and "accept" not in data:
            return {**data, "accept": None}
        return data


class JobOut(BaseModel):
    id: uuid.UUID
    kind: str
    status: str
    progress: float
    stage: str | None = Field(description="the worker's stage label, e.g. `training step 2/36`")
    stage_text: str | None = Field(
        default=None, description="the stage as a phrase for people, in the request's language"
    )
    attempts: int
    max_attempts: int
    error_code: str | None
    error_message: str | None
    result: dict[str, Any] | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> "JobOut":
        """The job as the API shows it: `error_message` in the request's language. `job`: a Job, or a
        row with its columns (services/gateway/api/reads.py). The values of shared.jobs.events's
        `job_snapshot`, but the row's own (`job_values`: a UUID, datetimes): its strings, parsed back
        here, cost as much again on the most polled read."""
        return cls.model_validate(in_language(job_values(job)))


def in_language(snapshot: dict[str, Any], locale: str | None = None) -> dict[str, Any]:
    """A job snapshot (shared.jobs.events.job_snapshot) with its `error_message` in `locale`
    (default: the request's language; see shared.i18n.job_error_message) and `stage_text`, its stage
    as a phrase for people (shared.i18n.stage_text). A `result.last_error` stored before it held only
    a code (`EndpointConnectionError: Could not connect to the endpoint URL: ...`, naming the S3
    endpoint, bucket and object keys) is shown as its code only."""
    locale = locale or current_locale.get()
    result = snapshot.get("result")
    if isinstance(result, dict) and isinstance(result.get("last_error"), str) and ":" in result["last_error"]:
        snapshot = {**snapshot, "result": {**result, "last_error": result["last_error"].split(":", 1)[0]}}
    shown = {**snapshot, "stage_text": stage_text(snapshot.get("stage"), locale)}
    if snapshot.get("error_message"):
        shown["error_message"] = job_error_message(
            snapshot.get("error_code"), snapshot["error_message"], snapshot.get("result"), locale
        )
    return shown


class JobList(BaseModel):
    jobs: list[JobOut]


class ErasureOut(BaseModel):
    detail: str
    job_id: uuid.UUID


class ConsentWithdrawnOut(BaseModel):
    detail: str = Field(description="what was deleted, in the request's language")
    photos: int = Field(description="photos deleted")
    poses: int = Field(description="pose photos deleted")
    likenesses: int = Field(description="likenesses deleted (their trainings and portrait jobs canceled)")
    jobs_canceled: int


class PhotoOut(BaseModel):
    id: uuid.UUID
    status: str
    reason_code: str | None
    reason: str | None
    width: int
    height: int
    url: str
    created_at: datetime

    @classmethod
    def of(cls, photo: Photo, url: str) -> "PhotoOut":
        return cls(
            id=photo.id,
            status=str(photo.status),
            reason_code=photo.reason_code,
            reason=photo_reason(photo, current_locale.get()),
            width=photo.width,
            height=photo.height,
            url=url,
            created_at=photo.created_at,
        )


def photo_reason(photo: Photo, locale: str) -> str | None:
    """The reason in `locale`: from its stored sentence (key + values), else by its code."""
    if photo.reason_sentence:
        try:
            return Sentence.from_json(photo.reason_sentence).render(locale)
        except (KeyError, TypeError, ValueError, IndexError):
            pass  # an unknown key or shape: the stored English below
    return by_code(f"photo.{photo.reason_code}", photo.reason, locale)


class PhotoList(BaseModel):
    photos: list[PhotoOut]


class UploadOut(BaseModel):
    photos: list[PhotoOut]
    job: JobOut


class SystemOut(BaseModel):
    model_preset: str
    demo: bool
    message: str
    min_photos: int
    photo_retention_days: int


class LikenessIn(BodyIn):
    class_word: Literal["woman", "man", "person"]


class LikenessOut(BaseModel):
    id: uuid.UUID
    status: LikenessStatus  # canceled: the user stopped its training; failed: training went wrong
    class_word: str
    trigger_word: str
    base_model: str = Field(
        description="the model preset while training (e.g. `sd15`); once ready, the exact base weights it "
        "was trained on (e.g. `tiny-v2`), which its portraits need"
    )
    scores: dict[str, Any] | None
    job_id: uuid.UUID | None
    created_at: datetime

    @classmethod
    def of(cls, likeness: Likeness) -> "LikenessOut":
        return cls.model_validate(likeness, from_attributes=True)


class LikenessList(BaseModel):
    likenesses: list[LikenessOut]


class LikenessStarted(BaseModel):
    likeness: LikenessOut
    job: JobOut


class DownloadOut(BaseModel):
    url: str
