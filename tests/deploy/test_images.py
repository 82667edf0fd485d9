"""The gateway image, built for real (buildah, deploy/images.sh) and run against the test servers.

Its process starts from the image's own command and environment, as uid 10001, with the host's
network; Postgres is reached through its unix socket, bind-mounted. The photos are checked by the
`platform` fixture's relay and photos worker (outside the image), so `POST /v1/likenesses` reaches
the code behind the 8-photo rule. buildah and mmdebstrap are required: `make system-deps` installs
them, and a missing one fails the test (a skip would hide an unbuilt image).
"""

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.localstack import free_port, wait_for_port
from tests.conftest import FAST_JOBS, Api, Platform
from tests.pictures import astronaut_variants, jpeg

from .conftest import REPO

# A fresh build every run (its own tag): mmdebstrap, the image's venv and the start fit in 30 minutes
# on a loaded 2-core machine (measured: 11 min to a built image while seven other test runs went on).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
IMAGES = REPO / "deploy" / "images.sh"
INSTALL_HINT = (
    "{} is required to build the images: `make system-deps` installs it "
    "(Debian: apt-get install -y buildah mmdebstrap)."
)
SOCKET = "/run/postgresql"  # where the image sees Postgres's socket
# A tag of this run's own: buildah's storage lives outside the clone, so an image (or base) left by an
# earlier run under the usual `dev` tag must not stand in for a build that would fail on a fresh machine.
TAG = f"test-{uuid.uuid4().hex[:12]}"


def images(*args: str, timeout: float, **popen: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "TAG": TAG}
    return subprocess.run([str(IMAGES), *args], cwd=REPO, timeout=timeout, env=env, **popen)  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def gateway_image() -> Iterator[str]:
    for tool in ("buildah", "mmdebstrap"):
        if not shutil.which(tool):
            pytest.fail(INSTALL_HINT.format(tool), pytrace=False)
    try:
        result = images("build", "gateway", timeout=3600, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"deploy/images.sh build gateway failed:\n{result.stderr[-6000:]}", pytrace=False)
        print(*(line for line in result.stderr.splitlines() if line.startswith("[images]")), sep="\n")
        yield "gateway"
    finally:  # vfs keeps every image as a full copy: leave none behind
        images("rmi", "gateway", timeout=600, capture_output=True)


def image_env(platform: Platform, port: int) -> dict[str, str]:
    """The test servers' settings, with the database URL pointing at the mounted socket."""
    env = {**platform.stack.env(), **FAST_JOBS, "PUBLIC_URL": f"http://127.0.0.1:{port}"}
    env["DATABASE_URL"] = env["DATABASE_URL"].split("?host=")[0] + f"?host={SOCKET}"
    env.pop("MODEL_DIR")  # the image's own (the gateway loads no model)
    return env


@dataclass
class Running:
    url: str
    log: Path

    def tail(self) -> str:
        """The image's last traceback (a missing module shows here), else its last lines."""
        time.sleep(2)  # the traceback is written after the response
        text = self.log.read_text(errors="replace")
        start = text.rfind("Traceback")
        return "gateway image's log:\n" + (text[start:] if start >= 0 else text)[-3000:]


@pytest.fixture
def gateway_in_image(gateway_image: str, platform: Platform, tmp_path: Path) -> Iterator[Running]:
    port = free_port()
    socket_dir = platform.stack.database_url.split("?host=")[1]
    options = [f"-v={socket_dir}/.s.PGSQL.5432:{SOCKET}/.s.PGSQL.5432"]
    options += [f"-e={k}={v}" for k, v in image_env(platform, port).items()]
    log = open(tmp_path / "gateway-image.log", "wb")  # noqa: SIM115
    command = ["studio", "gateway", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [str(IMAGES), "run", gateway_image, *options, "--", *command],
        cwd=REPO,
        env={**os.environ, "TAG": TAG},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, timeout=120)
    except TimeoutError:
        proc.kill()
        pytest.fail((tmp_path / "gateway-image.log").read_text()[-4000:], pytrace=False)
    yield Running(f"http://127.0.0.1:{port}", tmp_path / "gateway-image.log")
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


def test_the_gateway_image_is_healthy_and_starts_a_training(gateway_in_image: Running) -> None:
    # The image's own HEALTHCHECK command, run in a second container of the image.
    inspect = subprocess.run(
        [
            "buildah",
            "--storage-driver",
            "vfs",
            "inspect",
            "--type",
            "image",
            f"localhost/studio-gateway:{TAG}",
        ],  # noqa: E501
        capture_output=True,
        text=True,
        check=True,
    )
    check = json.loads(inspect.stdout)["Docker"]["config"]["Healthcheck"]["Test"]
    assert check[0] == "CMD", check
    port = gateway_in_image.url.rsplit(":", 1)[1]
    probe = images("run", "gateway", f"-e=HEALTHCHECK_PORT={port}", "--", *check[1:], timeout=120)
    assert probe.returncode == 0, "the image's HEALTHCHECK failed against its running gateway"

    with Api(base_url=gateway_in_image.url, timeout=60) as api:
        assert api.get("/healthz").status_code == 200
        assert api.get("/readyz").status_code == 200
        user = api.new_user()
        files = [
            ("files", (f"me{i}.jpg", jpeg(im), "image/jpeg")) for i, im in enumerate(astronaut_variants(8))
        ]
        r = api.post("/v1/photos", files=files, headers=user.auth)
        assert r.status_code == 201, r.text
        job = api.wait_job(r.json()["job"]["id"], user)
        assert job["result"] == {"accepted": 8, "rejected": 0}, job

        r = api.post("/v1/likenesses", json={"class_word": "woman"}, headers=user.auth)
        assert r.status_code == 202, f"{r.status_code} {r.text}\n{gateway_in_image.tail()}"
        likeness = r.json()["likeness"]
        assert likeness["trigger_word"] and likeness["status"] == "training"
        # No train worker here: cancel the queued training so no later test's worker takes it.
        assert api.delete(f"/v1/likenesses/{likeness['id']}", headers=user.auth).status_code == 204
        assert api.get("/v1/likenesses", headers=user.auth).json() == {"likenesses": []}
