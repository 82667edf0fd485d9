"""Compiled networks (services/generator/compiled.py) on the tiny preset, CPU.

- A second user's job (another likeness LoRA, a partial batch) compiles no new graph: counted
  with dynamo's own counter of compiled graphs (backend "eager": dynamo traces and guards as
  with inductor, without the minutes of C++ code generation).
- With inductor, the compiled path's latents equal the eager ones within 1e-3 (float32, CPU)
  for txt2img under the OpenPose ControlNet and for a batch of upscale tiles under the tile
  ControlNet (a partial batch, padded to its bucket). The kernels go to MODEL_DIR's compile
  cache, so a second run of this file takes seconds instead of minutes.
"""

from __future__ import annotations

import contextlib
import copy
import json

import pytest
import torch

from services.generator import compiled
from services.generator.pipeline import PortraitPipeline, Scale, scale_style
from services.generator.resident import ResidentModels
from shared.styles import get_style
from tests.generator.helpers import FixedDetector, controlnet_latents, make_lora

SMALL = Scale(width=64, height=96, steps=2, detail_size=64, tile=64, padding=16)
STYLE = "film-outdoor"
TOLERANCE = 1e-3  # max |compiled - eager| of the final latents (float32; latents are ~N(0, 1))


def _models(tiny) -> ResidentModels:
    """Private copies: compiling replaces `forward` on the networks, the session's stay eager."""
    from diffusers import StableDiffusionPipeline

    base = StableDiffusionPipeline(**{k: copy.deepcopy(v) for k, v in tiny["base"].components.items()})
    base.set_progress_bar_config(disable=True)
    return ResidentModels(
        base=base,
        controlnet_openpose=copy.deepcopy(tiny["openpose"]),
        controlnet_tile=copy.deepcopy(tiny["tile"]),
        upscaler=tiny["upscaler"],
        # a square crop of the detailer's size: the bucket the detailer uses
        detectors={"face": FixedDetector([(26, 36, 38, 48)]), "hand": None},
        preset="tiny",
        base_name="tiny",
        hashes={"base": "0123456789"},
    )


def _likeness(tiny, folder, seed: int):
    folder.mkdir()
    make_lora(tiny["base"], folder / "pytorch_lora_weights.safetensors", seed=seed)
    (folder / "likeness.json").write_text(json.dumps({"trigger_word": "sks", "class_word": "woman"}))
    return folder


@contextlib.contextmanager
def _stance_default():
    yield
    torch.compiler.set_stance("default")


def _graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def test_second_users_job_compiles_nothing(tiny, tmp_path):
    pipeline = PortraitPipeline(
        _models(tiny), scale=SMALL, batch_size=2, lora_mode="baked", score_identity=False
    )
    style = get_style(STYLE)
    buckets = pipeline.compile([style], backend="eager")
    assert {b.net for b in buckets} == {"unet", "controlnet_openpose", "controlnet_tile"}
    forwards = {name: pipeline.models.networks()[name].forward for name in compiled.COMPILED}

    first = pipeline(_likeness(tiny, tmp_path / "a", 7), style, seed=1, count=2)
    after_first = _graphs()
    assert after_first > 0
    # another user's likeness LoRA, and a partial batch (1 of 2): padded to the bucket
    second = pipeline(_likeness(tiny, tmp_path / "b", 8), style, seed=5, count=1)
    assert _graphs() == after_first, "the second job compiled new graphs"
    assert first[0].png != second[0].png
    for name, forward in forwards.items():
        assert forward.calls["compiled"] > 0, name
        assert forward.calls["eager"] == 0, f"{name}: a call outside the buckets"


@pytest.mark.slow
@pytest.mark.timeout(2400)  # cold: 4 graphs of C++ code generation on a shared CPU (~5-20 min)
def test_compiled_latents_equal_eager(tiny):
    """txt2img (UNet + OpenPose ControlNet) and 3 upscale tiles (UNet + tile ControlNet, padded
    to a bucket of 4 tiles) through inductor vs the eager networks."""
    models = _models(tiny)
    pipeline = PortraitPipeline(models, scale=SMALL, batch_size=2, lora_mode="baked", score_identity=False)
    style = scale_style(get_style(STYLE), SMALL)
    latents = controlnet_latents(pipeline, style)
    eager = latents()
    buckets = pipeline.compile([get_style(STYLE)])  # graphs are built on first use only
    assert compiled.Bucket("unet", 8, 12, 12, residuals=True) in buckets  # 4 tiles x CFG, 96 px
    with _stance_default():
        fast = latents()
        nets = models.networks()
        assert nets["unet"].forward.calls["compiled"] > 0
        assert nets["controlnet_tile"].forward.calls["compiled"] > 0
    for name, a, b in zip(("txt2img", "tiles"), eager, fast, strict=True):
        assert a.shape == b.shape
        diff = (a - b).abs().max().item()
        assert diff <= TOLERANCE, f"{name}: compiled latents differ from eager by {diff}"
