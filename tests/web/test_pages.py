"""Single pages in a real browser: refused uploads, token refresh and session end, another user's
job, account settings and erasure, keyboard use. Screenshots: test-artifacts/web/<test>/."""

import re

from playwright.sync_api import expect

from tests.conftest import Api
from tests.pictures import astronaut, jpeg
from tests.trainer.test_service import start, upload_accepted
from tests.web.conftest import Shots, Web
from tests.web.helpers import a_bad_and_a_good_photo, log_in_with_form, sign_in


def test_a_refused_file_shows_the_gateway_reason(web: Web, api: Api, shots: Shots) -> None:
    user = api.new_user()
    page = web.page()
    sign_in(page, user, "#/photos")
    page.set_input_files("#photo-input", a_bad_and_a_good_photo())
    refused = page.locator(".photo", has_text="notes.jpg")
    expect(refused).to_have_attribute("data-status", "failed")
    expect(refused).to_contain_text("Not uploaded")
    reason = refused.locator(".reason").inner_text()
    assert reason.strip(), "the gateway's sentence is shown"
    # The other file of the same selection is unaffected: its own request, its own verdict.
    expect(page.locator(".photo", has_text="me.jpg")).to_have_attribute(
        "data-status", "accepted", timeout=60_000
    )
    expect(page.locator(".counter")).to_contain_text("1 of 8 good photos. 7 more needed.")
    shots(page, "refused-file")
    # Dismissing the refused card touches nothing on the server.
    page.get_by_role("button", name="Remove notes.jpg").click()
    expect(page.locator(".photo")).to_have_count(1)
    assert len(api.get("/v1/photos", headers=user.auth).json()["photos"]) == 1


def test_an_account_unread_at_the_start_is_read_again_not_asked_to_consent_again(
    web: Web, api: Api, shots: Shots
) -> None:
    """The page's first read of the account fails (a slow or unreachable API): the photos page
    reads it again and shows the upload board to a user who agreed long ago, not the consent form."""
    user = api.new_user()  # has agreed to the face photo terms
    page = web.page()
    failed = []

    def first_read_fails(route) -> None:
        if route.request.method == "GET" and not failed:
            failed.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route(re.compile(r".*/v1/me$"), first_read_fails)
    sign_in(page, user, "#/photos")
    expect(page.locator("#photo-input")).to_be_attached()
    assert failed, "the first read of the account was made and failed"
    expect(page.locator(".consent")).to_have_count(0)
    shots(page, "account-read-again")


def test_expired_access_token_is_refreshed_then_a_revoked_session_ends(
    web: Web, api: Api, shots: Shots
) -> None:
    user = api.new_user()
    page = web.page()
    sign_in(page, user, "#/account")
    expect(page.locator("#acct-email")).to_have_text(user.email)

    # A stale access token: the page refreshes it once, transparently, and rotates the pair.
    page.evaluate("sessionStorage.setItem('ps.access', 'expired.token.value')")
    page.reload()
    expect(page.locator("#acct-email")).to_have_text(user.email)
    rotated = page.evaluate("localStorage.getItem('ps.refresh')")
    assert rotated and rotated != user.refresh_token
    shots(page, "after-refresh")

    # Log out elsewhere (revokes the family). An access token stays valid until it expires, so
    # let it expire (a stale one in storage, then a reload): the refresh is refused and the
    # session ends politely.
    assert api.post("/v1/auth/logout", json={"refresh_token": rotated}).status_code == 204
    page.evaluate("sessionStorage.setItem('ps.access', 'expired.token.value')")
    page.reload()
    expect(page).to_have_url(re.compile(r"#/login"))
    expect(page.get_by_role("status").first).to_contain_text("Your session has ended")
    assert page.evaluate("localStorage.getItem('ps.refresh')") is None
    shots(page, "session-ended")


def test_another_users_job_and_photo_are_refused(web: Web, api: Api, shots: Shots) -> None:
    owner = api.new_user()
    upload = api.post(
        "/v1/photos", headers=owner.auth, files=[("files", ("me.jpg", jpeg(astronaut()), "image/jpeg"))]
    )
    assert upload.status_code == 201, upload.text
    job_id = upload.json()["job"]["id"]
    photo_id = upload.json()["photos"][0]["id"]

    intruder = api.new_user()
    page = web.page()
    sign_in(page, intruder, f"#/gallery?job={job_id}")
    expect(page.get_by_role("alert")).to_contain_text("does not exist, or it is not yours")
    shots(page, "gallery-of-another-user")
    # The same from the page's own API client: another user's objects are simply not found.
    statuses = page.evaluate(
        """async ([jobId, photoId, token]) => {
            const auth = {headers: {Authorization: `Bearer ${token}`}};
            const get = (url) => fetch(url, auth).then((r) => r.status);
            return [await get(`/v1/jobs/${jobId}`), await get(`/v1/photos/${photoId}`),
                    await fetch(`/v1/jobs/${jobId}/events?access_token=${token}`).then((r) => r.status)];
        }""",
        [job_id, photo_id, intruder.access_token],
    )
    assert statuses == [404, 404, 404]


