"""The photos page in a real browser, in English and Korean: a photo of someone else in the set is
called out with its reason and removed from the page; an iPhone (HEIC) photo uploads and shows;
a dark photo says it is too dark. Screenshots: test-artifacts/web/<test>/."""

from playwright.sync_api import expect

from tests.conftest import Api
from tests.pictures import astronaut_variants, grace_hopper_variants, heic, jpeg, too_dark
from tests.web.conftest import Shots, Web
from tests.web.helpers import face_photos, file_payload, sign_in


def test_someone_elses_photo_is_called_out_and_removed(web: Web, api: Api, shots: Shots) -> None:
    user = api.new_user()
    page = web.page()
    sign_in(page, user, "#/photos")
    expect(page.locator("#dropzone")).to_contain_text("HEIC (iPhone)")
    files = face_photos(6) + [
        file_payload("IMG_0001.HEIC", heic(astronaut_variants(8)[7]), "image/heic"),
        file_payload("grace.jpg", jpeg(grace_hopper_variants(1)[0]), "image/jpeg"),
        file_payload("dark.jpg", jpeg(too_dark()), "image/jpeg"),
    ]
    page.set_input_files("#photo-input", files)
    cards = page.locator(".photo")
    expect(cards).to_have_count(9)
    other = cards.filter(has_text="grace.jpg")
    expect(other).to_have_attribute("data-reason", "identity_mismatch", timeout=120_000)
    expect(other.locator(".badge")).to_have_text("Someone else?")
    expect(other.locator(".reason")).to_contain_text("This looks like a different person")
    expect(cards.filter(has_text="dark.jpg").locator(".reason")).to_contain_text(
        "Photo too dark", timeout=120_000
    )
    iphone = cards.filter(has_text="IMG_0001.HEIC")
    expect(iphone).to_have_attribute("data-status", "accepted", timeout=120_000)
    # Chromium cannot draw HEIC: the card shows the stored JPEG instead of a broken image.
    expect(iphone.locator("img")).to_have_count(1)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.photo img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    expect(page.locator(".photo[data-status=accepted]")).to_have_count(7, timeout=120_000)
    expect(page.locator(".counter")).to_contain_text("7 of 8 good photos. 1 more needed.")
    shots(page, "someone-else-called-out")

    page.get_by_role("button", name="Remove grace.jpg").click()
    expect(cards).to_have_count(8)
    names = [p["reason_code"] for p in api.get("/v1/photos", headers=user.auth).json()["photos"]]
    assert "identity_mismatch" not in names and len(names) == 8


def test_the_korean_page_names_someone_else_and_a_dark_photo(web: Web, api: Api, shots: Shots) -> None:
    user = api.new_user()
    files = [("files", (f"me{i}.jpg", jpeg(im), "image/jpeg")) for i, im in enumerate(astronaut_variants(3))]
    files += [
        ("files", ("grace.jpg", jpeg(grace_hopper_variants(1)[0]), "image/jpeg")),
        ("files", ("dark.jpg", jpeg(too_dark()), "image/jpeg")),
    ]
    r = api.post("/v1/photos", files=files, headers=user.auth)
    assert r.status_code == 201 and api.wait_job(r.json()["job"]["id"], user)["status"] == "succeeded"
    grace_id, dark_id = (p["id"] for p in r.json()["photos"][3:])

    page = web.page(locale="en-US")
    sign_in(page, user, "#/photos")
    expect(page.locator("h1")).to_have_text("Your photos")
    page.select_option("#lang", "ko")
    expect(page.locator("h1")).to_have_text("내 사진")
    other = page.locator(f".photo[data-photo-id='{grace_id}']")
    expect(other.locator(".badge")).to_have_text("다른 사람?")
    expect(other.locator(".reason")).to_contain_text("다른 사진 속 사람과 다른 사람으로 보입니다")
    dark = page.locator(f".photo[data-photo-id='{dark_id}']")
    expect(dark.locator(".reason")).to_contain_text("사진이 너무 어두워서 얼굴이 보이지 않습니다")
    expect(page.locator("#dropzone")).to_contain_text("HEIC(아이폰)")
    shots(page, "someone-else-in-korean")
    other.get_by_role("button").click()
    expect(page.locator(".photo")).to_have_count(4)
