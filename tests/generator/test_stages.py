"""Each stage's contract on the tiny preset (CPU, 64x96 images, 2 steps)."""

import numpy as np
import pytest
import torch
from PIL import Image

from services.generator.loras import ActiveLoras, LoraSpec
from services.generator.pose import load_pose
from services.generator.prompts import encode_prompt_pair
from services.generator.regions import masked_crop
from services.generator.stages.beautify import BeautifyStage
from services.generator.stages.detailer import DetailerStage
from services.generator.stages.txt2img import Txt2ImgStage
from services.generator.stages.upscale import UpscaleStage
from shared.pose import draw_pose
from tests.generator.helpers import FixedDetector, face_pass, make_lora, small_style

# NaN in an image (diffusers warns when casting it) is a failure, not a warning.
pytestmark = pytest.mark.filterwarnings("error:invalid value encountered:RuntimeWarning")


def _embeds(base, prompt="portrait photo of a person"):
    return encode_prompt_pair(base.tokenizer, base.text_encoder, prompt, "blurry")


def _bytes(images):
    return [np.asarray(im).tobytes() for im in images]


def test_txt2img_size_seed_and_pose(tiny):
    base, style = tiny["base"], small_style()
    stage = Txt2ImgStage(base, tiny["openpose"])
    pose = draw_pose(load_pose(style.pose), 64, 96)
    first = stage(_embeds(base), style.txt2img, [1, 2], pose)
    assert [im.size for im in first] == [(64, 96), (64, 96)]
    again = stage(_embeds(base), style.txt2img, [1, 2], pose)
    assert _bytes(first) == _bytes(again)  # same seed, same bytes
    assert _bytes(first)[0] != _bytes(first)[1]
    no_pose = stage(_embeds(base), style.txt2img, [1])
    assert _bytes(no_pose)[0] != _bytes(first)[0]  # the control acts


def test_lora_changes_output_and_unloading_restores_it(tiny, tmp_path):
    base, style = tiny["base"], small_style()
    stage = Txt2ImgStage(base)
    path = tmp_path / "likeness.safetensors"
    make_lora(base, path)
    before = _bytes(stage(_embeds(base), style.txt2img, [3]))
    with ActiveLoras(base, [LoraSpec("likeness", path, 1.0)]):
        during = _bytes(stage(_embeds(base), style.txt2img, [3]))
    after = _bytes(stage(_embeds(base), style.txt2img, [3]))
    assert during != before
    assert after == before  # exactly restored
    assert not any("lora" in k for k in base.unet.state_dict())


def test_separate_text_encoder_and_unet_weights(tiny, tmp_path):
    """A1111's `<lora:name:te:unet>`: te 0 leaves the prompt embeddings as without the LoRA while
    the UNet still carries it; the old code applied the first number to both."""
    base, style = tiny["base"], small_style()
    stage = Txt2ImgStage(base)
    path = tmp_path / "style.safetensors"
    make_lora(base, path, seed=5)
    plain_embeds = _embeds(base).prompt_embeds
    plain = _bytes(stage(_embeds(base), style.txt2img, [4]))
    with ActiveLoras(base, [LoraSpec("s", path, 1.0, te_weight=0.0)]):
        unet_only_embeds = _embeds(base).prompt_embeds
        unet_only = _bytes(stage(_embeds(base), style.txt2img, [4]))
    with ActiveLoras(base, [LoraSpec("s", path, 0.0, te_weight=1.0)]):
        te_only_embeds = _embeds(base).prompt_embeds
    assert torch.equal(unet_only_embeds, plain_embeds)  # text encoder untouched at te 0
    assert not torch.allclose(te_only_embeds, plain_embeds)  # ... and changed at te 1
    assert unet_only != plain  # the UNet half still acts


def test_detailer_changes_pixels_only_inside_its_masks(tiny):
    base = tiny["base"]
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (160, 128, 3), dtype=np.uint8)) for _ in range(2)]
    box = (40, 50, 72, 90)
    params = face_pass(denoise=0.5, padding=16)
    stage = DetailerStage(base, {"face": FixedDetector([box]), "hand": None})
    out, reports = stage(images, [params], lambda p: _embeds(base, p.prompt), [5, 6])
    region = masked_crop(images[0].size, box, dilate=4, blur=4, padding=16)
    for before, after, report in zip(images, out, reports, strict=True):
        a, b = np.asarray(before), np.asarray(after)
        assert a.shape == b.shape
        changed = (a != b).any(axis=2)
        assert changed[region.mask > 0].mean() > 0.5
        assert not changed[region.mask == 0].any()
        x0, y0, x1, y1 = report.regions[0]
        outside = np.ones_like(changed)
        outside[y0:y1, x0:x1] = False
        assert not changed[outside].any()  # nothing outside the padded crop
        assert report.detections["face"][0].box == box
    assert _bytes(out)[0] != _bytes(out)[1]  # each crop its own seed


