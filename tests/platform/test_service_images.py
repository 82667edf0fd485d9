"""Each container image's dependency set, on its own: every process runs from a virtualenv holding
exactly what that image's Dockerfile installs (tests/image_venvs.py), with the image's CMD, and the
product is walked end to end through them on the real servers: sign up (notify worker mails), upload
(photos worker checks), train a likeness (train worker), generate a portrait (generate worker), and
every route family of the gateway. A module missing from an image fails with the image's name.

The processes get their own database (made by the gateway image's `studio migrate`) and Redis
database, so workers of the test environment that may run in the same session take none of the jobs.
"""

from __future__ import annotations

import mailbox
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from shared.localstack import LocalStack, free_port, wait_for_port
from tests.conftest import FAST_JOBS, Api, wait_until
from tests.image_venvs import Image, build_wheel, image_env, make_home, read_images
from tests.image_venvs import ensure_venv as _ensure_venv
from tests.pictures import astronaut_variants, jpeg

# The first run builds the venvs (the ML one holds torch: several minutes on 2 cores); later runs reuse them.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
WORKER_ENV = {"OMP_NUM_THREADS": "1"}  # one torch thread: far faster on a shared 2-core box
EXPECTED = {"gateway", "notifier", "photos", "trainer", "generator"}


@pytest.fixture(scope="module")
def images() -> dict[str, tuple[Image, Path]]:
    """{image name: (image, its virtualenv)}; the venvs are cached in var/image-venvs/."""
    found = read_images()
    wheel = build_wheel(Path(tempfile.mkdtemp(prefix="studio-wheel-")))
    return {image.name: (image, _ensure_venv(image, wheel)) for image in found}


