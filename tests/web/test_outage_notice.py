"""The web page during an outage: a job panel says in words that the database is not answering, and the
notice goes once the job is live again (issue #16; the servers are frozen as in
tests/platform/test_outages.py)."""

import uuid

from playwright.sync_api import expect

from shared.contracts import GeneratePortraits
from shared.db import session_scope
from shared.jobs import enqueue
from tests.conftest import Api, Platform, wait_until
from tests.platform.test_outages import frozen

from .conftest import Shots, Web
from .helpers import sign_in


def test_job_panel_shows_the_outage_and_clears_it(web: Web, api: Api, platform: Platform, shots: Shots):
    user = api.new_user()
    user_id = api.get("/v1/me", headers=user.auth).json()["id"]
    with session_scope() as session:  # stays queued: this platform runs no generate worker
        job_id = str(
            enqueue(session, GeneratePortraits(likeness_id=uuid.uuid4(), styles=["x"]), user_id=user_id).id
        )
    page = web.page()
    try:
        sign_in(page, user, f"#/gallery?job={job_id}")
        status = page.locator(".job .job-status")
        expect(page.locator(".job")).to_be_visible()
        expect(status).to_have_text("")
        with frozen(platform.stack, "postgres"):
            # the stream re-reads the row within 5 s, then says `unavailable`
            expect(status).to_contain_text("The database is not answering", timeout=15_000)
            shots(page, "database-hung")
        expect(status).to_have_text("", timeout=30_000)  # reconnected: the notice went
        shots(page, "database-back")
    finally:  # new connects may fail fast for a moment after the database is back
        cancel = f"/v1/jobs/{job_id}/cancel"
        wait_until(lambda: api.post(cancel, headers=user.auth).status_code in (200, 409), timeout=15)
