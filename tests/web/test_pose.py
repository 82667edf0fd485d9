"""The styles step's "use the pose of a photo", in a real browser on the real stack: upload, see the
skeleton over the photo, pick it, and the portrait job carries it; a photo with no person is refused
in words; the Korean page. (No generate worker: the job only has to be queued with the pose.)"""

import re
import uuid

from PIL import Image
from playwright.sync_api import expect
from skimage import data

from shared.db import session_scope
from shared.models import Job
from tests.conftest import Api
from tests.generator.test_service import _ready_likeness
from tests.pictures import jpeg
from tests.web.conftest import Shots, Web
from tests.web.helpers import file_payload, sign_in


def test_use_the_pose_of_a_photo(web: Web, api: Api, shots: Shots) -> None:
    user = api.new_user()
    uid = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    _ready_likeness(uid)
    page = web.page()
    sign_in(page, user, "#/styles")
    expect(page.get_by_label("Each style's own pose")).to_be_checked()
    expect(page.get_by_text("it is used for its pose only")).to_be_visible()

    page.get_by_label("Use the pose of a photo").set_input_files(
        file_payload("cat.jpg", jpeg(Image.fromarray(data.chelsea())), "image/jpeg")
    )
    expect(page.get_by_role("alert")).to_contain_text("could not find a person", timeout=60_000)
    expect(page.locator(".pose")).to_have_count(1)  # a refused photo is no option

    page.get_by_label("Use the pose of a photo").set_input_files(
        file_payload("me.jpg", jpeg(Image.fromarray(data.astronaut())), "image/jpeg")
    )
    expect(page.get_by_text("Pose found")).to_be_visible(timeout=60_000)
    skeleton = page.get_by_alt_text("The pose found, drawn over your photo")
    expect(skeleton).to_be_visible()
    assert skeleton.evaluate("img => img.naturalWidth") == 512  # the preview really loaded
    pose_id = page.locator(".pose").nth(1).get_attribute("data-pose-id")
    expect(page.locator(f"#pose-{pose_id}")).to_be_checked()
    shots(page, "pose-picked")

    page.locator(".style").first.locator("input").check()
    page.get_by_label("Portraits per style").fill("1")
    page.get_by_role("button", name="Make my portraits").click()
    expect(page).to_have_url(re.compile(r"#/gallery\?job="))
    job_id = uuid.UUID(page.url.split("job=")[1])
    with session_scope() as session:
        assert session.get(Job, job_id).input["pose_id"] == pose_id

    assert api.patch("/v1/me", json={"locale": "ko"}, headers=user.auth).status_code == 200
    korean = web.page(locale="ko-KR")
    sign_in(korean, user, "#/styles")
    expect(korean.get_by_label("사진의 자세 쓰기")).to_be_visible()
    expect(korean.locator(".pose")).to_have_count(2)  # the style's own, and the photo's
    shots(korean, "pose-ko")


def test_a_group_photo_uses_the_most_prominent_persons_pose_and_says_so(
    web: Web, api: Api, shots: Shots
) -> None:
    from tests.pictures import group_of_two

    user = api.new_user()
    _ready_likeness(uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"]))
    group = file_payload("group.jpg", jpeg(group_of_two()), "image/jpeg")
    for locale, words in (
        ("en", "2 people in this photo: we use the pose of the most prominent one"),
        ("ko", "이 사진에는 여러 사람이 있어 가장 크게 나온 사람의 자세를 씁니다"),
    ):
        assert api.patch("/v1/me", json={"locale": locale}, headers=user.auth).status_code == 200
        page = web.page(locale=f"{locale}-{'US' if locale == 'en' else 'KR'}")
        sign_in(page, user, "#/styles")
        page.locator(".pose-file").set_input_files(group)
        status = page.locator("fieldset .notice")
        expect(status).to_contain_text(words, timeout=90_000)
        preview = page.locator(".pose-preview").last
        expect(preview).to_be_visible()
        assert preview.evaluate("img => img.naturalWidth") == 768  # the skeleton over the whole photo
        shots(page, f"group-pose-{locale}")
