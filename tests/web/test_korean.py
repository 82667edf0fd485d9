"""The page switched to Korean in a browser that asks for English: the gateway's own sentences (a
refused upload, too few photos) and the style names are Korean too, not only the page's labels."""

from playwright.sync_api import expect

from tests.conftest import Api
from tests.web.conftest import Shots, Web
from tests.web.helpers import a_bad_and_a_good_photo, sign_in


def test_the_korean_page_shows_the_servers_sentences_and_style_names_in_korean(
    web: Web, api: Api, shots: Shots
) -> None:
    user = api.new_user()
    page = web.page(locale="en-US")  # the browser's own Accept-Language is English
    sign_in(page, user, "#/photos")
    expect(page.locator("h1")).to_have_text("Your photos")
    page.select_option("#lang", "ko")
    expect(page.locator("h1")).to_have_text("내 사진")

    page.set_input_files("#photo-input", a_bad_and_a_good_photo())
    refused = page.locator(".photo", has_text="notes.jpg")
    expect(refused).to_have_attribute("data-status", "failed")
    expect(refused.locator(".reason")).to_have_text("notes.jpg 파일은 JPEG, PNG, WebP, HEIC 사진이 아닙니다.")
    expect(page.locator(".photo", has_text="me.jpg")).to_have_attribute(
        "data-status", "accepted", timeout=60_000
    )
    shots(page, "refused-in-korean")

    page.goto("/#/styles")
    names = page.locator(".style-name")
    expect(names.first).to_be_visible()
    shown = names.all_inner_texts()
    assert len(shown) >= 8
    assert "흑백" in shown and "골든아워 공원" in shown, shown
    assert "Black-and-white" not in shown
    expect(page.locator(".style", has_text="흑백").locator(".style-desc")).to_have_text(
        "깊은 그림자와 섬세한 톤의 클래식 흑백 인물 사진."
    )
    shots(page, "styles-in-korean")

    # Back to English: the same page, the same server, English names again.
    page.select_option("#lang", "en")
    expect(page.locator(".style-name", has_text="Black-and-white")).to_be_visible()
