"""S3-compatible object storage. Every key a user owns lives under `users/<user_id>/`."""

import logging
import threading
import time
import uuid
from functools import lru_cache
from typing import Any

import boto3
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.config import get_settings

log = logging.getLogger(__name__)


def user_prefix(user_id: uuid.UUID | str) -> str:
    return f"users/{user_id}/"


def user_key(user_id: uuid.UUID | str, *parts: str) -> str:
    """Build a key under the owner's prefix; parts come from the server, never from the client."""
    for part in parts:
        if not part or ".." in part or part.startswith("/"):
            raise ValueError(f"bad key part: {part!r}")
    return user_prefix(user_id) + "/".join(parts)


def _client(endpoint: str | None) -> Any:
    s = get_settings()
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=s.s3_region,
        aws_access_key_id=s.s3_access_key_id,
        aws_secret_access_key=s.s3_secret_access_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=s.s3_connect_timeout,
            read_timeout=s.s3_read_timeout,
            retries={"mode": "standard", "total_max_attempts": s.s3_max_attempts},
        ),
    )


@lru_cache
def client() -> Any:
    return _client(get_settings().s3_endpoint_url)


@lru_cache
def public_client() -> Any:
    """Signs URLs for the host browsers use (may differ from the in-cluster endpoint)."""
    s = get_settings()
    return _client(s.s3_public_endpoint_url or s.s3_endpoint_url)


def bucket() -> str:
    return get_settings().s3_bucket


def ensure_bucket() -> None:
    try:
        client().head_bucket(Bucket=bucket())
    except ClientError:
        client().create_bucket(Bucket=bucket())


def put_bytes(key: str, data: bytes, content_type: str) -> None:
    client().put_object(Bucket=bucket(), Key=key, Body=data, ContentType=content_type)


def get_bytes(key: str) -> bytes:
    return client().get_object(Bucket=bucket(), Key=key)["Body"].read()


def _missing(e: ClientError) -> bool:
    return e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound")


def exists(key: str) -> bool:
    try:
        client().head_object(Bucket=bucket(), Key=key)
        return True
    except ClientError as e:
        if _missing(e):
            return False
        raise


def get_bytes_or_none(key: str) -> bytes | None:
    """The object's bytes, or None when there is no such object (deleted or expired)."""
    try:
        return get_bytes(key)
    except ClientError as e:
        if _missing(e):
            return None
        raise


# Per-key codes of a DeleteObjects answer that say the request was refused, not that the store
# failed (the rest, InternalError, SlowDown, ServiceUnavailable or a code we do not know, count as
# a store failure: the keys are tried again once it answers; NoSuchKey means the key is gone).
_REFUSED_KEY_CODES = {"AccessDenied": 403, "InvalidArgument": 400, "InvalidRequest": 400}


class DeleteIncomplete(ClientError):
    """S3 answered a DeleteObjects request 200 but named keys it did not delete (`Errors`, as AWS
    does under load: https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html).

    A ClientError whose status is 5xx when any key failed for a store-side reason (so
    `store_failed` is true and callers retry later) and 4xx when every key was refused."""

    def __init__(self, failed: dict[str, str]) -> None:
        self.failed = failed  # key -> S3 error code
        codes = sorted(set(failed.values()), key=lambda c: -_REFUSED_KEY_CODES.get(c, 503))
        status = _REFUSED_KEY_CODES.get(codes[0], 503)  # the worst: a store failure if any
        message = f"S3 did not delete {len(failed)} objects ({', '.join(codes)})"
        response: Any = {"Error": {"Code": codes[0], "Message": message}}
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
        super().__init__(response, "DeleteObjects")

    def __reduce__(self) -> tuple[type, tuple[dict[str, str]]]:  # pickled the way it is built
        return (DeleteIncomplete, (self.failed,))


def delete_keys(keys: list[str]) -> None:
    """Delete `keys` (missing ones are no error), 1000 a request as S3 allows.

    Raises DeleteIncomplete when S3 answered but listed keys it did not delete (after trying every
    chunk), botocore errors when it did not answer: a caller that forgets keys must not on errors."""
    failed: dict[str, str] = {}
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        answer = client().delete_objects(
            Bucket=bucket(), Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
        )
        for error in answer.get("Errors", []):
            if error.get("Code") != "NoSuchKey":
                failed[error.get("Key", "?")] = error.get("Code") or "InternalError"
    if failed:
        raise DeleteIncomplete(failed)


def store_failed(error: BaseException) -> bool:
    """Whether `error` says the store itself failed, not that it refused this request: no answer in
    time (BotoCoreError: connection, timeout) or an answer with a 5xx status (ClientError
    InternalError, ServiceUnavailable, SlowDown; SeaweedFS answers InternalError when its disk is
    full). A write that failed so may still land later (see `discard`)."""
    if isinstance(error, BotoCoreError):
        return True
    if isinstance(error, ClientError):
        return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
    return False


def discard(keys: list[str], error: BaseException) -> None:
    """Delete the objects of a write that failed with `error` (no orphaned objects): at once when
    the store refused the request, from a background thread once it answers again when it failed
    (`store_failed`: the write may still land, and a delete now may fail too)."""
    if store_failed(error):
        delete_keys_later(keys)
    else:
        delete_keys(keys)


def delete_keys_later(
    keys: list[str], *, patience_seconds: float = 600.0, settle_seconds: float = 2.0
) -> None:
    """Delete `keys` from a background thread once storage answers again (no orphaned objects).

    For writes that failed because storage did not answer: such a write may still land after storage
    resumes, so the keys are deleted, then checked again `settle_seconds` later until none is left.
    Gives up (and logs the keys) after `patience_seconds`.
    """

    def run() -> None:
        deadline = time.monotonic() + patience_seconds
        delay = 0.5
        while time.monotonic() < deadline:
            try:
                delete_keys(keys)
                time.sleep(settle_seconds)
                if not any(exists(k) for k in keys):
                    return
            except (BotoCoreError, ClientError):
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        log.error("could not delete %d objects after a storage outage: %s", len(keys), keys)

    if keys:
        threading.Thread(target=run, name="delete-keys-later", daemon=True).start()


def list_keys(prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket(), Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def delete_prefix(prefix: str) -> int:
    if not prefix.startswith("users/") or prefix.count("/") < 2:
        raise ValueError(f"refusing to delete outside a user prefix: {prefix!r}")
    keys = list_keys(prefix)
    delete_keys(keys)
    return len(keys)


def presign_get(key: str, expires_seconds: int | None = None, filename: str | None = None) -> str:
    params: dict[str, str] = {"Bucket": bucket(), "Key": key}
    if filename:
        params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
    return public_client().generate_presigned_url(
        "get_object", Params=params, ExpiresIn=expires_seconds or get_settings().presign_seconds
    )
