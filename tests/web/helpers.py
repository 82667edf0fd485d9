"""Small steps shared by the browser tests."""

import uuid

from playwright.sync_api import Page

from tests.conftest import UserSession
from tests.pictures import astronaut, astronaut_variants, jpeg

PASSWORD = "correct horse battery"


def new_email(prefix: str = "web") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def file_payload(name: str, data: bytes, mime: str) -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def a_bad_and_a_good_photo() -> list[dict]:
    """A text file named like a JPEG (the gateway refuses it) and a good photo of a face."""
    return [
        file_payload("notes.jpg", b"this is not a picture at all", "image/jpeg"),
        file_payload("me.jpg", jpeg(astronaut()), "image/jpeg"),
    ]


def face_photos(n: int) -> list[dict]:
    """n accepted-quality photos of the same face, as files for an <input type=file>."""
    return [
        file_payload(f"me-{i}.jpg", jpeg(img), "image/jpeg") for i, img in enumerate(astronaut_variants(n))
    ]


def sign_in(page: Page, user: UserSession, route: str = "#/") -> None:
    """Open the page already signed in as `user` (as after a login in an earlier visit).

    The tokens are stored from a same-origin file that runs no app script, so the app never
    starts half signed in (it would rotate the refresh token behind the test's back).
    """
    page.goto("/static/icon.svg")
    page.evaluate(
        "([access, refresh]) => { sessionStorage.setItem('ps.access', access);"
        " localStorage.setItem('ps.refresh', refresh); }",
        [user.access_token, user.refresh_token],
    )
    page.goto(f"/{route}")


def log_in_with_form(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/#/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.locator("main").get_by_role("button", name="Log in").click()
