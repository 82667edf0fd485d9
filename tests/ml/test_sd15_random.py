"""Random SD-1.5 bench weights (bench/sd15_random.py) load through the sd15 preset's real path:
the A1111 single-file base, the hub's fp16-variant ControlNet folder, the Real-ESRGAN `.pth`,
style LoRAs; only where MODEL_MANIFEST names their manifest (an explicit opt-out, never silent)."""

from pathlib import Path

import pytest
import torch

from bench import sd15_random
from shared.config import get_settings
from shared.ml import loading, registry


def _clear_caches() -> None:
    get_settings.cache_clear()
    for cached in (loading._base, loading._controlnet, loading._upscaler):
        cached.cache_clear()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("random-sd15")
    sd15_random.write_model_dir(root, "cpu", small=True, rank=4)
    return root


@pytest.fixture
def sd15_env(model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MODEL_PRESET", "sd15")
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    monkeypatch.setenv("MODEL_MANIFEST", str(model_dir / sd15_random.MANIFEST_NAME))
    _clear_caches()
    yield model_dir
    monkeypatch.undo()
    _clear_caches()


def test_random_weights_load_exactly_through_the_sd15_path(sd15_env: Path):
    from services.generator.pipeline import _registry_lora
    from services.generator.resident import load_resident
    from shared.styles import get_style

    models = load_resident("sd15", "cpu")
    assert models.base_name == get_style("studio-business").base_model == "epicrealism"
    want = sd15_random.sd15_components("cpu", small=True)
    for name in ("unet", "vae", "text_encoder"):  # written fp16 in A1111 keys, read back by diffusers
        got = getattr(models.base, name).state_dict()
        ref = want[name].state_dict()
        assert got.keys() == ref.keys(), name
        assert all(torch.equal(got[k].half(), ref[k].half()) for k in ref), name
    assert list(models.controlnet_openpose.config.block_out_channels) == [32, 64, 64, 64]
    assert models.controlnet_tile is not None and models.upscaler.scale == 4
    assert set(models.hashes) == {"base", "controlnet_openpose", "controlnet_tile", "upscaler"}
    for lora in ("lora_detail", "lora_film"):
        assert _registry_lora(lora).stat().st_size > 0


def test_without_the_opt_out_the_shipped_checksum_rejects_random_weights(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    monkeypatch.delenv("MODEL_MANIFEST", raising=False)
    _clear_caches()
    try:
        with pytest.raises(registry.ChecksumMismatch):
            registry.resolve("epicrealism")
    finally:
        monkeypatch.undo()
        _clear_caches()


def test_an_fp16_variant_controlnet_folder_loads(tmp_path: Path):
    # The hub's openpose ControlNet ships only diffusion_pytorch_model.fp16.safetensors
    # (manifest.yaml): diffusers finds it only when asked for the variant.
    from diffusers import ControlNetModel

    unet = sd15_random.sd15_components("cpu", small=True)["unet"]
    ControlNetModel.from_unet(unet).save_pretrained(tmp_path, variant="fp16")
    assert loading.fp16_variant(tmp_path) == "fp16"
    model = loading.load_controlnet_from(tmp_path, device="cpu", dtype=torch.float32)
    assert list(model.config.block_out_channels) == list(unet.config.block_out_channels)


def test_random_weights_go_only_into_an_empty_model_dir(tmp_path: Path):
    (tmp_path / "epicrealism").mkdir()
    with pytest.raises(ValueError, match="empty MODEL_DIR"):
        sd15_random.write_model_dir(tmp_path, "cpu", small=True)
