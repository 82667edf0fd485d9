"""`studio models pull` end to end: the real huggingface_hub client against a server in the hub's
URL layout (HF_ENDPOINT), its CDN, and a GitHub-style release server (tests/ml/hub_server.py),
serving SD-1.5-shaped random weights (bench/sd15_random.py) under the shipped manifest's
repositories, revisions and file names; then MODEL_PRESET=sd15 starts on what was pulled."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load, load_file, save

from bench import sd15_random
from shared.config import get_settings
from shared.ml import loading, registry
from shared.ml.convert import UnsafePickle, pickle_to_safetensors
from tests.ml.hub_server import Servers, Upstream

TOKEN = "hf_test_token_never_leaves_the_hub"
# The `studio` entry point (shared.cli:app). huggingface_hub's http_get keeps what it received in
# chunks of DOWNLOAD_CHUNK_SIZE (10 MiB) and resumes from the last whole chunk; the small test files
# need a small chunk for a cut halfway to leave bytes to resume from. Nothing else is changed.
CLI = (
    "import huggingface_hub.constants as c; c.DOWNLOAD_CHUNK_SIZE = 1 << 16; "
    "from shared.cli import app; app(prog_name='studio')"
)
PULLED = list(sd15_random.WRITTEN)  # epicrealism, sd15_config, both ControlNets, Real-ESRGAN, LoRAs
RELEASE = "RealESRGAN_x4plus.pth"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random weights, written once in the real files' names and formats."""
    root = tmp_path_factory.mktemp("upstream-weights")
    sd15_random.write_model_dir(root, "cpu", small=True, rank=4)
    return root


@pytest.fixture
def hub(source: Path, tmp_path: Path):
    """Servers holding the source files where the shipped manifest says they live, and a test
    manifest that is the shipped one with, for those models, each published sha256/size replaced
    by the random file's (null stays null); hubs, revisions, paths and `convert` stay. The models
    not pulled (detectors, sd15_base, 4x_ultrasharp) stay listed, absent, as on a real server."""
    shipped = yaml.safe_load(registry.MANIFEST.read_text())
    upstream = Upstream()
    servers = Servers(upstream)
    models = shipped["models"]
    for name in PULLED:
        spec = shipped["models"][name]
        for file in spec["files"]:
            data = (source / name / file["path"]).read_bytes()
            if file.get("url"):  # GitHub release: same path, local host
                path = file["url"].split("github.com", 1)[1]
                file["url"] = upstream.urls["github"] + path
                upstream.releases[path.rsplit("/", 1)[-1]] = data
            else:
                upstream.hub[(spec["hub"], spec.get("revision", "main"), file["path"])] = data
            if file.get("sha256"):
                file["sha256"] = _sha(data)
            if file.get("size"):
                file["size"] = len(data)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"defaults": shipped["defaults"], "models": models}))
    yield upstream, manifest
    servers.close()


