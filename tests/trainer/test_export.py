"""Kohya export for A1111/ComfyUI: kohya's key names and the trained alpha, checked by name and by
rendering the exported files against the adapter in memory (tiny preset, text encoder trained)."""

import dataclasses
import hashlib
import json
import re

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file

from services.trainer import export, lora
from shared.ml import loading
from tests.ml import tiny_render

RANK, ALPHA = 4, 8.0  # alpha != rank: the LoRA scale is 2, which a wrong alpha tensor loses


def render(pipe) -> np.ndarray:
    return tiny_render.render(pipe, "a photo of zuvek woman", steps=3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A LoRA on the UNet and the text encoder with non-zero weights, its render in memory, and
    its export."""
    pipe = loading.load_base_pipeline("tiny", "cpu")
    base = render(pipe)
    config = dataclasses.replace(lora.PRESETS["tiny"], rank=RANK, alpha=ALPHA, train_text_encoder=True)
    params = lora.add_lora(pipe, config, seed=1)
    with torch.no_grad():  # as if trained: B is no longer zero; values that float16 holds
        generator = torch.Generator().manual_seed(2)  # exactly, so the kohya file (float16,
        for p in params:  # as sd-scripts saves) renders exactly as the adapter in memory
            p.copy_((torch.randn(p.shape, generator=generator) * 0.2).half().float())
    in_memory = render(pipe)
    state = lora.lora_state(pipe)
    metadata = export.lora_metadata(
        base_model="tiny", base_model_sha256=None, rank=RANK, alpha=ALPHA, steps=1,
        trigger_word="zuvek", class_word="woman", scores=None, best_step=1, output_name="likeness-zuvek",
        sd_model_name="epicrealism_naturalSinRC1VAE.safetensors", resolution=512, num_train_images=9,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("export")
    result = export.export_lora(state, out, name="likeness-zuvek", metadata=metadata, alpha=ALPHA)
    lora.remove_lora(pipe)
    assert np.array_equal(render(pipe), base)
    return pipe, base, in_memory, result


def test_kohya_keys_are_what_a1111_and_kohya_expect(exported):
    _, _, _, result = exported
    tensors = load_file(result.kohya_path)
    te = sorted(k for k in tensors if k.startswith("lora_te"))
    assert te, "the text-encoder half is exported"
    # kohya's sd-scripts name SD-1.x text-encoder modules lora_te_ + the CLIPTextModel path
    # text_model.encoder.layers.N... with "." -> "_"; A1111 drops keys it cannot map.
    assert all(k.startswith("lora_te_text_model_encoder_layers_") for k in te), te[:3]
    assert "lora_te_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight" in tensors
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight" in tensors
    alphas = {k: float(v) for k, v in tensors.items() if k.endswith(".alpha")}
    assert alphas and set(alphas.values()) == {ALPHA}  # the trained alpha, not the rank
    assert len(alphas) == len([k for k in tensors if k.endswith(".lora_down.weight")])
    assert {v.dtype for v in tensors.values()} == {torch.float16}  # sd-scripts' fp16: half the size


def test_kohya_metadata_is_what_sd_scripts_writes(exported):
    """The keys A1111's Lora extension, civitai and ComfyUI read from sd-scripts' files; the
    hashes by A1111's rule applied to the file itself (sha256 of the bytes after the header)."""
    _, _, _, result = exported
    meta = export.read_metadata(result.kohya_path)
    data = result.kohya_path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(data[8 + header :]).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{8}", meta["sshs_legacy_hash"])
    assert meta["ss_output_name"] == "likeness-zuvek" == result.kohya_path.stem  # A1111's alias
    assert meta["ss_sd_model_name"] == "epicrealism_naturalSinRC1VAE.safetensors"
    assert (meta["ss_resolution"], meta["ss_clip_skip"], meta["ss_num_train_images"]) == (
        "(512, 512)",
        "None",
        "9",
    )
    assert (meta["ss_network_dim"], meta["ss_network_alpha"], meta["ss_base_model_version"]) == (
        "4",
        "8.0",
        "sd_v1",
    )
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.sai_model_spec"] == "1.0.1" and meta["modelspec.resolution"] == "512x512"
    assert meta["modelspec.title"] == "likeness-zuvek" and meta["modelspec.trigger_phrase"] == "zuvek woman"
    # sd-scripts' legacy hash: over the file saved with only the ss_* metadata
    only_ss = safetensors.torch.save(
        load_file(result.kohya_path), {k: v for k, v in meta.items() if k.startswith("ss_")}
    )
    assert meta["sshs_legacy_hash"] == hashlib.sha256(only_ss[0x100000:0x110000]).hexdigest()[:8]


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_exported_file_renders_as_the_adapter_in_memory(exported, fmt):
    pipe, base, in_memory, result = exported
    assert np.abs(in_memory - base).mean() > 1e-3  # the LoRA acts
    path = result.kohya_path if fmt == "kohya" else result.diffusers_path / export.DIFFUSERS_FILE
    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=fmt)
    try:
        assert any("lora" in k for k in pipe.text_encoder.state_dict())  # the TE half is loaded
        loaded = render(pipe)
    finally:
        pipe.unload_lora_weights()
    np.testing.assert_allclose(loaded, in_memory, atol=1e-4)


def test_diffusers_file_carries_the_whole_lora_config_and_the_nested_text_encoder_layout(exported):
    """diffusers 0.35 reads `rank_pattern`/`alpha_pattern` from the adapter metadata and builds
    `LoraConfig(**metadata)` (KeyError: 'rank_pattern' on the hand-written subset before); its
    transformers 4 CLIPTextModel nests `text_model`, which diffusers >= 0.36 strips for the flat
    transformers-5 model. Checked by hand with diffusers 0.35.2 + transformers 4.57.1 and 5.23.0:
    16/16 text-encoder and 64/64 UNet LoRA tensors load (docs/a1111-comfyui.md)."""
    from peft import LoraConfig

    _, _, _, result = exported
    path = result.diffusers_path / export.DIFFUSERS_FILE
    config = json.loads(export.read_metadata(path)["lora_adapter_metadata"])
    for component in ("unet", "text_encoder"):
        kwargs = {
            k.removeprefix(f"{component}."): v for k, v in config.items() if k.startswith(f"{component}.")
        }
        assert {"rank_pattern", "alpha_pattern", "use_dora", "lora_bias", "init_lora_weights"} <= set(kwargs)
        rebuilt = LoraConfig(**kwargs)  # what diffusers 0.35's _create_lora_config does
        assert (rebuilt.r, rebuilt.lora_alpha) == (RANK, ALPHA)
    te_keys = [k for k in load_file(path) if k.startswith("text_encoder.")]
    assert te_keys and all(k.startswith("text_encoder.text_model.encoder.layers.") for k in te_keys)
