"""The account hold: how a write under `users/<uid>/` and the user's erasure keep out of each other.

An erasure (DELETE /v1/me sets `users.deleting`, then services/photos/erasure.py lists and deletes
the user's prefix and deletes the row) must see every object a writer makes reachable. So the writer
takes this hold in the transaction that makes its objects reachable (the row that names them, the
`pending_objects.settle`), after writing them:

- the account not being erased: the row stays locked FOR SHARE until that commit, so setting
  `deleting` waits for it, and the erasure's listing, which comes after, sees the objects;
- the account being erased (or gone): the writer commits nothing that names its objects and leaves
  their announcement (`pending_objects.announce`) unsettled, deleting them at once if it can; the
  retention sweep deletes what it could not.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from shared.models import User


def hold_account(session: Session, user_id: uuid.UUID) -> bool:
    """Lock the user's row FOR SHARE until the caller's transaction ends; False when the account is
    gone or being erased (then the caller must not make its objects reachable). Raises what the
    database raises (an outage, a lock timeout): the caller commits nothing then."""
    return hold_account_reading(session, user_id) is not None


def hold_account_reading(session: Session, user_id: uuid.UUID, *columns: Any) -> Row[Any] | None:
    """`hold_account` that also reads the user's `columns` (say `User.face_consent_at`) in the same
    statement: their values, as read under the hold, or None where `hold_account` says False."""
    row = session.execute(
        select(User.deleting, *columns).where(User.id == user_id).with_for_update(read=True)
    ).first()
    return None if row is None or row.deleting else row
