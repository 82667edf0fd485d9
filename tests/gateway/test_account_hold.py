"""The account hold an upload takes before it stores (services/gateway/api/deps.py `hold_account`),
on the real database: one statement locks the user's row FOR SHARE and reads its consent."""

import uuid

from sqlalchemy import event, update

from services.gateway.api import deps
from services.gateway.api.language import Refusal
from shared import accounts
from shared.db import get_engine, session_scope
from shared.models import User
from tests import rows


def test_an_upload_holds_the_account_and_reads_its_consent_in_one_statement(stack) -> None:
    """It took two: `deleting` FOR SHARE (shared/accounts.py), then `face_consent_at`."""
    consented, without, erasing = rows.user(), rows.user(), rows.user()
    with session_scope() as session:
        session.execute(update(User).where(User.id == without).values(face_consent_at=None))
        session.execute(update(User).where(User.id == erasing).values(deleting=True))
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        statements.append(statement)

    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        for user_id, refused in [(consented, None), (without, 403), (erasing, 401), (uuid.uuid4(), 401)]:
            statements.clear()
            with session_scope() as session:
                try:
                    deps.hold_account(session, user_id)
                    status = None
                except Refusal as e:
                    status = e.status_code
            assert status == refused, user_id
            assert len(statements) == 1 and "FOR SHARE" in statements[0], statements
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    # The workers' callers still get a bool.
    with session_scope() as session:
        held = [accounts.hold_account(session, u) for u in (consented, without, erasing)]
    assert held == [True, True, False]
