"""The dtype guard: every resident network keeps the dtype and device it was loaded in, whatever
stages ran (diffusers' `from_pipe` once turned the whole resident set to float32 on GPU workers)."""

import copy
import json

import pytest
import torch

from services.generator.pipeline import PortraitPipeline, Scale
from services.generator.resident import ResidentModels
from shared.ml import dtype_guard
from shared.styles import get_style
from tests.generator.helpers import FixedDetector, make_lora

NETWORKS = {"unet", "vae", "text_encoder", "controlnet_openpose", "controlnet_tile", "upscaler"}
SMALL = Scale(width=64, height=96, steps=2, detail_size=64, tile=64, padding=16)


@pytest.fixture(scope="module")
def half_models(tiny) -> ResidentModels:
    """The tiny preset's networks in bfloat16 (a GPU worker's are float16; bf16 runs on a CPU)."""
    base = copy.deepcopy(tiny["base"]).to(torch.bfloat16)
    upscaler = copy.deepcopy(tiny["upscaler"])
    upscaler.model.to(torch.bfloat16)
    return ResidentModels(
        base=base,
        controlnet_openpose=copy.deepcopy(tiny["openpose"]).to(torch.bfloat16),
        controlnet_tile=copy.deepcopy(tiny["tile"]).to(torch.bfloat16),
        upscaler=upscaler,
        detectors={"face": FixedDetector([(20, 20, 44, 50)]), "hand": None},
        preset="tiny",
        base_name="tiny",
    )


def test_five_stages_keep_every_network_in_its_dtype(half_models, tmp_path):
    before = dtype_guard.snapshot(half_models.networks())
    assert {p.dtypes for p in before.values()} == {("bfloat16",)}
    assert set(before) == NETWORKS
    make_lora(half_models.base, tmp_path / "pytorch_lora_weights.safetensors", seed=3)
    (tmp_path / "likeness.json").write_text(json.dumps({"trigger_word": "sks", "class_word": "woman"}))

    for mode in ("adapters", "baked"):
        pipeline = PortraitPipeline(
            half_models, scale=SMALL, batch_size=2, lora_mode=mode, score_identity=False
        )
        seen, hooks = _record_dtypes(half_models)
        try:
            results = pipeline(tmp_path, get_style("studio-business"), seed=5, count=1)
        finally:
            for hook in hooks:
                hook.remove()
        assert results[0].image.size == (128, 192)
        # Inside the run, every network that ran did so in bfloat16 ...
        assert seen and all(dtypes == {torch.bfloat16} for dtypes in seen.values()), seen
        assert set(seen) == NETWORKS
        # ... and after the job each is as loaded.
        assert dtype_guard.snapshot(half_models.networks()) == before


def _record_dtypes(models: ResidentModels):
    """Forward pre-hooks that record, per network, the dtype its weights had when it ran."""
    seen: dict[str, set[torch.dtype]] = {}

    def record(name: str):
        return lambda module, args: seen.setdefault(name, set()).add(next(module.parameters()).dtype)

    hooks = [net.register_forward_pre_hook(record(name)) for name, net in _forward_modules(models).items()]
    return seen, hooks


def _forward_modules(models: ResidentModels) -> dict[str, torch.nn.Module]:
    """The module whose forward runs, per network (the VAE is used through encode/decode)."""
    nets = {name: net for name, net in models.networks().items() if net is not None}
    nets["vae"] = models.base.vae.decoder
    return nets


def test_a_network_that_drifts_is_named():
    nets = {"unet": torch.nn.Linear(2, 2).to(torch.float16), "vae": torch.nn.Linear(2, 2).to(torch.float16)}
    expected = dtype_guard.snapshot(nets)
    dtype_guard.check(expected, nets, "after the job")  # unchanged: no error
    nets["vae"].float()
    with pytest.raises(dtype_guard.DtypeDrift, match=r"vae: float16 on cpu -> float32 on cpu"):
        dtype_guard.check(expected, nets, "after the job")
    with pytest.raises(dtype_guard.DtypeDrift, match="vae: float32 on cpu.*refuses to start"):
        dtype_guard.check_loaded_in(nets, torch.float16, "after the stage pipelines were built")


def test_a_pipeline_whose_stages_change_the_dtype_refuses_to_serve(half_models, monkeypatch):
    """Building the stage pipelines is checked: a from_pipe that casts (the old bug) is refused."""
    from diffusers import DiffusionPipeline

    original = DiffusionPipeline.from_pipe.__func__

    def casting_from_pipe(cls, pipeline, **kwargs):
        kwargs.pop("dtype", None)  # what the stage pipelines did before the fix: float32
        return original(cls, pipeline, **kwargs)

    monkeypatch.setattr(DiffusionPipeline, "from_pipe", classmethod(casting_from_pipe))
    models = copy.deepcopy(half_models)
    with pytest.raises(dtype_guard.DtypeDrift, match="unet: bfloat16 on cpu -> float32 on cpu"):
        PortraitPipeline(models, scale=SMALL, batch_size=2)
