"""Baked LoRAs (the GPU default) restore the resident weights on every way out, and baking a
file's deltas directly gives the weights peft's load-fuse-unload gave.

Failures are injected right after the LoRAs are fused (CUDA out of memory in `fuse_lora`, in
unload, in the fused-QKV refresh, a Celery soft time limit): the resident UNet and text encoder
must come back bit for bit, or the process must refuse every later job.
"""

import copy

import pytest
import torch
from celery.exceptions import SoftTimeLimitExceeded

from services.generator import loras
from services.generator.lora_files import inspect_lora
from services.generator.loras import BakedLoras, LoraSpec, WeightsNotRestored
from tests.generator.helpers import make_lora, make_lycoris


class InjectedFailure(RuntimeError):
    pass


@pytest.fixture(scope="module")
def resident(tiny):
    from diffusers import StableDiffusionPipeline

    base = tiny["base"]
    pipe = StableDiffusionPipeline(**{k: copy.deepcopy(v) for k, v in base.components.items()})
    pipe.unet.fuse_qkv_projections()  # as acceleration.py does on the GPU
    return pipe


def make_patterned_lora(base, folder, seed: int = 3):
    """A diffusers file with one module of rank 2 among rank 4 (peft's `rank_pattern` in its
    metadata): not baked directly, it goes through peft's layers."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    plain = folder / "plain.safetensors"
    make_lora(base, plain, seed=seed)
    tensors = load_file(plain)
    key = next(k for k in tensors if k.startswith("unet.") and k.endswith(".down.weight"))
    partner = key.replace(".down.", ".up.")
    tensors[key], tensors[partner] = tensors[key][:2].clone(), tensors[partner][:, :2].contiguous()
    module = key.removeprefix("unet.").removesuffix(".lora.down.weight")
    config = {
        "r": 4,
        "lora_alpha": 4,
        "rank_pattern": {module: 2},
        "target_modules": ["to_q", "to_k", "to_v"],
    }
    unet = {k.removeprefix("unet."): v for k, v in tensors.items() if k.startswith("unet.")}
    StableDiffusionPipeline.save_lora_weights(
        str(folder), unet_lora_layers=unet, weight_name="patterned.safetensors",
        unet_lora_adapter_metadata=config,
    )  # fmt: skip
    return folder / "patterned.safetensors"


@pytest.fixture(scope="module", params=["direct", "peft"])
def spec(request, tiny, tmp_path_factory):
    """The job's LoRA: baked from its tensors (the usual file), or through peft's layers."""
    folder = tmp_path_factory.mktemp("lora")
    if request.param == "peft":
        path = make_patterned_lora(tiny["base"], folder)
    else:
        path = folder / "likeness.safetensors"
        make_lora(tiny["base"], path, seed=4)
    return [LoraSpec("likeness", path, 0.9)]


@pytest.fixture
def direct_spec(tiny, tmp_path):
    make_lora(tiny["base"], tmp_path / "likeness.safetensors", seed=4)
    return [LoraSpec("likeness", tmp_path / "likeness.safetensors", 0.9)]


@pytest.fixture
def peft_spec(tiny, tmp_path):
    return [LoraSpec("likeness", make_patterned_lora(tiny["base"], tmp_path), 0.9)]


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
def test_weights_restored_when_fusing_or_unloading_fails(resident, peft_spec, where):
    spec, (method, error) = peft_spec, INJECTIONS[where]
    before = weights(resident)
    real = getattr(resident, method)
    setattr(resident, method, _fail_after(real, error))  # the instance's method: injection only
    try:
        with pytest.raises(type(error)), BakedLoras(resident, spec):
            pytest.fail("the job must not run with half-baked weights")
    finally:
        delattr(resident, method)
    assert_identical(resident, before)


@pytest.mark.parametrize("error", [InjectedFailure("CUDA out of memory"), SoftTimeLimitExceeded()])
def test_weights_restored_when_direct_baking_fails_halfway(resident, direct_spec, monkeypatch, error):
    real = loras.baked_deltas

    def fails_on_the_fifth(*args):
        for n, item in enumerate(real(*args)):
            if n == 4:
                raise error
            yield item

    monkeypatch.setattr(loras, "baked_deltas", fails_on_the_fifth)
    before = weights(resident)
    with pytest.raises(type(error)), BakedLoras(resident, direct_spec):
        pytest.fail("the job must not run with half-baked weights")
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


def _baked_weights(pipe, specs, direct: bool) -> dict[str, torch.Tensor]:
    """The weights while `specs` are baked: directly from the files' tensors, or (direct off) as
    before, through peft's layers fused and removed."""
    with BakedLoras(pipe, specs, direct=direct):
        return weights(pipe)


FILES = {
    "diffusers, no metadata (alpha = rank)": lambda base, path: make_lora(base, path, seed=5),
    "diffusers, alpha 2 of rank 4 (the trainer's export)": lambda base, path: make_lora(
        base, path, 6, 4, 2.0
    ),
    "kohya LoCon with conv layers (sd-scripts / LyCORIS)": lambda base, path: make_lycoris(
        base, path, "locon", 7
    ),
}


@pytest.mark.parametrize("name", FILES)
def test_direct_baking_gives_the_weights_peft_gave(tiny, resident, tmp_path, name):
    path = tmp_path / "style.safetensors"
    FILES[name](tiny["base"], path)
    assert inspect_lora(path, resident, "style").direct
    likeness = tmp_path / "likeness.safetensors"
    make_lora(tiny["base"], likeness, seed=9, alpha=8.0)
    # a style LoRA with A1111's separate text-encoder strength, then the likeness on the same modules
    specs = [LoraSpec("style_x", path, 0.8, te_weight=0.5, name="x"), LoraSpec("likeness", likeness, 0.9)]
    before = weights(resident)
    direct, peft = _baked_weights(resident, specs, True), _baked_weights(resident, specs, False)
    assert direct.keys() == peft.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], peft[k])]
    assert len(changed) > 20, "the LoRAs must change the weights"
    worst = max((direct[k] - peft[k]).abs().max().item() for k in before)
    assert worst <= 1e-5, f"direct baking differs from peft's fused weights by {worst}"
    assert_identical(resident, before)


def test_a_file_with_per_module_ranks_goes_through_peft(tiny, resident, tmp_path):
    assert not inspect_lora(make_patterned_lora(tiny["base"], tmp_path), resident, None).direct