def test_account_email_switch_and_delete_everything(web: Web, api: Api, shots: Shots) -> None:
    user = api.new_user()
    page = web.page()
    sign_in(page, user, "#/account")
    box = page.get_by_label("Email me when my portraits are ready")
    expect(box).to_be_checked()
    box.uncheck()
    expect(box).to_be_enabled()
    assert api.get("/v1/me", headers=user.auth).json()["email_results"] is False
    page.reload()
    expect(page.get_by_label("Email me when my portraits are ready")).not_to_be_checked()
    shots(page, "account")

    # Delete all photos, after a confirmation.
    upload = api.post(
        "/v1/photos",
        headers=user.auth,
        files=[("files", ("me.jpg", jpeg(astronaut()), "image/jpeg"))],
    )
    assert upload.status_code == 201, upload.text
    page.get_by_role("button", name="Delete all my photos").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status").last).to_contain_text("1 photo(s) deleted.")
    assert api.get("/v1/photos", headers=user.auth).json()["photos"] == []

    # Delete everything: a dialog that needs an explicit tick.
    page.get_by_role("button", name="Delete everything").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("cannot be undone")
    confirm = dialog.get_by_role("button", name="Delete everything")
    expect(confirm).to_be_disabled()
    dialog.get_by_label("I understand that everything will be deleted.").check()
    shots(page, "delete-everything-dialog")
    confirm.click()
    expect(page.get_by_role("status").first).to_contain_text("Your account is being deleted")
    shots(page, "deleted")
    log_in_with_form(page, user.email, user.password)
    # Erased already, or still being erased (the page says so, with the time it was asked for).
    expect(page.get_by_role("alert")).to_contain_text(
        re.compile(r"Wrong email or password\.|This account is being erased \(asked for at ")
    )


def test_keyboard_and_labels(web: Web, api: Api, shots: Shots) -> None:
    user = api.new_user()
    page = web.page()
    sign_in(page, user, "#/photos")
    expect(page.locator("#dropzone")).to_be_visible()
    # Every form control has an accessible name.
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button, textarea')]
              .filter((el) => !el.closest('[hidden], [aria-hidden=true]'))
              .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                               && !el.textContent.trim())
              .map((el) => el.outerHTML)"""
    )
    assert unnamed == []
    # The skip link comes first; the photo picker opens from the keyboard.
    page.keyboard.press("Tab")
    expect(page.locator("#skip-link")).to_be_focused()
    # Wait until the photo board has loaded (its counter is drawn), so the button stays put.
    expect(page.locator(".counter[data-accepted]")).to_be_attached()
    picker = page.get_by_role("button", name="Choose photos")
    picker.focus()
    expect(picker).to_be_focused()
    shots(page, "picker-focused")
    with page.expect_file_chooser() as chooser:
        picker.press("Enter")
    assert chooser.value.is_multiple()


def test_a_canceled_training_says_canceled_and_offers_a_new_start(web: Web, api: Api, shots: Shots) -> None:
    """Canceled by the user (no `train` worker runs here, so it waits in the queue until then): the
    page says so without "failed", and training can start again on the same photos."""
    user = api.new_user()
    upload_accepted(api, user, 8)
    job_id = start(api, user).json()["job"]["id"]
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=user.auth).json()["status"] == "canceled"
    page = web.page()
    sign_in(page, user, "#/train")
    expect(page.locator("main")).to_contain_text("Training canceled.")
    expect(page.locator("main")).not_to_contain_text("failed")
    button = page.get_by_role("button", name="Start training")
    expect(button).to_be_enabled()
    shots(page, "canceled")
    button.click()
    expect(page.locator("main")).to_contain_text("Training your likeness")  # a new job, queued
    assert api.get("/v1/likenesses", headers=user.auth).json()["likenesses"][0]["status"] == "training"


def test_withdrawing_consent_on_the_account_page(web: Web, api: Api, shots: Shots) -> None:
    """The page offered deleting photos, the model or everything, but no way to take the consent
    back (DELETE /v1/me/consent): after a confirmation the face data goes, the account stays."""
    user = api.new_user()
    upload = api.post(
        "/v1/photos", headers=user.auth, files=[("files", ("me.jpg", jpeg(astronaut()), "image/jpeg"))]
    )
    assert upload.status_code == 201, upload.text
    page = web.page()
    sign_in(page, user, "#/account")
    page.get_by_role("button", name="Withdraw my consent").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Your portraits and account stay")
    shots(page, "withdraw-consent-dialog")
    dialog.get_by_role("button", name="Withdraw").click()
    expect(page.get_by_role("status").last).to_contain_text("Your consent is withdrawn")
    expect(page.locator("#acct-consent")).to_have_text("Not given")
    expect(page.get_by_role("button", name="Withdraw my consent")).to_be_hidden()
    me = api.get("/v1/me", headers=user.auth).json()
    assert me["face_consent_at"] is None and api.get("/v1/photos", headers=user.auth).json()["photos"] == []
