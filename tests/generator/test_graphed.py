"""CUDA graphs of the generator's networks (services/generator/graphed.py), tiny preset on a GPU.

Skipped where there is no CUDA device (CI, the 2-core machines): CUDA graphs exist only there.
Run on a GPU machine with `python -m pytest --noconftest tests/generator/test_graphed.py` (this
file builds its own models, so it needs none of the stack's fixtures).

- The graphed latents equal the eager ones (same kernels, float32): txt2img under the OpenPose
  ControlNet at a full batch, and a partial batch of 3 upscale tiles under the tile ControlNet.
- A second user's job (another likeness LoRA, baked into the same weights) captures nothing new
  and its portrait equals the eager one: the graphs read the baked weights.
- A parameter whose storage changes makes its network capture again instead of replaying
  against the old memory.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from services.generator import graphed
from services.generator.pipeline import PortraitPipeline, Scale, scale_style
from services.generator.resident import ResidentModels
from shared.styles import get_style
from tests.generator.helpers import FixedDetector, controlnet_latents, make_lora

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")

SMALL = Scale(width=64, height=96, steps=2, detail_size=64, tile=64, padding=16)
STYLE = "film-outdoor"
TOLERANCE = 1e-4  # max |graphed - eager|, float32 without TF32


@pytest.fixture(autouse=True)
def _full_float32():
    """No TF32: cuDNN may pick another convolution algorithm inside a capture than outside, and
    TF32's rounding then differs; in full float32 the algorithms agree to ~1e-6."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def pipeline() -> PortraitPipeline:
    """A graphed pipeline on fresh float32 tiny models on the GPU (each test installs its own
    graphs). Not the resident loaders: those are cached and load fp16 on CUDA, whose rounding
    differs between a capture's and an eager call's kernel choices."""
    from shared.ml import loading

    torch.manual_seed(0)
    f32 = {"device": "cuda", "dtype": torch.float32}
    upscaler = loading.load_upscaler_from(loading.model_path("upscaler", "tiny"), device="cuda")
    upscaler.model.float()
    openpose, tile = (loading.model_path(f"controlnet_{kind}", "tiny") for kind in ("openpose", "tile"))
    models = ResidentModels(
        base=loading.load_pipeline("tiny", **f32),
        controlnet_openpose=loading.load_controlnet_from(openpose, **f32),
        controlnet_tile=loading.load_controlnet_from(tile, **f32),
        upscaler=upscaler,
        detectors={"face": FixedDetector([(26, 36, 38, 48)]), "hand": None},
        preset="tiny",
        base_name="tiny",
        hashes={"base": "0123456789"},
    )
    models.base.set_progress_bar_config(disable=True)
    pipe = PortraitPipeline(models, scale=SMALL, batch_size=2, lora_mode="baked", score_identity=False)
    pipe.graph([get_style(STYLE)])
    pipe.warm_up(freeze=False)
    return pipe


def _likeness(pipeline, folder, seed: int):
    folder.mkdir()
    make_lora(pipeline.models.base, folder / "pytorch_lora_weights.safetensors", seed=seed)
    (folder / "likeness.json").write_text(json.dumps({"trigger_word": "sks", "class_word": "woman"}))
    return folder


def _captures(pipeline) -> dict[str, int]:
    return {name: net.forward.captures for name, net in pipeline.models.networks().items() if net is not None
            and isinstance(net.forward, graphed.GraphedForward)}  # fmt: skip


def _pixels(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.int16)


@torch.no_grad()
def test_graphed_forwards_equal_eager(pipeline):
    """One call of each network, graphed vs eager: the same computation, without the 2 steps of
    a random tiny model that amplify any rounding difference."""
    nets = pipeline.models.networks()
    unet, openpose = nets["unet"], nets["controlnet_openpose"]
    torch.manual_seed(1)
    sample = torch.randn(4, unet.config.in_channels, 12, 8, device="cuda")
    hidden = torch.randn(4, 77, unet.config.cross_attention_dim, device="cuda")
    cond = torch.rand(4, 3, 96, 64, device="cuda")
    t = torch.tensor(700, device="cuda")

    def run():
        down, mid = openpose(sample, t, encoder_hidden_states=hidden, controlnet_cond=cond,
                             conditioning_scale=0.8, return_dict=False)  # fmt: skip
        (out,) = unet(sample, t, encoder_hidden_states=hidden, down_block_additional_residuals=down,
                      mid_block_additional_residual=mid, return_dict=False)  # fmt: skip
        return [*down, mid, out]

    with graphed.eager():
        eager = run()
    before = unet.forward.replays, openpose.forward.replays
    fast = run()
    assert (unet.forward.replays, openpose.forward.replays) == (before[0] + 1, before[1] + 1)
    for k, (a, b) in enumerate(zip(eager, fast, strict=True)):
        diff = (a - b).abs().max().item()
        assert diff <= TOLERANCE * max(1.0, a.abs().max().item()), f"output {k} differs by {diff}"


def test_graphed_latents_equal_eager(pipeline):
    style = scale_style(get_style(STYLE), SMALL)
    latents = controlnet_latents(pipeline, style)
    nets = pipeline.models.networks()
    names = ("unet", "controlnet_openpose", "controlnet_tile")
    with graphed.eager():
        eager = latents()
    before = {name: nets[name].forward.replays for name in names}
    fast = latents()
    for name in names:
        assert nets[name].forward.replays > before[name], f"{name} was not replayed"
    for name, a, b in zip(("txt2img", "tiles"), eager, fast, strict=True):
        assert a.shape == b.shape
        diff = (a - b).abs().max().item()
        assert diff <= TOLERANCE, f"{name}: graphed latents differ from eager by {diff}"


def test_second_users_job_captures_nothing_and_sees_its_lora(pipeline, tmp_path):
    style = get_style(STYLE)
    unet = pipeline.models.base.unet
    first = pipeline(_likeness(pipeline, tmp_path / "a", 7), style, seed=5, count=2)
    captured, replays = _captures(pipeline), unet.forward.replays
    second_user = _likeness(pipeline, tmp_path / "b", 8)
    second = pipeline(second_user, style, seed=5, count=2)
    assert _captures(pipeline) == captured, "the second user's job captured new graphs"
    assert unet.forward.replays > replays
    with graphed.eager():
        reference = pipeline(second_user, style, seed=5, count=2)
    # same seed, another LoRA: other pictures, and the graphed ones are the eager ones
    assert np.abs(_pixels(first[0]) - _pixels(second[0])).max() > 1
    for made, ref in zip(second, reference, strict=True):
        assert np.abs(_pixels(made) - _pixels(ref)).max() <= 1, "the graphs did not use the baked LoRA"


@torch.no_grad()
def test_moved_parameters_are_captured_again(pipeline):
    unet = pipeline.models.base.unet
    forward = unet.forward
    sample = torch.randn(2, unet.config.in_channels, 12, 8, device="cuda")
    hidden = torch.randn(2, 77, unet.config.cross_attention_dim, device="cuda")
    t = torch.tensor(500, device="cuda")
    forward(sample, t, encoder_hidden_states=hidden, return_dict=False)
    captures = forward.captures
    weight = unet.conv_in.weight
    weight.data = weight.data.clone() * 1.5  # new storage, new values: the old graph is stale
    (out,) = forward(sample, t, encoder_hidden_states=hidden, return_dict=False)
    with graphed.eager():
        (ref,) = forward(sample, t, encoder_hidden_states=hidden, return_dict=False)
    assert forward.captures == captures + 1
    assert (out - ref).abs().max().item() <= TOLERANCE
