"""The walk in a real browser: sign up, log in, consent, upload (accepted and rejected photos with
their reasons), remove, reload, Korean, phone size. Screenshots: test-artifacts/web/<test>/."""

import re

from playwright.sync_api import expect

from tests.pictures import cat, jpeg, png, two_people
from tests.web.conftest import PHONE, Shots, Web
from tests.web.helpers import PASSWORD, face_photos, file_payload, log_in_with_form, new_email


def test_sign_up_consent_and_upload(web: Web, shots: Shots) -> None:
    page = web.page()
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Studio portraits")
    expect(page.locator("#banner")).to_contain_text("images are noise")  # tiny preset
    shots(page, "home")

    # Sign up
    page.locator("main").get_by_role("link", name="Sign up").click()
    email = new_email()
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Create account").click()
    # The browser's own validation stops a too-short password before any request.
    assert page.get_by_label("Password").evaluate("el => el.validity.tooShort")
    page.get_by_label("Password").fill(PASSWORD)
    shots(page, "signup")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("main")).to_contain_text("Check your email.")
    shots(page, "signup-sent")

    # A wrong password shows the gateway's sentence; the right one logs in.
    log_in_with_form(page, email, "not the password")
    expect(page.get_by_role("alert")).to_contain_text("Wrong email or password.")
    shots(page, "login-refused")
    log_in_with_form(page, email)
    expect(page.get_by_role("heading", level=1)).to_have_text("Your portrait studio")
    expect(page.locator("#nav")).to_contain_text("Photos")
    shots(page, "dashboard")

    # Consent, in plain words; the box must be ticked.
    page.locator("#nav").get_by_role("link", name="Photos").click()
    expect(page.get_by_role("heading", name="Before you upload: your face photos")).to_be_visible()
    page.get_by_role("button", name="Agree and continue").click()
    expect(page.get_by_role("alert")).to_contain_text("tick the box")
    shots(page, "consent")
    page.get_by_label("I agree that Portrait Studio may use my face photos this way.").check()
    page.get_by_role("button", name="Agree and continue").click()
    expect(page.locator("#dropzone")).to_be_visible()
    expect(page.locator(".counter")).to_contain_text("0 of 8 good photos. 8 more needed.")
    shots(page, "photos-empty")

    # Many files at once: one request each, each card gets its own verdict.
    files = face_photos(8) + [
        file_payload("cat.png", png(cat()), "image/png"),
        file_payload("two.jpg", jpeg(two_people()), "image/jpeg"),
    ]
    page.set_input_files("#photo-input", files)
    expect(page.locator(".photo")).to_have_count(10)
    shots(page, "photos-uploading")
    cards = page.locator(".photo")
    expect(cards.filter(has_text="cat.png")).to_contain_text("Rejected", timeout=90_000)
    expect(cards.filter(has_text="cat.png")).to_contain_text("No face found")
    expect(cards.filter(has_text="two.jpg")).to_contain_text(
        "two faces found", ignore_case=True, timeout=90_000
    )
    expect(page.locator(".photo[data-status=accepted]")).to_have_count(8, timeout=90_000)
    expect(page.locator(".counter")).to_contain_text("8 of 8 good photos. That is enough")
    expect(page.get_by_role("link", name="Continue to training")).to_be_visible()
    shots(page, "photos-checked")

    # Remove a rejected photo; the server forgets it too.
    page.get_by_role("button", name="Remove cat.png").click()
    expect(page.locator(".photo")).to_have_count(9)

    # A reload rebuilds the board from the API.
    page.reload()
    expect(page.locator(".photo")).to_have_count(9)
    expect(page.locator(".photo[data-status=rejected]")).to_have_count(1)
    expect(page.locator(".photo[data-status=rejected]")).to_contain_text("two faces found", ignore_case=True)
    expect(page.locator(".counter")).to_contain_text("8 of 8")
    shots(page, "photos-after-reload")

    # Korean: the reason comes in Korean, and the choice is saved on the account.
    page.select_option("#lang", "ko")
    expect(page.get_by_role("heading", level=1)).to_have_text("내 사진")
    expect(page.locator(".photo[data-status=rejected]")).to_contain_text("얼굴이 2개 있습니다")
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    shots(page, "photos-korean")

    # Phone size: nothing wider than the screen.
    page.set_viewport_size(PHONE)
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("내 사진")  # locale from the account
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"page is {overflow}px wider than a phone screen"
    shots(page, "photos-phone")

    # Log out: back to the login page, the refresh token is gone.
    page.get_by_role("button", name="로그아웃").click()
    expect(page).to_have_url(re.compile(r"#/login$"))
    assert page.evaluate("localStorage.getItem('ps.refresh')") is None
    shots(page, "logged-out")
