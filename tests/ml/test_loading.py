"""The tiny preset builds once and loads through the same loaders as the real weights."""

import logging

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionControlNetPipeline
from diffusers.models.attention_processor import AttnProcessor2_0
from PIL import Image

from shared.ml import loading, tiny
from tests.ml import tiny_render


@pytest.fixture(scope="module")
def pipe():
    return loading.load_base_pipeline("tiny", "cpu")


def render(p, **kw) -> np.ndarray:
    return tiny_render.render(p, "a photo of an astronaut", steps=2, **kw)


def test_preset_info():
    assert loading.preset_info("tiny") == {
        "model_preset": "tiny",
        "demo": True,
        "message": "demo models: images are noise",
    }
    assert loading.preset_info("sd15")["demo"] is False


def test_tiny_pipeline_is_sd15_shaped_and_deterministic(pipe):
    assert loading.load_base_pipeline("tiny", "cpu") is pipe  # resident: cached per process
    assert pipe.vae_scale_factor == 8
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    assert all(isinstance(p, AttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    ids = pipe.tokenizer("a photo of an astronaut").input_ids
    assert ids == [49406, 320, 1125, 539, 550, 18376, 49407]  # SD-1.5's tokenizer ids
    assert pipe.tokenizer.model_max_length == 77
    a, b = render(pipe), render(pipe)
    assert a.shape == (64, 64, 3) and np.array_equal(a, b)


def test_rebuilding_gives_the_same_weights(pipe):
    fresh = tiny.build_components()
    for name in ("unet", "vae", "text_encoder"):
        saved = getattr(pipe, name).state_dict()
        for key, value in getattr(fresh, "get", fresh.__getitem__)(name).state_dict().items():
            assert torch.equal(value, saved[key]), f"{name}.{key}"


def test_controlnets_act(pipe):
    for kind in ("openpose", "tile"):
        controlnet = loading.load_controlnet(kind, "tiny", "cpu")
        cn_pipe = StableDiffusionControlNetPipeline.from_pipe(pipe, controlnet=controlnet)
        assert cn_pipe.unet is pipe.unet  # shares the resident modules
        black = Image.new("RGB", (64, 64))
        stripes = Image.fromarray(
            (np.indices((64, 64))[1] % 8 < 4).astype(np.uint8)[..., None].repeat(3, 2) * 255
        )
        diff = np.abs(render(cn_pipe, image=black) - render(cn_pipe, image=stripes)).mean()
        assert diff > 1e-3, kind
    with pytest.raises(Exception, match="openpose"):
        loading.load_controlnet("depth", "tiny", "cpu")


def test_upscaler_loads_with_spandrel():
    model = loading.load_upscaler("tiny", "cpu")
    assert model.scale == 4
    with torch.no_grad():
        out = model(torch.rand(1, 3, 16, 16))
    assert out.shape == (1, 3, 64, 64)


def test_building_and_loading_a_model_draw_no_progress_bars(capfd, tmp_path):
    """diffusers' "Loading pipeline components" and transformers' "Loading weights" and "Writing
    model shards" bars reached a worker's stderr, which Celery logs: a log line per model load or
    save (newcomers' findings)."""
    import diffusers.utils.logging
    import transformers.utils.logging

    for build in (lambda: tiny.ensure_built(tmp_path), lambda: loading.load_base_pipeline("tiny", "cpu")):
        diffusers.utils.logging.enable_progress_bar()  # as in a fresh process
        transformers.utils.logging.enable_progress_bar()
        capfd.readouterr()
        build()
        out, err = capfd.readouterr()
        assert "it/s" not in err + out and "shards" not in err + out, err + out


def test_casting_a_loaded_network_logs_no_empty_float32_warning(pipe):
    """diffusers 0.42 warns "should be kept in float32: []" at every `.to(dtype)`, list empty or not:
    a WARNING line per network per job in the workers' logs. The loaders drop that one message (and
    the text-encoder one of a UNet-only LoRA, below), not the logger's others."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("diffusers.models.modeling_utils")
    handler = Keep()
    logger.addHandler(handler)
    try:
        pipe.unet.to(torch.float32)
        logger.warning("There are modules in UNet that should be kept in float32: ['norm']. ...")
    finally:
        logger.removeHandler(handler)
    assert seen == ["There are modules in UNet that should be kept in float32: ['norm']. ..."]


def test_a_unet_only_lora_loads_without_the_text_encoder_warning(pipe):
    from peft import LoraConfig, get_peft_model_state_dict

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("diffusers.loaders.lora_base")
    handler = Keep()
    logger.addHandler(handler)
    unet = pipe.unet
    try:
        unet.add_adapter(LoraConfig(r=2, target_modules=["to_q"]), adapter_name="probe")
        state = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet, adapter_name="probe").items()}
        unet.delete_adapters("probe")
        pipe.load_lora_weights(state, adapter_name="unet_only")
        logger.warning("No LoRA keys associated to T5 found")  # another model's: still logged
    finally:
        logger.removeHandler(handler)
        pipe.delete_adapters("unet_only")
    assert seen == ["No LoRA keys associated to T5 found"]
