"""LyCORIS style LoRAs (LoHa, LoKr, LoCon with Tucker, full diffs) apply as ComfyUI applies them.

The files are made by LyCORIS' own network code (PyPI `lycoris-lora`, `create_network(algo=...)`,
`save_weights`) on the tiny SD-1.5-shaped models; ComfyUI's patch math is the port in
tests/generator/comfy_weight.py (comfy/weight_adapter/{lora,loha,lokr}.py). Before this, each
of these files made diffusers' loader raise ValueError, so a style with one could not render.
"""

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from services.generator.lora_files import baked_deltas, inspect_lora
from services.generator.loras import ActiveLoras, BakedLoras, LoraSpec
from tests.generator import comfy_weight
from tests.generator.helpers import make_lycoris
from tests.ml import tiny_render

FILES = {
    "loha": ("loha", {}),
    "loha-tucker": ("loha", {"use_tucker": True}),
    "lokr": ("lokr", {}),
    "lokr-tucker-factor4": ("lokr", {"use_tucker": True, "factor": 4}),
    "lokr-full-matrix": ("lokr", {"full_matrix": True}),
    "locon-tucker": ("locon", {"use_tucker": True}),
    "full": ("full", {}),
}
UNET, TE = 0.8, 0.5  # A1111's <lora:name:te:unet> gives each its own strength


@pytest.fixture(scope="module")
def files(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lycoris")
    out = {}
    for index, (name, (algo, options)) in enumerate(FILES.items()):
        out[name] = folder / f"{name}.safetensors"
        make_lycoris(tiny["base"], out[name], algo, seed=index, **options)
    return out


@pytest.fixture
def pipe(tiny):
    from diffusers import StableDiffusionPipeline

    base = tiny["base"]
    return StableDiffusionPipeline(**{k: copy.deepcopy(v) for k, v in base.components.items()})


def comfy_patched(pipe, path, unet: float, te: float):
    """A copy of `pipe` whose weights are patched by the ComfyUI port, module by module."""
    from diffusers import StableDiffusionPipeline

    patched = StableDiffusionPipeline(**{k: copy.deepcopy(v) for k, v in pipe.components.items()})
    tensors = load_file(path)
    checked = inspect_lora(path, patched, "x")
    with torch.no_grad():
        for module, (component, name) in checked.modules.items():
            target = getattr(patched, component).get_submodule(name)
            strength = unet if component == "unet" else te
            target.weight.copy_(comfy_weight.patch(target.weight, strength, module, tensors))
            if f"{module}.diff_b" in tensors:
                target.bias += strength * tensors[f"{module}.diff_b"]
    return patched


@pytest.mark.parametrize("name", FILES)
def test_every_module_maps_and_its_delta_is_comfyuis(tiny, files, name):
    path = files[name]
    tensors = load_file(path)
    modules = {k.split(".")[0] for k in tensors}
    checked = inspect_lora(path, tiny["base"], "x")
    assert checked.bake and checked.unmapped == [] and set(checked.modules) == modules
    assert {c for c, _ in checked.modules.values()} == {"unet", "text_encoder"}
    deltas = {id(p): d for p, d in baked_deltas(checked, tiny["base"], UNET, TE)}
    for module, (component, path_in_model) in checked.modules.items():
        weight = getattr(tiny["base"], component).get_submodule(path_in_model).weight
        strength = UNET if component == "unet" else TE
        expected = comfy_weight.patch(weight, strength, module, tensors)
        assert (expected - weight).abs().max() > 1e-3, module  # the module does change the weight
        torch.testing.assert_close(weight.float() + deltas[id(weight)], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", [ActiveLoras, BakedLoras])
@pytest.mark.parametrize("name", ["loha", "lokr-tucker-factor4"])
def test_a_style_with_a_lycoris_file_renders_as_comfyui_patches_it(pipe, files, mode, name):
    """Through the product's LoRA context (adapters mode and the GPU's baked mode), next to a peft
    LoRA: the render equals the ComfyUI-patched model's; the weights come back bit for bit."""
    from tests.generator.helpers import make_lora

    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    base = tiny_render.render(pipe, "a portrait", steps=2)
    expected = tiny_render.render(comfy_patched(pipe, files[name], UNET, TE), "a portrait", steps=2)
    assert np.abs(expected - base).mean() > 1e-3  # the file acts

    spec = LoraSpec("style_x", files[name], UNET, te_weight=TE, name="x")
    with mode(pipe, [spec]):
        got = tiny_render.render(pipe, "a portrait", steps=2)
    np.testing.assert_allclose(got, expected, atol=2e-4)
    after = pipe.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    peft_file = files[name].with_name("peft.safetensors")
    make_lora(pipe, peft_file, seed=3)
    with mode(pipe, [spec, LoraSpec("likeness", peft_file, 1.0)]):  # both kinds in one job
        both = tiny_render.render(pipe, "a portrait", steps=2)
    assert np.abs(both - got).mean() > 1e-4
    after = pipe.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
