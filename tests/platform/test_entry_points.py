"""The entry points newcomers use: `studio run` comes up and serves, and Ctrl-C leaves no process
behind; `studio train` and `studio generate` on the tiny preset, without any service."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from services.generator.metadata import read_png_metadata
from shared.localstack import free_port, free_port_block
from tests.conftest import REPO, _child_env, wait_until
from tests.pictures import astronaut_variants, jpeg

ENV = {"OMP_NUM_THREADS": "1", "MODEL_PRESET": "tiny"}


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow  # ~60 s: the local stack, four workers, gateway, relay and scheduler start
def test_studio_run_serves_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    port, base = free_port(), free_port_block(30)
    env = {**_child_env(), **ENV, "VAR_DIR": str(tmp_path / "var"), "HEALTH_PORT": "0"}
    for key in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT_URL", "SMTP_HOST", "SMTP_PORT"):
        env.pop(key, None)  # `studio run` starts and points at its own servers
    run = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "run", "--port", str(port), "--base-port", str(base)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # SIGINT ignored, as a non-interactive shell starts `studio run &` (and as pytest itself
        # is, run in the background): Python then has no KeyboardInterrupt unless studio run sets it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(serving, timeout=240, interval=1, what="studio run to serve")
        assert httpx.get(f"{url}/v1/system", timeout=10).json()["model_preset"] == "tiny"
        assert "<html" in httpx.get(url, timeout=10).text.lower()
        tree = psutil.Process(run.pid).children(recursive=True)
        assert len(tree) >= 10  # servers, gateway, four workers (and their pools), relay, scheduler
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
        try:
            out, _ = run.communicate(timeout=120)
        except subprocess.TimeoutExpired as e:
            tail = (e.output or b"")[-4000:]
            pytest.fail(f"studio run did not stop within 120 s of Ctrl-C; its output ends:\n{tail!r}")
        assert run.returncode == 0, out[-3000:]
        assert "stopped." in out
        wait_until(lambda: not [p for p in tree if _alive(p)], timeout=30, what="every child gone")
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()


@pytest.mark.slow  # ~60-90 s: a tiny training and one tiny portrait on the CPU
def test_studio_train_then_generate_on_the_tiny_preset(tmp_path: Path) -> None:
    photos, likeness, portraits = tmp_path / "photos", tmp_path / "likeness", tmp_path / "portraits"
    photos.mkdir()
    for i, image in enumerate(astronaut_variants(8)):
        (photos / f"me{i}.jpg").write_bytes(jpeg(image))
    env = {**_child_env(), **ENV, "MODEL_DIR": str(REPO / "var" / "test-models")}

    def studio(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "shared.cli", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    trained = json.loads(
        studio("train", "--photos", str(photos), "--out", str(likeness), "--class-word", "woman",
               "--preset", "tiny", "--seed", "1").stdout
    )  # fmt: skip
    assert trained["class_word"] == "woman" and trained["steps"] > 0
    assert Path(trained["lora_kohya"]).is_file() and Path(trained["lora_diffusers"]).is_dir()

    studio("generate", "--style", "studio-business", "--out", str(portraits), "--likeness", str(likeness),
           "--count", "1", "--seed", "7", "--preset", "tiny", "--device", "cpu")  # fmt: skip
    [png] = portraits.glob("*.png")
    assert png.name == "studio-business_7.png"
    parameters, meta = read_png_metadata(png.read_bytes())
    assert f"{trained['trigger_word']} woman" in parameters and "Seed: 7" in parameters
    assert meta["style"] == "studio-business" and meta["likeness"]["trigger_word"] == trained["trigger_word"]
