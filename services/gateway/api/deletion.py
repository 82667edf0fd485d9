"""Deleting a user's row and its objects so that both always go, even while S3 is down.

The row's delete and the list of its objects (shared/pending_objects.py `condemn`) commit in one
transaction; the objects are then deleted at once. If S3 does not answer, the answer is 202 with a
sentence (the deletion stands; the files go within minutes) and the scheduler's clean-up deletes
them once S3 answers again. A retry then finds nothing (404): the row is gone, and so will its files.
"""

from collections.abc import Sequence
from typing import Any

from fastapi import Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from services.gateway.api.schemas import Message
from shared import i18n, pending_objects

# The OpenAPI answer of a DELETE whose files wait for S3 (`deleted_files`): 202 with a sentence.
FILES_DELETED_LATER: dict[int | str, dict[str, Any]] = {
    202: {"model": Message, "description": "deleted; its files are deleted once storage answers again"}
}


def delete_with_objects(session: Session, row: object, keys: Sequence[str]) -> Response:
    """Delete `row` and the objects `keys` (a key ending in "*" is a prefix); commits the session.
    204 when the objects are gone too, 202 `{"detail": ...}` when S3 must finish later."""
    session.delete(row)
    pending_objects.condemn(session, keys)
    session.commit()
    return deleted_files(keys)


def deleted_files(keys: Sequence[str], body: dict[str, Any] | None = None) -> Response:
    """After the commit that deleted their row and condemned `keys`: delete the objects now; 204,
    or 202 with a sentence when S3 did not answer (the scheduler deletes them later). With `body`
    (a JSON answer with a `detail` sentence): 200 with it, or 202 with that sentence added to its
    `detail`."""
    gone = pending_objects.delete_now(keys)
    if gone and body is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    answer = dict(body or {})
    if not gone:
        pending = i18n.say("delete.pending", i18n.current_locale.get())
        answer["detail"] = f"{answer['detail']} {pending}" if answer.get("detail") else pending
    return JSONResponse(answer, status_code=status.HTTP_200_OK if gone else status.HTTP_202_ACCEPTED)
