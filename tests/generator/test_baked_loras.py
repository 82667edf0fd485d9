"""Baked LoRAs (the GPU default) restore the resident weights on every way out.

Failures are injected right after the LoRAs are fused (CUDA out of memory in `fuse_lora`, in
unload, in the fused-QKV refresh, a Celery soft time limit): the resident UNet and text encoder
must come back bit for bit, or the process must refuse every later job.
"""

import copy

import pytest
import torch
from celery.exceptions import SoftTimeLimitExceeded

from services.generator import loras
from services.generator.loras import BakedLoras, LoraSpec, WeightsNotRestored
from tests.generator.helpers import make_lora


class InjectedFailure(RuntimeError):
    pass


@pytest.fixture(scope="module")
def resident(tiny):
    from diffusers import StableDiffusionPipeline

    base = tiny["base"]
    pipe = StableDiffusionPipeline(**{k: copy.deepcopy(v) for k, v in base.components.items()})
    pipe.unet.fuse_qkv_projections()  # as acceleration.py does on the GPU
    return pipe


@pytest.fixture(scope="module")
def spec(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("lora") / "likeness.safetensors"
    make_lora(tiny["base"], path, seed=4)
    return [LoraSpec("likeness", path, 0.9)]


def weights(pipe) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.detach().clone()
        for name in ("unet", "text_encoder")
        for key, value in getattr(pipe, name).state_dict().items()
    }


def assert_identical(pipe, before: dict[str, torch.Tensor]) -> None:
    after = weights(pipe)
    assert after.keys() == before.keys()  # no LoRA layer left behind
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [], changed[:5]


def _fail_after(original, error: BaseException, times: int = 1):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return result

    return wrapper


INJECTIONS = {
    "fuse_lora: out of memory after fusing": ("fuse_lora", InjectedFailure("CUDA out of memory")),
    "fuse_lora: soft time limit": ("fuse_lora", SoftTimeLimitExceeded()),
    "unload_lora_weights: out of memory": ("unload_lora_weights", InjectedFailure("CUDA out of memory")),
}


@pytest.mark.parametrize("where", INJECTIONS)
def test_weights_restored_when_fusing_or_unloading_fails(resident, spec, where):
    method, error = INJECTIONS[where]
    before = weights(resident)
    real = getattr(resident, method)
    setattr(resident, method, _fail_after(real, error))  # the instance's method: injection only
    try:
        with pytest.raises(type(error)), BakedLoras(resident, spec):
            pytest.fail("the job must not run with half-baked weights")
    finally:
        delattr(resident, method)
    assert_identical(resident, before)


def test_weights_restored_when_the_fused_qkv_refresh_fails(resident, spec, monkeypatch):
    before = weights(resident)
    monkeypatch.setattr(
        loras,
        "_refresh_fused_projections",
        _fail_after(loras._refresh_fused_projections, InjectedFailure("CUDA out of memory")),
    )
    with pytest.raises(InjectedFailure), BakedLoras(resident, spec):
        pass
    assert_identical(resident, before)


def test_weights_restored_when_the_job_fails_inside(resident, spec):
    before = weights(resident)
    with pytest.raises(SoftTimeLimitExceeded), BakedLoras(resident, spec):
        assert weights(resident).keys() == before.keys()  # baked: no new modules
        raise SoftTimeLimitExceeded()
    assert_identical(resident, before)


def test_a_process_that_cannot_restore_refuses_every_later_job(resident, spec, monkeypatch):
    from diffusers import StableDiffusionPipeline

    own = StableDiffusionPipeline(**{k: copy.deepcopy(v) for k, v in resident.components.items()})

    def broken(pipe):
        raise InjectedFailure("CUDA error: an illegal memory access was encountered")

    try:
        monkeypatch.setattr(loras, "_refresh_fused_projections", broken)
        with pytest.raises(WeightsNotRestored, match="illegal memory access"), BakedLoras(own, spec):
            pass
        monkeypatch.undo()  # even with a working refresh, the weights are not trusted any more
        with pytest.raises(WeightsNotRestored), BakedLoras(own, []):
            pass
    finally:
        loras._weights_damaged = None  # this test process goes on with other tests