@dataclass
class ImageProcesses:
    """Processes started from the images' venvs; a failure report names each one's image."""

    env: dict[str, str]
    home: Path
    running: list[tuple[str, list[str], subprocess.Popen, Path]] = field(default_factory=list)

    def start(self, image: Image, venv: Path, args: list[str], **env: str) -> subprocess.Popen:
        log = self.home / f"{image.name.replace(':', '-')}-{args[1]}-{uuid.uuid4().hex[:6]}.log"
        proc = subprocess.Popen(
            [str(venv / "bin" / args[0]), *args[1:]],
            cwd=self.home,  # not the checkout: only what the venv holds is importable
            env=image_env(image, venv, self.home, **{**self.env, **env}),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append((image.name, args, proc, log))
        return proc

    def report(self) -> str:
        lines = []
        for name, args, proc, log in self.running:
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            logged = log.read_text(errors="replace").splitlines()
            errors = list(dict.fromkeys(t.strip() for t in logged if "Error:" in t))[-5:]
            lines.append(
                f"image {name!r} `{' '.join(args)}`: {state}" + "".join(f"\n    {e}" for e in errors)
            )
        return "\n".join(lines)

    def stop_all(self) -> None:
        for *_, proc, _ in self.running:
            if proc.poll() is None:
                proc.terminate()
        for *_, proc, _ in self.running:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def own_database(stack: LocalStack) -> Iterator[str]:
    """A fresh database on the test Postgres; its URL."""
    name = f"images_{uuid.uuid4().hex[:8]}"
    admin = create_engine(stack.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    assert "/studio?" in stack.database_url
    yield stack.database_url.replace("/studio?", f"/{name}?")  # percent-encoded socket path kept as is
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_every_dockerfile_is_read_and_venvs_hold_only_their_extras(images) -> None:
    assert set(images) == EXPECTED
    gateway_image, gateway_venv = images["gateway"]
    assert gateway_image.extras == ("server",) and gateway_image.cmd[:2] == ("studio", "gateway")
    probe = "import importlib.util as u; print([m for m in ('cv2', 'torch', 'shared') if u.find_spec(m)])"
    out = subprocess.run(
        [str(gateway_venv / "bin" / "python"), "-c", probe],
        cwd=tempfile.gettempdir(),
        env=image_env(gateway_image, gateway_venv, Path(tempfile.gettempdir())),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "['shared']"  # no face toolkit, no torch: a plain venv without site-packages


def _wait_healthy(procs: ImageProcesses, proc: subprocess.Popen, port: int, what: str) -> None:
    try:
        wait_for_port(port, timeout=180, proc=proc)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    except Exception as e:
        pytest.fail(f"{what} did not become healthy ({e}):\n{procs.report()}")


def test_each_image_runs_its_part_of_the_product(images, stack: LocalStack, own_database: str) -> None:
    home = make_home()
    port = free_port()
    redis = stack.env()["REDIS_URL"].rsplit("/", 1)[0] + "/1"
    env = {
        **stack.env(),
        **FAST_JOBS,
        "DATABASE_URL": own_database,
        "REDIS_URL": redis,
        "S3_BUCKET": f"images-{uuid.uuid4().hex[:8]}",
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "MIN_TRAINING_PHOTOS": "5",
        "VAR_DIR": str(home / "var"),
    }
    procs = ImageProcesses(env, home)
    gateway, gateway_venv = images["gateway"]
    try:
        migrate = subprocess.run(
            [str(gateway_venv / "bin" / "studio"), "migrate"],
            cwd=home,
            env=image_env(gateway, gateway_venv, home, **env),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert migrate.returncode == 0, f"image 'gateway' `studio migrate`:\n{migrate.stdout}{migrate.stderr}"

        web_health = free_port()
        web = procs.start(
            gateway,
            gateway_venv,
            [*gateway.cmd[:2], "--host", "127.0.0.1", "--port", str(port)],
            HEALTH_PORT=str(web_health),
        )
        _wait_healthy(procs, web, port, "image 'gateway' `studio gateway`")
        for command in ("relay", "scheduler"):
            health = free_port()
            proc = procs.start(gateway, gateway_venv, ["studio", command], HEALTH_PORT=str(health))
            _wait_healthy(procs, proc, health, f"image 'gateway' `studio {command}`")
        for name in ("notifier", "photos", "trainer", "generator"):
            image, venv = images[name]
            health = free_port()
            proc = procs.start(image, venv, list(image.cmd), HEALTH_PORT=str(health), **WORKER_ENV)
            _wait_healthy(procs, proc, health, f"image {name!r} `{' '.join(image.cmd)}`")

        with Api(base_url=f"http://127.0.0.1:{port}", timeout=60) as api:
            _walk(api, stack)
        metrics = httpx.get(f"http://127.0.0.1:{web_health}/metrics", timeout=10)  # not on the public port
        assert "studio_http_requests_total" in metrics.text, "image 'gateway': no /metrics on HEALTH_PORT"
    except Exception as e:
        pytest.fail(f"{type(e).__name__}: {e}\n{procs.report()}")
    finally:
        procs.stop_all()
        shutil.rmtree(home, ignore_errors=True)  # the failure message carries the logs' errors


def _walk(api: Api, stack: LocalStack) -> None:
    """Every route family, each kind of job taken by the image that serves its queue."""
    assert api.get("/healthz").status_code == 200
    assert api.get("/").status_code == 200  # the web page (static files in the wheel)
    user = api.new_user()  # auth: sign up (mails a verification link), log in; me: consent
    [mail] = wait_until(lambda: _mails_to(stack, user.email), timeout=120, what="the verification mail")
    token = re.search(r"#/verify\?token=([A-Za-z0-9_\-]+)", mail.get_body(("plain",)).get_content()).group(1)
    assert api.post("/v1/auth/verify-email", json={"token": token}).status_code == 200  # results mail now
    me = api.get("/v1/me", headers=user.auth).json()
    assert me["email"] == user.email and me["email_verified"] is True

    files = [("files", (f"me{i}.jpg", jpeg(im), "image/jpeg")) for i, im in enumerate(astronaut_variants(5))]
    upload = api.post("/v1/photos", files=files, headers=user.auth)
    assert upload.status_code == 201, upload.text
    checked = api.wait_job(upload.json()["job"]["id"], user, timeout=180)  # the photos image's worker
    assert checked["status"] == "succeeded" and checked["result"] == {"accepted": 5, "rejected": 0}, checked
    assert len(api.get("/v1/photos", headers=user.auth).json()["photos"]) == 5

    started = api.post("/v1/likenesses", json={"class_word": "woman"}, headers=user.auth)
    assert started.status_code == 202, f"POST /v1/likenesses: {started.status_code} {started.text}"
    trained = api.follow_events(started.json()["job"]["id"], user, timeout=300)[-1]  # the trainer image
    assert trained["status"] == "succeeded", trained
    likeness_id = started.json()["likeness"]["id"]
    assert api.get(f"/v1/likenesses/{likeness_id}", headers=user.auth).json()["status"] == "ready"

    styles = api.get("/v1/styles", headers=user.auth).json()["styles"]
    body = {"likeness_id": likeness_id, "styles": [styles[0]["id"]], "count": 1}
    asked = api.post("/v1/portraits", json=body, headers=user.auth)
    assert asked.status_code == 202, asked.text
    made = api.follow_events(asked.json()["job"]["id"], user, timeout=300)[-1]  # the generator image
    assert made["status"] == "succeeded" and made["result"]["portraits"] == 1, made
    portraits = api.get("/v1/portraits", headers=user.auth).json()["portraits"]
    assert len(portraits) == 1 and httpx.get(portraits[0]["url"], timeout=30).status_code == 200
    zipped = api.get("/v1/portraits/zip", params={"job_id": asked.json()["job"]["id"]}, headers=user.auth)
    assert zipped.status_code == 200 and zipped.content[:2] == b"PK"
    download = api.get(f"/v1/likenesses/{likeness_id}/download?format=kohya", headers=user.auth)
    assert download.status_code == 200 and httpx.get(download.json()["url"], timeout=30).status_code == 200
    for path in ("/readyz", "/v1/system"):  # probes, system (metrics: on HEALTH_PORT, see the caller)
        assert api.get(path, headers=user.auth).status_code == 200, path
    jobs = api.get("/v1/jobs", headers=user.auth).json()["jobs"]
    assert {j["kind"] for j in jobs} >= {"photo_check", "train_likeness", "generate_portraits"}

    # The notifier image's worker sends every mail: verify_email, training_finished, portraits_ready.
    def mail_jobs() -> list[dict]:
        listed = api.get("/v1/jobs", params={"kind": "send_email"}, headers=user.auth).json()["jobs"]
        return [j for j in listed if j["status"] in ("succeeded", "failed", "canceled")]

    deadline = time.monotonic() + 120
    while len(mail_jobs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    sent = mail_jobs()
    assert [j["status"] for j in sent] == ["succeeded"] * 3, [(j["status"], j["error_message"]) for j in sent]
    subjects = [m["Subject"] for m in _mails_to(stack, user.email)]
    assert len(subjects) == 3, subjects
    # Deleted only now: a "portraits ready" mail for a job whose portraits are all gone is skipped.
    assert api.delete(f"/v1/portraits/{portraits[0]['id']}", headers=user.auth).status_code in (200, 204)


def _mails_to(stack: LocalStack, address: str) -> list[EmailMessage]:
    box = mailbox.Maildir(stack.mail_dir, create=False)
    mails = [message_from_bytes(box.get_bytes(key), policy=policy.default) for key in box.iterkeys()]
    return [m for m in mails if m["To"] == address]