def test_beautify_keeps_size_and_changes_as_much_as_its_denoise(tiny):
    """The change follows the denoising strength. Measured on the latents (what the VAE encodes,
    what it is given to decode): the tiny preset's random VAE alone changes every pixel a lot."""
    from skimage.data import astronaut

    base, style = tiny["base"], small_style()
    image = Image.fromarray(astronaut()).resize((64, 96))
    latents = {}
    hooks = [
        base.vae.quant_conv.register_forward_hook(lambda m, i, o: latents.update(before=o[:, :4].clone())),
        base.vae.post_quant_conv.register_forward_pre_hook(lambda m, i: latents.update(after=i[0].clone())),
    ]
    stage, change = BeautifyStage(base), []
    try:
        for denoise in (0.2, 0.3, 0.45, 0.7):
            # 10 steps: with the tiny scale's 2, any strength runs the same single last step.
            params = style.beautify.model_copy(update={"denoise": denoise, "steps": 10})
            (out,) = stage([image], _embeds(base), params, [1])
            assert out.size == (64, 96)
            change.append(float((latents["after"] - latents["before"]).abs().mean()))
    finally:
        for hook in hooks:
            hook.remove()
    assert change == sorted(change) and len(set(change)) == 4, change
    assert change[-1] > 4 * change[0], change


def test_upscale_doubles_size(tiny):
    base, style = tiny["base"], small_style()
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 255, (96, 64, 3), dtype=np.uint8))
    stage = UpscaleStage(base, tiny["tile"], tiny["upscaler"])
    (out,) = stage([image], _embeds(base), style.upscale, [1])
    assert out.size == (128, 192)
    plain = stage([image], _embeds(base), style.upscale.model_copy(update={"denoise": 0.0}), [1])
    assert np.asarray(plain[0]).shape == np.asarray(out).shape
    assert np.asarray(plain[0]).tobytes() != np.asarray(out).tobytes()  # the tiles were re-sampled


def test_baked_loras_match_adapters_and_restore_exactly(tiny, tmp_path):
    import copy

    from diffusers import StableDiffusionPipeline

    from services.generator.loras import BakedLoras

    base = tiny["base"]
    own = StableDiffusionPipeline(**{k: copy.deepcopy(v) for k, v in base.components.items()})
    own.unet.fuse_qkv_projections()  # as acceleration.py does on the GPU
    style = small_style()
    path = tmp_path / "likeness.safetensors"
    make_lora(base, path, seed=3)
    spec = [LoraSpec("likeness", path, 0.8)]
    fused_stage, plain_stage = Txt2ImgStage(own), Txt2ImgStage(base)

    def run(stage, pipe):
        return np.asarray(stage(_embeds(pipe), style.txt2img, [9])[0], np.float32)

    before = run(fused_stage, own)
    assert np.abs(before - run(plain_stage, base)).max() <= 2  # fused QKV: same model
    with ActiveLoras(base, spec):
        adapters = run(plain_stage, base)
    with BakedLoras(own, spec):
        baked = run(fused_stage, own)
        assert not any("lora" in k for k in own.unet.state_dict())  # no new modules
    assert np.abs(baked - before).max() > 10  # the LoRA acts through the fused projections
    assert np.abs(baked - adapters).max() <= 2  # and acts as the adapters do
    assert np.array_equal(run(fused_stage, own), before)  # restored bit for bit


def test_derived_pipelines_are_built_once_with_a_fresh_scheduler_per_use(tiny):
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionImg2ImgPipeline

    from services.generator.stages.common import DerivedPipe

    base = tiny["base"]
    derived = DerivedPipe(StableDiffusionImg2ImgPipeline, base)
    first = derived("DPM++ 2M Karras")
    scheduler = first.scheduler
    second = derived("Euler a")
    assert second is first and second.unet is base.unet  # from_pipe once, the base's modules
    assert second.scheduler is not scheduler and second.scheduler is not base.scheduler
    assert isinstance(second.scheduler, EulerAncestralDiscreteScheduler)
    assert second._progress_bar_config == base._progress_bar_config == {"disable": True}


