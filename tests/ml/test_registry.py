"""The model registry: errors an operator can act on, checksums, pins, and pulling over HTTP."""

import hashlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from shared.ml import registry
from shared.ml.pull import pull_models

PAYLOAD = b"not really weights, but bytes with a known hash\n" * 100
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path):
    """A real HTTP server serving files from a folder."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "w.safetensors").write_bytes(PAYLOAD)
    (served / "other.bin").write_bytes(b"other bytes")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()


def write_manifest(path: Path, url: str, sha: str | None) -> Path:
    weights = f"{url}/w.safetensors"
    path.write_text(
        yaml.safe_dump(
            {
                "defaults": {"base": "ckpt"},
                "models": {
                    "ckpt": {
                        "kind": "checkpoint",
                        "layout": "file",
                        "licence": "test",
                        "size_mb": 0.005,
                        "files": [{"path": "w.safetensors", "url": weights, "sha256": sha}],
                    },
                    "folder": {
                        "kind": "controlnet",
                        "layout": "folder",
                        "licence": "test",
                        "size_mb": 0.0,
                        "files": [
                            {"path": "sub/other.bin", "url": f"{url}/other.bin"},
                            {"path": "w.safetensors", "url": f"{url}/w.safetensors"},
                        ],
                    },
                },
            }
        )
    )
    return path


def test_real_manifest_is_valid():
    m = registry.manifest()
    for role in ("base", "base_config", "controlnet_openpose", "controlnet_tile", "upscaler"):
        assert m.defaults[role] in m.models
    for spec in m.models.values():
        for f in spec.files:
            assert spec.url(f).startswith("https://")
            assert f.sha256 is None or len(f.sha256) == 64
            # hub files go through huggingface_hub at a revision; `url` is for other hosts only
            assert f.url is None or "huggingface.co" not in f.url, f.url
    assert registry.get_spec("adetailer_face").url(m.models["adetailer_face"].files[0]) == (
        "https://huggingface.co/Bingsu/adetailer/resolve/53cc19de382014514d9d4038601d261a7faa9b7b/face_yolov8n.pt"
    )


# The hashes issue 28 found published (hub LFS pages, GitHub release evidence): they must stay pinned.
PUBLISHED = {
    "adetailer_face/face_yolov8n.pt": "70b640f8f60b1cf0dcc72f30caf3da9495eb2fb6509da48c53374ad6806e6a9c",
    "adetailer_hand/hand_yolov8n.pt": "3991202eb69e9ddcb3b9ba80cdeb41e734ffaf844403d6c9f47d515cd88c6f29",
    "realesrgan_x4plus/RealESRGAN_x4plus.pth": (
        "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1"
    ),
    "4x_ultrasharp/4x-UltraSharp.pth": "a5812231fc936b42af08a5edba784195495d303d5b3248c24489ef0c4021fe01",
    "controlnet_openpose/diffusion_pytorch_model.fp16.safetensors": (
        "b25b1125e870275550b2a7de289056cb3c236c01c293bd5ba883657b1c006e3e"
    ),
    "epicrealism/epicrealism_naturalSinRC1VAE.safetensors": (
        "84d76a0328ee5a1a2a1d466ba7478ab59183e3fea385441528aa4c5d567fd43e"
    ),
}


def test_the_manifest_pins_every_published_hash_and_revision():
    m = registry.manifest()
    hashes = {f"{name}/{f.path}": f.sha256 for name, spec in m.models.items() for f in spec.files}
    assert {k: hashes.get(k) for k in PUBLISHED} == PUBLISHED
    assert m.models["realesrgan_x4plus"].files[0].size == 67_040_989
    assert m.models["4x_ultrasharp"].hub == "Kim2091/UltraSharp"  # the author's repo, with its licence
    assert m.models["sd15_base"].size_mb == 2135
    tile = m.models["controlnet_tile"]
    assert [(f.path, f.convert) for f in tile.files] == [
        ("config.json", None),
        ("diffusion_pytorch_model.bin", "safetensors"),  # the only weights on the hub
    ]
    for name in ("adetailer_face", "adetailer_hand"):
        assert m.models[name].revision == "53cc19de382014514d9d4038601d261a7faa9b7b"
        assert "Apache-2.0" in m.models[name].licence and "AGPL-3.0" in m.models[name].licence
    for name in ("epicrealism", "controlnet_openpose", "controlnet_tile", "4x_ultrasharp"):
        assert len(m.models[name].revision) == 40, name  # a commit, not a branch
    for name in ("lora_film", "lora_detail"):
        assert "ORIGIN" in m.models[name].notes and "commercial" in m.models[name].notes


def test_packaged_models_are_installed_at_their_pinned_version():
    """Every model listed as shipped inside a package is really there, from the pinned release."""
    from importlib.metadata import distribution

    packaged = registry.manifest().packaged
    assert "mediapipe" in packaged
    pins = dict(line.split("==") for line in Path("constraints.txt").read_text().split() if "==" in line)
    for spec in packaged.values():
        dist = distribution(spec.package)
        assert dist.version == spec.version == pins[spec.package]
        for file in spec.files:
            assert Path(dist.locate_file(file)).stat().st_size > 10_000, file


def test_unknown_model_lists_known_names():
    with pytest.raises(registry.UnknownModel, match="controlnet_tile") as e:
        registry.get_spec("sdxl_base")
    assert "sdxl_base" in str(e.value)


def test_missing_weights_name_the_pull_command(tmp_path, server):
    manifest = write_manifest(tmp_path / "m.yaml", server[0], PAYLOAD_SHA)
    with pytest.raises(registry.MissingWeights) as e:
        registry.resolve("ckpt", root=tmp_path / "models", manifest_path=manifest)
    assert "studio models pull ckpt" in str(e.value)
    assert str(tmp_path / "models" / "ckpt" / "w.safetensors") in str(e.value)


def test_pull_verifies_and_resolve_checks(tmp_path, server):
    manifest = write_manifest(tmp_path / "m.yaml", server[0], PAYLOAD_SHA)
    root = tmp_path / "models"
    pull_models(["ckpt", "folder"], root, manifest_path=manifest, progress=False)
    path = registry.resolve("ckpt", root=root, manifest_path=manifest)
    assert path == root / "ckpt" / "w.safetensors" and path.read_bytes() == PAYLOAD
    folder = registry.resolve("folder", root=root, manifest_path=manifest)
    assert (folder / "sub" / "other.bin").read_bytes() == b"other bytes"

    # Corrupt the file: the manifest hash catches it, with both hashes in the message.
    path.write_bytes(PAYLOAD[:-1] + b"?")
    with pytest.raises(registry.ChecksumMismatch) as e:
        registry.resolve("ckpt", root=root, manifest_path=manifest)
    assert PAYLOAD_SHA in str(e.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() in str(e.value)
    # Pulling again replaces the corrupt file.
    pull_models(["ckpt"], root, manifest_path=manifest, progress=False)
    assert registry.resolve("ckpt", root=root, manifest_path=manifest).read_bytes() == PAYLOAD


def test_unpinned_file_is_pinned_on_first_pull(tmp_path, server):
    manifest = write_manifest(tmp_path / "m.yaml", server[0], PAYLOAD_SHA)
    root = tmp_path / "models"
    pull_models(["folder"], root, manifest_path=manifest, progress=False)
    other = root / "folder" / "sub" / "other.bin"
    other.write_bytes(b"tampered!!!")  # same manifest (no hash), different bytes
    with pytest.raises(registry.ChecksumMismatch, match=hashlib.sha256(b"other bytes").hexdigest()):
        registry.resolve("folder", root=root, manifest_path=manifest)


def test_download_with_wrong_hash_is_refused(tmp_path, server):
    manifest = write_manifest(tmp_path / "m.yaml", server[0], "0" * 64)
    root = tmp_path / "models"
    with pytest.raises(registry.ChecksumMismatch, match="0" * 64):
        pull_models(["ckpt"], root, manifest_path=manifest, progress=False)
    assert not [p for p in root.rglob("*") if p.is_file()]  # nothing half-written is left


def test_files_in_the_model_dir_resolve_by_relative_or_absolute_path(tmp_path):
    root = tmp_path / "models"
    f = root / "loras" / "my.safetensors"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")
    assert registry.resolve("loras/my.safetensors", root=root) == f.resolve()
    assert registry.resolve(str(f), root=root) == f.resolve()
    with pytest.raises(registry.ModelError, match="does not exist"):
        registry.resolve("loras/gone.safetensors", root=root)


@pytest.mark.parametrize(
    "name",
    [
        "/etc/passwd",
        "../outside.safetensors",
        "loras/../../outside.safetensors",
        "link.safetensors",  # a symlink in the model dir that leads out
        "s3://studio/users/someone/likeness.safetensors",
    ],
)
def test_names_never_resolve_outside_the_model_dir(tmp_path, name):
    root = tmp_path / "models"
    (root / "loras").mkdir(parents=True)
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"secret")
    (root / "link.safetensors").symlink_to(outside)
    with pytest.raises(registry.ModelError, match="model directory|only manifest names"):
        registry.resolve(name, root=root)


def test_the_generators_lora_resolver_refuses_arbitrary_files():
    from services.generator.pipeline import _registry_lora

    depth = len(registry.model_dir().resolve().parts)
    for name in ["/etc/passwd", "../" * depth + "etc/passwd"]:  # <lora:/etc/passwd:1> opened it
        with pytest.raises(registry.ModelError, match="outside the model directory"):
            _registry_lora(name)


def test_a_recorded_pin_refuses_new_upstream_bytes_until_accepted(tmp_path, server):
    url, served = server
    manifest = write_manifest(tmp_path / "m.yaml", url, PAYLOAD_SHA)
    root = tmp_path / "models"
    pull_models(["folder"], root, manifest_path=manifest, progress=False)
    other = root / "folder" / "sub" / "other.bin"
    pinned = hashlib.sha256(b"other bytes").hexdigest()
    (served / "other.bin").write_bytes(b"re-uploaded bytes")  # upstream changed at the same URL
    other.unlink()  # a file lost (or a new node sharing pins.json): the pull fetches it again
    with pytest.raises(registry.PinMismatch, match="studio models pull --accept-new folder") as e:
        pull_models(["folder"], root, manifest_path=manifest, progress=False)
    assert pinned in str(e.value) and not other.exists()
    assert registry.read_pin(root, "folder/sub/other.bin")["sha256"] == pinned  # the pin holds
    pull_models(["folder"], root, manifest_path=manifest, progress=False, accept_new=["folder"])
    assert other.read_bytes() == b"re-uploaded bytes"
    assert registry.resolve("folder", root=root, manifest_path=manifest) == root / "folder"


def test_hf_token_is_never_sent_to_a_non_hub_url(tmp_path, server, monkeypatch):
    url, served = server
    seen = []
    handler = server_handler_log(seen)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        logged = f"http://127.0.0.1:{httpd.server_address[1]}"
        monkeypatch.setenv("HF_TOKEN", "hf_secret_for_the_hub_only")
        manifest = write_manifest(tmp_path / "m.yaml", logged, PAYLOAD_SHA)
        pull_models(["ckpt"], tmp_path / "models", manifest_path=manifest, progress=False)
    finally:
        httpd.shutdown()
    assert seen == [None]  # one GET, no Authorization header


def server_handler_log(seen: list):
    class Logged(SimpleHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            super().do_GET()

    return Logged
