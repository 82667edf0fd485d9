"""The web page shows an erasure still under way (issue #22, item 1): logging in to an account being
erased says so, with the time it was asked for, instead of "Wrong email or password"."""

import uuid

from playwright.sync_api import expect
from sqlalchemy import func, update

from shared.db import session_scope
from shared.jobs.state import now
from shared.models import Job, JobStatus, User
from tests.conftest import Api
from tests.web.conftest import Shots, Web
from tests.web.helpers import log_in_with_form


def test_logging_in_to_an_account_being_erased_says_so(web: Web, api: Api, shots: Shots) -> None:
    user = api.new_user()
    uid = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    with session_scope() as session:  # an erasure under way (a worker holds its job, heartbeating)
        session.execute(update(User).where(User.id == uid).values(deleting=True, deleting_since=func.now()))
        session.add(
            Job(kind="erase_user", user_id=uid, status=JobStatus.running, attempts=1, input={},
                worker="busy-host:1:abc", heartbeat_at=now(), started_at=now())
        )  # fmt: skip
    page = web.page()
    log_in_with_form(page, user.email, user.password)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("This account is being erased (asked for at ")
    expect(alert).to_contain_text("we send a mail to this address when it is done")
    shots(page, "erasure-pending")
