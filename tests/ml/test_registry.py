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
    assert registry.get_spec("adetailer_face").url(m.models["adetailer_face"].files[0]) == (
        "https://huggingface.co/Bingsu/adetailer/resolve/main/face_yolov8n.pt"
    )


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
    assert not any((root / "ckpt").iterdir())  # nothing half-written is left


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
