"""The links in our emails open the page: confirm the address, choose a new password.
Mail goes gateway -> relay -> notify worker -> the stack's SMTP catcher (a Maildir)."""

import mailbox
import re
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from playwright.sync_api import expect

from tests.conftest import Platform, wait_until
from tests.web.conftest import Shots, Web
from tests.web.helpers import PASSWORD, log_in_with_form, new_email


@pytest.fixture(autouse=True)
def maildir(platform: Platform) -> None:
    # The catcher's Maildir subfolders (see tests/notifier/test_notify_worker.py).
    for sub in ("tmp", "new", "cur"):
        (platform.stack.mail_dir / sub).mkdir(parents=True, exist_ok=True)


def link_in_mail(platform: Platform, address: str, route: str) -> str:
    """The path and fragment of the newest link to `#/<route>?token=` mailed to `address`."""

    def find() -> str | None:
        box = mailbox.Maildir(platform.stack.mail_dir, create=False)
        for key in box.iterkeys():
            msg: EmailMessage = message_from_bytes(box.get_bytes(key), policy=policy.default)
            if msg["To"] != address:
                continue
            text = msg.get_body(("plain",)).get_content()
            found = re.search(rf"https?://[^/\s]+(/#/{route}\?token=[A-Za-z0-9_\-]+)", text)
            if found:
                return found.group(1)
        return None

    return wait_until(find, timeout=60, what=f"a {route} link mailed to {address}")


def test_confirm_the_address_and_reset_the_password(web: Web, platform: Platform, shots: Shots) -> None:
    page = web.page(locale="ko-KR")  # the browser's language picks Korean
    page.goto("/#/signup")
    expect(page.get_by_role("heading", level=1)).to_have_text("계정 만들기")
    email = new_email("mail")
    page.get_by_label("이메일 주소").fill(email)
    page.get_by_label("비밀번호").fill(PASSWORD)
    page.get_by_role("button", name="계정 만들기").click()
    expect(page.locator("main")).to_contain_text("이메일을 확인해 주세요.")

    page.goto(link_in_mail(platform, email, "verify"))
    expect(page.get_by_role("status").first).to_contain_text("이메일 주소가 인증되었습니다")
    shots(page, "verified-ko")

    # Forgot the password: ask for a link, open it, choose a new one, log in with it.
    page.select_option("#lang", "en")
    page.goto("/#/reset")
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("status").first).to_contain_text("If an account uses this address")
    shots(page, "reset-requested")

    page.goto(link_in_mail(platform, email, "reset"))
    new_password = "a brand new passphrase"
    page.get_by_label("New password", exact=True).fill(new_password)
    page.get_by_label("Repeat the new password").fill("something else entirely")
    page.get_by_role("button", name="Save the new password").click()
    expect(page.get_by_role("alert")).to_contain_text("not the same")
    page.get_by_label("Repeat the new password").fill(new_password)
    shots(page, "reset-form")
    page.get_by_role("button", name="Save the new password").click()
    expect(page.get_by_role("status").first).to_contain_text("Your password is changed")

    log_in_with_form(page, email, PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("Wrong email or password.")
    log_in_with_form(page, email, new_password)
    # Signed in, the account's language (Korean, chosen at sign-up) wins over this browser's choice.
    expect(page.get_by_role("heading", level=1)).to_have_text("나의 포트레이트 스튜디오")
    shots(page, "logged-in-with-new-password")
