"""The walk: sign up → consent → upload real photos → each accepted or rejected with its reason → the
event stream seen from start to end."""

import email
import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.conftest import REPO, Api, Platform, wait_until
from tests.pictures import astronaut, camera, cat, jpeg, png, two_people


def test_sign_up_upload_and_watch_the_check(api: Api) -> None:
    user = api.new_user(consent=False)
    me = api.get("/v1/me", headers=user.auth).json()
    assert me["email"] == user.email and me["face_consent_at"] is None

    files = [("files", ("me.jpg", jpeg(astronaut()), "image/jpeg"))]
    refused = api.post("/v1/photos", files=files, headers=user.auth)
    assert refused.status_code == 403 and "agree" in refused.json()["detail"]

    assert api.post("/v1/me/consent", json={"accept": True}, headers=user.auth).status_code == 200
    assert api.get("/v1/me", headers=user.auth).json()["face_consent_at"] is not None

    files = [
        ("files", ("me.jpg", jpeg(astronaut()), "image/jpeg")),
        ("files", ("cat.png", png(cat()), "image/png")),
        ("files", ("camera.jpg", jpeg(camera()), "image/jpeg")),
        ("files", ("two.jpg", jpeg(two_people()), "image/jpeg")),
    ]
    upload = api.post("/v1/photos", files=files, headers=user.auth)
    assert upload.status_code == 201, upload.text
    body = upload.json()
    assert [p["status"] for p in body["photos"]] == ["checking"] * 4
    job_id = body["job"]["id"]

    # Follow the server-sent events to the end, as a browser's EventSource would.
    seen = api.follow_events(job_id, user)
    assert seen[-1]["status"] == "succeeded", seen[-1]
    assert seen[-1]["result"] == {"accepted": 1, "rejected": 3}
    assert any(e.get("detail", {}).get("photo") for e in seen), "per-photo events were streamed"

    photos = {p["id"]: p for p in api.get("/v1/photos", headers=user.auth).json()["photos"]}
    by_name = dict(zip(["me", "cat", "camera", "two"], [p["id"] for p in body["photos"]], strict=True))
    assert photos[by_name["me"]]["status"] == "accepted"
    assert photos[by_name["cat"]]["reason_code"] == "no_face"
    assert photos[by_name["two"]]["reason_code"] == "multiple_faces"
    assert "two faces" in photos[by_name["two"]]["reason"].lower()
    assert photos[by_name["camera"]]["status"] == "rejected"
    assert photos[by_name["camera"]]["reason"]

    # The presigned URL serves the re-encoded photo; without a signature S3 refuses.
    url = photos[by_name["me"]]["url"]
    got = api.get(url)
    assert got.status_code == 200 and got.content[:3] == b"\xff\xd8\xff"
    assert api.get(url.split("?")[0]).status_code == 403


def test_non_image_is_refused_with_a_reason(api: Api) -> None:
    user = api.new_user()
    r = api.post(
        "/v1/photos",
        headers=user.auth,
        files=[("files", ("notes.jpg", b"hello, I am text", "image/jpeg"))],
    )
    assert r.status_code == 415
    assert "notes.jpg is not a JPEG, PNG, WebP or HEIC photo" in r.json()["detail"]
    assert api.get("/v1/photos", headers=user.auth).json()["photos"] == []


def test_readme_walkthrough_confirms_the_address_from_the_maildir(
    api: Api, platform: Platform, tmp_path: Path
) -> None:
    """The README's verify step, run as written (its address replaced by this user's) on a Maildir
    that also holds another account's newer sign-up mail, started before this user's mail arrives:
    it waits for the mail and picks this user's token."""
    readme = (REPO / "README.md").read_text()
    assert ".eml" not in readme
    helper = re.search(r"^mail_token\(\) \{ python3 -c '.*' \"\$@\"; \}$", readme, re.MULTILINE)
    snippet = re.search(r"^VTOKEN=\$\((mail_token me@example.com verify)\)$", readme, re.MULTILINE)
    assert helper and snippet, "the README shows the verify step"
    # The password reset takes its token with the same helper.
    assert "RTOKEN=$(mail_token me@example.com reset)" in readme
    user, other = api.new_user(), api.new_user()  # the other mail is the newer

    def mail_to(address: str) -> Path | None:
        for path in (platform.stack.mail_dir / "new").iterdir():
            if email.message_from_bytes(path.read_bytes())["To"] == address:
                return path
        return None

    mail = wait_until(lambda: mail_to(user.email), timeout=60, what="the sign-up mail")
    decoy = wait_until(lambda: mail_to(other.email), timeout=60, what="the other sign-up mail")
    maildir = tmp_path / "var" / "mail"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    shutil.copy(decoy, maildir / "new" / decoy.name)
    script = helper.group(0) + "\n" + snippet.group(1).replace("me@example.com", user.email)
    run = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    time.sleep(2)  # the mail arrives after the command started (the README runs it right after sign-up)
    shutil.copy(mail, maildir / "new" / mail.name)
    token = run.communicate(timeout=60)[0].strip()
    assert run.returncode == 0
    assert api.get("/v1/me", headers=user.auth).json()["email_verified"] is False
    r = api.post("/v1/auth/verify-email", json={"token": token})
    assert r.status_code == 200, r.text
    assert api.get("/v1/me", headers=user.auth).json()["email_verified"] is True
