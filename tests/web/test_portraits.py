"""From accepted photos to a gallery, in a real browser, with the tiny model preset: train (live
progress, a reload and a closed tab mid-training), pick styles, watch portraits arrive, view,
download one and all (zip), delete; another user is refused the portraits.

Needs the trainer's and generator's routes (`/v1/likenesses`, `/v1/styles`, `/v1/portraits`) and
starts `train` and `generate` workers of its own."""

import io
import re
import zipfile

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import Api, Processes, UserSession
from tests.web.conftest import PHONE, Shots, Web
from tests.web.helpers import face_photos, sign_in

TRAIN_TIMEOUT_MS = 300_000
GENERATE_TIMEOUT_MS = 300_000


def upload_accepted(api: Api, user: UserSession, n: int = 8) -> None:
    files = [("files", (f["name"], f["buffer"], f["mimeType"])) for f in face_photos(n)]
    r = api.post("/v1/photos", files=files, headers=user.auth)
    assert r.status_code == 201, r.text
    job = api.wait_job(r.json()["job"]["id"], user)
    assert job["result"]["accepted"] == n, job


def require_routes(api: Api, user: UserSession) -> None:
    """A missing trainer/generator route fails the walk (a skip would hide the regression)."""
    for path in ("/v1/likenesses", "/v1/styles"):
        r = api.get(path, headers=user.auth)
        assert r.status_code == 200, f"{path} answers {r.status_code}: {r.text[:200]}"


def training_panel(page: Page):  # noqa: ANN201
    return page.locator("section.job")


@pytest.mark.slow
def test_train_generate_and_gallery(web: Web, api: Api, procs: Processes, shots: Shots) -> None:
    user = api.new_user()
    require_routes(api, user)
    procs.worker("train")
    procs.worker("generate")
    upload_accepted(api, user)

    # Train: the class word, start, live progress.
    page = web.page()
    sign_in(page, user, "#/train")
    expect(page.get_by_text("8 accepted photos will be used.")).to_be_visible()
    page.get_by_label("A woman").check()
    shots(page, "train-form")
    page.get_by_role("button", name="Start training").click()
    panel = training_panel(page)
    expect(panel).to_be_visible()
    job_id = panel.get_attribute("data-job-id")
    expect(panel.locator(".percent")).to_have_text(re.compile(r"\d+%"))
    shots(page, "training")

    # A reload mid-training finds the same job from the API.
    page.reload()
    expect(training_panel(page)).to_have_attribute("data-job-id", job_id)
    # A closed tab: a new tab of the same browser profile picks it up too.
    context = page.context
    page.close()
    page = context.new_page()
    page.goto("/#/train")
    expect(training_panel(page).or_(page.get_by_text("Your likeness model is ready"))).to_be_visible()
    shots(page, "training-after-closed-tab")
    expect(page.get_by_role("heading", name="Your likeness model is ready")).to_be_visible(
        timeout=TRAIN_TIMEOUT_MS
    )
    shots(page, "trained")

    # Styles: a grid with descriptions; pick two, one portrait each.
    page.get_by_role("link", name="Choose styles").first.click()
    styles = page.locator(".style")
    expect(styles.first).to_be_visible()
    assert styles.count() >= 2
    for i in range(2):
        styles.nth(i).locator("input").check()
    page.get_by_label("Portraits per style").fill("1")
    expect(page.get_by_text("2 styles selected: 2 portraits in all.")).to_be_visible()
    shots(page, "styles")
    page.get_by_role("button", name="Make my portraits").click()

    # Gallery: portraits arrive while the job runs, ranked by likeness.
    expect(page).to_have_url(re.compile(r"#/gallery\?job="))
    portrait_job = page.url.split("job=")[1]
    expect(page.get_by_text("We also email you the results")).to_be_visible()
    shots(page, "gallery-running")
    grid = page.locator(".gallery-grid")
    expect(grid).to_have_attribute("data-count", "2", timeout=GENERATE_TIMEOUT_MS)
    shots(page, "gallery")
    # "likeness 0.42", or "no face found" (nothing to compare): those rank last.
    hints = page.locator(".portrait .hint").all_inner_texts()
    scores = [float(m.group(1)) if (m := re.search(r"likeness ([\d.]+)", h)) else -1.0 for h in hints]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    assert all("likeness" not in h for h in hints if "no face found" in h)  # no face: no score, not 0

    # Full size, then download all as a zip.
    page.locator(".portrait-open").first.click()
    expect(page.locator("dialog.viewer img")).to_be_visible()
    shots(page, "full-size")
    page.keyboard.press("Escape")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download all (zip)").click()
    with zipfile.ZipFile(io.BytesIO(open(download.value.path(), "rb").read())) as zf:  # noqa: SIM115
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == 2

    # Another user gets nothing of this: not the list, not the zip, not the page.
    other = api.new_user()
    listing = api.get("/v1/portraits", params={"job_id": portrait_job}, headers=other.auth)
    assert listing.status_code == 404 or listing.json()["portraits"] == []
    assert (
        api.get("/v1/portraits/zip", params={"job_id": portrait_job}, headers=other.auth).status_code == 404
    )
    portrait_id = page.locator(".portrait").first.get_attribute("data-portrait-id")
    assert api.delete(f"/v1/portraits/{portrait_id}", headers=other.auth).status_code == 404
    intruder = web.page()
    sign_in(intruder, other, f"#/gallery?job={portrait_job}")
    expect(intruder.get_by_role("alert")).to_contain_text("does not exist, or it is not yours")

    # Delete one portrait; the phone view of what is left.
    page.get_by_role("button", name="Delete portrait 1").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(grid).to_have_attribute("data-count", "1")
    page.set_viewport_size(PHONE)
    # On a phone every menu item is on screen, and no menu word is broken over two lines.
    lines = page.locator("#nav a").evaluate_all(
        """(links) => links.map((a) => {
             const range = document.createRange();
             range.selectNodeContents(a);
             const fits = a.getBoundingClientRect().right <= window.innerWidth;
             return fits ? new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size : -1;
           })"""
    )
    assert lines and set(lines) == {1}, lines
    shots(page, "gallery-phone")