def test_esrgan_batches_by_size_keeps_order_and_matches_a_lanczos_resize(tiny):
    import torch

    from services.generator.stages.upscale import esrgan_upscale

    rng = np.random.default_rng(4)
    images = [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for h, w in ((96, 64), (64, 64), (96, 64))
    ]
    model = tiny["upscaler"]
    together = esrgan_upscale(model, images, 2.0, batch_size=2)
    assert [im.size for im in together] == [(128, 192), (128, 128), (128, 192)]
    for image, out in zip(images, together, strict=True):
        (alone,) = esrgan_upscale(model, [image], 2.0)
        assert np.abs(np.asarray(alone, np.int16) - np.asarray(out, np.int16)).max() <= 1
        # A1111's way: the model's output resized with PIL's Lanczos on the CPU.
        x = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            y = model(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        big = Image.fromarray((y * 255.0).round().astype(np.uint8))
        lanczos = np.asarray(big.resize(out.size, Image.Resampling.LANCZOS), np.float32)
        assert np.abs(lanczos - np.asarray(out, np.float32)).mean() < 2.0
    with pytest.raises(ValueError, match="factor"):
        esrgan_upscale(model, images, 0)


def _upscale_through_pil(stage, images, embeds, params, seeds):
    """The upscale as it ran before it kept the images on the device (reference, PIL between the
    steps: 8-bit ESRGAN output, 8-bit tiles out of the pipeline, the blend in numpy)."""
    from services.generator.stages.common import generators, img2img_steps, repeat_embeds, size_multiple
    from services.generator.stages.upscale import esrgan_upscale, plan_tiles

    big = esrgan_upscale(stage.upscaler, images, params.factor, stage.batch_size)
    pipe = stage.derived(stage.sampler)
    jobs, multiple = [], size_multiple(stage.base)
    for index, image in enumerate(big):
        plan = plan_tiles(image.size, params.tile, params.padding, params.mask_blur, multiple)
        jobs += [(index, tile, seeds[index] + 7919 * k) for k, tile in enumerate(plan)]
    sums = [np.zeros((im.height, im.width, 3), np.float32) for im in big]
    for start in range(0, len(jobs), stage.batch_size):
        chunk = jobs[start : start + stage.batch_size]
        crops = [big[index].crop(tile.window) for index, tile, _ in chunk]
        result = pipe(
            **repeat_embeds(embeds, len(chunk)), image=crops, control_image=crops,
            width=crops[0].width, height=crops[0].height, strength=params.denoise,
            num_inference_steps=img2img_steps(params.steps, params.denoise), guidance_scale=params.cfg,
            controlnet_conditioning_scale=params.controlnet_scale,
            generator=generators([seed for _, _, seed in chunk]),
        )  # fmt: skip
        for (index, tile, _), out in zip(chunk, result.images, strict=True):
            x0, y0, x1, y1 = tile.window
            sums[index][y0:y1, x0:x1] += tile.weight[y0:y1, x0:x1, None] * np.asarray(out, np.float32)
    return [np.clip(np.round(s), 0, 255).astype(np.uint8) for s in sums]


def test_upscale_on_the_device_makes_the_pictures_the_pil_way_did(tiny):
    base, style = tiny["base"], small_style()
    params = style.upscale.model_copy(update={"denoise": 0.5})  # more change, more to compare
    rng = np.random.default_rng(5)
    images = [Image.fromarray(rng.integers(0, 255, (96, 64, 3), dtype=np.uint8)) for _ in range(3)]
    stage = UpscaleStage(base, tiny["tile"], tiny["upscaler"], batch_size=4)  # a chunk spans images
    new = [np.asarray(im, np.int16) for im in stage(images, _embeds(base), params, [3, 4, 5])]
    old = _upscale_through_pil(stage, images, _embeds(base), params, [3, 4, 5])
    for a, b in zip(new, old, strict=True):
        # 8-bit rounding of each tile before the blend is all that differs
        assert a.shape == b.shape and np.abs(a - b).max() <= 2 and np.abs(a - b).mean() < 0.3
    assert np.abs(new[0] - new[1]).mean() > 10  # different images, different results
