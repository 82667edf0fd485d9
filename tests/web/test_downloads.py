"""Gallery downloads (issue 23 item 6): a portrait's Download button saves the file (S3 answers with
`Content-Disposition: attachment`, the page stays put, no tab opens), and still works on a page left
open past the presigned URLs' lifetime: here a second gateway signs URLs for 3 s (PRESIGN_SECONDS),
and the page asks the API for fresh ones before they expire. In English and in Korean."""

import time
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image

from shared import storage
from shared.db import session_scope
from shared.localstack import free_port, wait_for_port
from shared.models import Job, Portrait
from tests.conftest import Api, Processes
from tests.pictures import png
from tests.web.conftest import Shots, Web
from tests.web.helpers import sign_in

LIFETIME = 3  # seconds a presigned URL stays valid on the short-lived gateway


def _portraits(user_id: uuid.UUID, n: int = 2) -> str:
    """A finished portrait job of `user_id` with `n` portraits in S3; returns the job id."""
    with session_scope() as session:
        job = Job(user_id=user_id, kind="generate_portraits", status="succeeded", input={}, progress=1.0)
        session.add(job)
        session.flush()
        for i in range(n):
            key = storage.user_key(user_id, "portraits", f"{job.id}-{i}.png")
            storage.put_bytes(key, png(Image.new("RGB", (64, 96), (40 * i, 90, 160))), "image/png")
            session.add(
                Portrait(
                    user_id=user_id, job_id=job.id, style="black-white", seed=i, object_key=key,
                    width=64, height=96, identity_score=0.9 - i / 10,
                )
            )  # fmt: skip
        return str(job.id)


@pytest.fixture
def short_lived(procs: Processes) -> str:
    """A gateway on the same stack whose presigned URLs live LIFETIME seconds."""
    port = free_port()
    env = {"PRESIGN_SECONDS": str(LIFETIME), "PUBLIC_URL": f"http://127.0.0.1:{port}"}
    procs.start("gateway-short", "gateway", "--port", str(port), env={**env, "HEALTH_PORT": str(free_port())})
    wait_for_port(port, timeout=60)
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(("locale", "download"), [("en", "Download"), ("ko", "내려받기")])
def test_a_download_saves_the_file_and_still_works_after_the_links_expired(
    web: Web, api: Api, short_lived: str, shots: Shots, locale: str, download: str
) -> None:
    user = api.new_user()
    me = api.get("/v1/me", headers=user.auth).json()
    job_id = _portraits(uuid.UUID(me["id"]))
    # The API: the download URL asks S3 for an attachment; the URLs say how long they live.
    with httpx.Client(base_url=short_lived, timeout=30) as short:
        listed = short.get("/v1/portraits", params={"job_id": job_id}, headers=user.auth).json()["portraits"]
        first = listed[0]
        assert first["urls_expire_in"] == LIFETIME
        saved = httpx.get(first["download_url"], timeout=30)
        assert saved.status_code == 200
        assert saved.headers["content-disposition"].startswith('attachment; filename="portrait-black-white-')
        time.sleep(LIFETIME + 1)
        assert httpx.get(first["download_url"], timeout=30).status_code == 403  # expired, as S3 says

    # The web fixture checks this page too: no JavaScript errors, contexts closed.
    page = Web(web.browser, short_lived, errors=web.errors, contexts=web.contexts).page()
    sign_in(page, user, f"#/gallery?job={job_id}")
    cards = page.locator(".portrait")
    cards.first.wait_for()
    page.select_option("#lang", locale)
    cards.first.locator("button", has_text=download).wait_for()
    assert cards.count() == 2
    shots(page, f"gallery-{locale}")
    opened = []
    page.context.on("page", lambda p: opened.append(p))
    for attempt in range(2):  # fresh, then with every URL the page first read long expired
        if attempt:
            time.sleep(LIFETIME * 2 + 1)
        with page.expect_download() as got:
            cards.first.locator("button", has_text=download).click()
        file = Path(got.value.path())
        assert got.value.suggested_filename.startswith("portrait-black-white-")
        assert file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", file.read_bytes()[:200]
    assert not opened, "a download opened a tab"
    assert page.url.endswith(f"#/gallery?job={job_id}")
    # The full-size viewer of a page left open shows the picture, and downloads it too.
    time.sleep(LIFETIME * 2 + 1)
    cards.nth(1).locator(".portrait-open").click()
    viewer = page.locator("dialog.viewer")
    image = viewer.locator("img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    with page.expect_download() as got:
        viewer.locator("button", has_text=download).click()
    assert Path(got.value.path()).read_bytes()[:4] == b"\x89PNG"
    shots(page, f"viewer-{locale}")
