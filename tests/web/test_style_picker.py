"""The style picker and the pages around it look finished (issue 23 item 8), in English and Korean:
a drawn sample card per style (no letter tiles), a pose upload that is a button (no raw "Choose
File"), counts in words ("1 style selected", never "style(s)"; never "9 of 8 good photos"), and
progress in words for people (never "txt2img" or "training step 2/36")."""

import uuid
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from shared.db import session_scope
from shared.models import Job, JobStatus
from tests.conftest import Api
from tests.web.conftest import Shots, Web
from tests.web.helpers import sign_in
from tests.web.test_likeness_download import _ready_likeness
from tests.web.test_portraits import upload_accepted

WORDS = {
    "en": {
        "one": "1 style selected: 1 portrait in all.",
        "two": "2 styles selected: 2 portraits in all.",
        "counter": "9 good photos (8 needed).",
        "stage": "Running · Black-and-white: painting the picture",
        "pose": "Use the pose of a photo",
    },
    "ko": {
        "one": "스타일 1개 선택: 모두 1장.",
        "two": "스타일 2개 선택: 모두 2장.",
        "counter": "좋은 사진 9장(8장 필요).",
        "stage": "흑백: 사진 그리는 중",
        "pose": "사진의 자세 쓰기",
    },
}


@pytest.mark.parametrize("locale", ["en", "ko"])
def test_the_style_picker_and_its_neighbours_look_finished(
    web: Web, api: Api, shots: Shots, locale: str
) -> None:
    words = WORDS[locale]
    user = api.new_user()
    user_id = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    _ready_likeness(user_id)
    upload_accepted(api, user, 9)
    page = web.page()
    sign_in(page, user, "#/photos")
    page.select_option("#lang", locale)
    expect(page.locator(".counter")).to_contain_text(words["counter"])
    assert " of 8" not in page.locator(".counter").inner_text()

    page.goto("/#/styles")
    cards = page.locator(".style-preview img")
    expect(cards).to_have_count(8)
    for i in range(8):  # each card is a picture that loaded, not a letter
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=cards.nth(i).element_handle()
        )
    expect(page.locator(".style-initial")).to_have_count(0)
    shots(page, f"styles-{locale}")

    page.locator(".style label").first.click()
    page.locator("input[type=number]").fill("1")
    expect(page.locator("p[role=status]").first).to_have_text(words["one"])
    page.locator("input[type=number]").fill("1")
    page.locator(".style label").nth(1).click()
    expect(page.locator("p[role=status]").first).to_have_text(words["two"])
    assert "(s)" not in page.content()

    # The pose upload: a button that opens the file picker; the raw file input stays out of sight.
    upload = page.locator("label[for=pose-file]")
    expect(upload).to_have_text(words["pose"])
    expect(upload).to_have_class("btn btn-quiet")
    box = page.locator("#pose-file").bounding_box()
    assert box is None or box["width"] <= 1, box
    with page.expect_file_chooser() as chooser:
        upload.click()
    assert chooser.value.element.get_attribute("id") == "pose-file"
    upload.scroll_into_view_if_needed()
    shots(page, f"pose-upload-{locale}")

    # A portrait job under way: the stage in words of the page's language, not the worker's label.
    with session_scope() as session:
        job = Job(user_id=user_id, kind="generate_portraits", status=JobStatus.running, input={},
                  stage="Black-and-white: txt2img", progress=0.3, heartbeat_at=datetime.now(UTC),
                  started_at=datetime.now(UTC))  # fmt: skip
        session.add(job)
        session.flush()
        job_id = job.id
    page.goto(f"/#/gallery?job={job_id}")
    stage = page.locator("section.job .stage")
    expect(stage).to_contain_text(words["stage"])
    assert "txt2img" not in stage.inner_text()
    shots(page, f"progress-{locale}")