def studio_pull(manifest: Path, model_dir: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess:
    """`studio models pull ARGS` in a fresh process, configured as an operator would: HF_ENDPOINT
    (the hub client reads it at import), HF_TOKEN, MODEL_DIR, MODEL_MANIFEST."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "MODEL_"))}
    env |= {
        "PYTHONPATH": str(Path.cwd()),
        "MODEL_DIR": str(model_dir),
        "MODEL_MANIFEST": str(manifest),
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": TOKEN,
        "HF_HOME": str(model_dir.parent / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    return subprocess.run(
        [sys.executable, "-c", CLI, "models", "pull", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_studio_models_pull_end_to_end(hub, source: Path, tmp_path: Path, monkeypatch):
    upstream, manifest = hub
    dst = tmp_path / "models"
    tile_bin = (source / "controlnet_tile" / "diffusion_pytorch_model.bin").read_bytes()
    upstream.cut_once |= {_sha(tile_bin), RELEASE}  # both transfers break halfway, once

    done = _pull(manifest, dst, upstream, *[n for n in PULLED if n != "epicrealism"])
    assert done.returncode == 0, done.stderr
    # Resume after a cut connection: the client asked for the rest with a Range request.
    for role, path in (("cdn", f"/blobs/{_sha(tile_bin)}"), ("github", f"/assets/{RELEASE}")):
        gets = [r["range"] for r in upstream.requests(role) if r["path"] == path]
        assert len(gets) == 2 and gets[0] is None, gets
        assert gets[1].startswith("bytes=") and int(gets[1][6:-1]) > 0, gets
    assert (dst / "realesrgan_x4plus" / RELEASE).read_bytes() == (
        source / "realesrgan_x4plus" / RELEASE
    ).read_bytes()
    assert (dst / "controlnet_tile" / "diffusion_pytorch_model.bin").read_bytes() == tile_bin

    # A wrong byte against the published hash: refused, nothing written where loaders look.
    ckpt = "epicrealism_naturalSinRC1VAE.safetensors"
    key = next(k for k in upstream.hub if k[2] == ckpt)
    good = upstream.hub[key]
    upstream.hub[key] = good[:-1] + bytes([good[-1] ^ 1])
    refused = _pull(manifest, dst, upstream, "epicrealism")
    assert refused.returncode == 1 and "checksum mismatch" in refused.stderr
    assert _sha(good) in refused.stderr and "Traceback" not in refused.stderr
    assert not (dst / "epicrealism" / ckpt).exists()
    staged = [p for p in (dst / ".download").rglob("*") if p.is_file() and ".cache" not in p.parts]
    assert not staged  # no half-written or refused bytes left (.cache: huggingface_hub's etags)
    upstream.hub[key] = good
    assert _pull(manifest, dst, upstream, "epicrealism").returncode == 0

    # The token went to the hub only: never to its CDN, never to GitHub, never into the output.
    hub_calls = upstream.requests("hub")
    assert hub_calls and all(r["auth"] == f"Bearer {TOKEN}" for r in hub_calls)
    others = upstream.requests("cdn") + upstream.requests("github")
    assert others and all(r["auth"] is None for r in others), others
    assert TOKEN not in done.stdout + done.stderr + refused.stderr

    # A changed upstream file (re-uploaded at `main`) is refused against the pin of the first pull.
    lora = "FilmVelvia3.safetensors"
    lora_key = next(k for k in upstream.hub if k[2] == lora)
    assert lora_key[1] == "main"
    pins = json.loads((dst / "pins.json").read_text())
    old = pins[f"lora_film/{lora}"]["sha256"]
    tensors = load(upstream.hub[lora_key])
    upstream.hub[lora_key] = save(tensors, metadata={"re-uploaded": "yes"})
    (dst / "lora_film" / lora).unlink()  # e.g. a new node, or a file lost: the pull fetches again
    changed = _pull(manifest, dst, upstream, "lora_film")
    assert changed.returncode == 1, changed.stdout
    assert "studio models pull --accept-new lora_film" in changed.stderr and old in changed.stderr
    assert not (dst / "lora_film" / lora).exists()
    assert json.loads((dst / "pins.json").read_text())[f"lora_film/{lora}"]["sha256"] == old
    again = _pull(manifest, dst, upstream, "lora_film")  # still refused: the pin holds
    assert again.returncode == 1
    accepted = _pull(manifest, dst, upstream, "--accept-new", "lora_film")  # the operator says so
    assert accepted.returncode == 0, accepted.stderr
    new = json.loads((dst / "pins.json").read_text())[f"lora_film/{lora}"]["sha256"]
    assert new == _sha(upstream.hub[lora_key]) != old

    # The tile ControlNet's .bin was loaded weights-only into the safetensors the loader reads.
    converted = load_file(dst / "controlnet_tile" / "diffusion_pytorch_model.safetensors")
    original = torch.load(io.BytesIO(tile_bin), weights_only=True)
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[k], original[k]) for k in original)

    # MODEL_PRESET=sd15 starts on what was pulled (the real loaders, the test manifest).
    from services.generator.resident import load_resident

    for var, value in (("MODEL_PRESET", "sd15"), ("MODEL_DIR", dst), ("MODEL_MANIFEST", manifest)):
        monkeypatch.setenv(var, str(value))
    _clear_caches()
    try:
        models = load_resident("sd15", "cpu")
        want = sd15_random.sd15_components("cpu", small=True)
        got, ref = models.base.unet.state_dict(), want["unet"].state_dict()
        assert got.keys() == ref.keys()
        assert all(torch.equal(got[k].half(), ref[k].half()) for k in ref)
        tile = models.controlnet_tile.state_dict()
        assert all(torch.equal(tile[k], original[k].float()) for k in original)
        assert models.upscaler.scale == 4
        assert set(models.hashes) == {"base", "controlnet_openpose", "controlnet_tile", "upscaler"}
    finally:
        monkeypatch.undo()
        _clear_caches()


def _pull(manifest: Path, dst: Path, upstream: Upstream, *args: str) -> subprocess.CompletedProcess:
    return studio_pull(manifest, dst, upstream.urls["hub"], *args)


def _clear_caches() -> None:
    get_settings.cache_clear()
    registry._load_manifest.cache_clear()
    for cached in (loading._base, loading._controlnet, loading._upscaler):
        cached.cache_clear()


class _RunsCode:
    """A pickle payload that runs a command when unpickled with full rights."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_not_loaded(tmp_path: Path):
    marker = tmp_path / "code-ran"
    src = tmp_path / "diffusion_pytorch_model.bin"
    torch.save({"w": torch.ones(2), "payload": _RunsCode(marker)}, src)
    with pytest.raises(UnsafePickle, match="not a weights-only pickle"):
        pickle_to_safetensors(src, tmp_path / "out.safetensors")
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_a_state_dict_pickle_converts_exactly(tmp_path: Path):
    state = {"a.weight": torch.randn(3, 4, dtype=torch.float16), "b": torch.arange(5)}
    state["tied"] = state["b"]  # shared storage, which safetensors alone refuses
    torch.save(state, tmp_path / "w.bin")
    assert pickle_to_safetensors(tmp_path / "w.bin", tmp_path / "w.safetensors") == 3
    back = load_file(tmp_path / "w.safetensors")
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in state.items())


def test_pull_refuses_a_pickle_that_runs_code(tmp_path: Path):
    """Through `pull_models`: a `.bin` marked `convert` that holds code is never unpickled with
    full rights, and no converted file appears."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from shared.ml.pull import pull_models

    served, marker = tmp_path / "served", tmp_path / "code-ran"
    served.mkdir()
    torch.save({"w": torch.ones(2), "payload": _RunsCode(marker)}, served / "model.bin")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=served))
    Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/model.bin"
    spec = {"kind": "controlnet", "layout": "folder", "licence": "test", "size_mb": 0}
    files = [{"path": "diffusion_pytorch_model.bin", "url": url, "convert": "safetensors"}]
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"defaults": {}, "models": {"cn": {**spec, "files": files}}}))
    try:
        with pytest.raises(UnsafePickle):
            pull_models(["cn"], tmp_path / "models", manifest_path=manifest, progress=False)
    finally:
        httpd.shutdown()
    assert not marker.exists()
    assert not (tmp_path / "models" / "cn" / "diffusion_pytorch_model.safetensors").exists()
