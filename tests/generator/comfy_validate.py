# ruff: noqa: E501  (schema tables, one node input per entry as in the sources)
"""ComfyUI's check of an API-format prompt, ported for the tests (ComfyUI and its node packs do not
install from the registries here). `validate_prompt` follows execution.py `validate_prompt` /
`validate_inputs`: every node's class exists, an output node exists, every required input is
given, a link `[id, index]` names an existing node whose RETURN_TYPES[index] is the input's type,
a widget value has its type, lies within min/max, and a combo value is one of its choices.
File combos (checkpoints, LoRAs, ...) list the user's files in ComfyUI; here any file name of the
right kind passes.

Node schemas (INPUT_TYPES / RETURN_TYPES), each from its source file:
nodes.py (core), comfy_extras/nodes_upscale_model.py, ComfyUI-Impact-Pack modules/impact/
impact_pack.py (FaceDetailer), ComfyUI-Impact-Subpack modules/subpack_nodes.py
(UltralyticsDetectorProvider), ComfyUI_UltimateSDUpscale nodes.py (UltimateSDUpscale, with the
force_uniform_tiles / tiled_decode inputs of its later versions).
"""

from __future__ import annotations

MAX_RESOLUTION = 16384
SAMPLERS = [
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]  # fmt: skip  (comfy/samplers.py KSAMPLER_NAMES + SAMPLER_NAMES)
SCHEDULERS = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]
FILE = "FILE"  # a combo of the user's files


def _int(lo, hi):
    return ("INT", {"min": lo, "max": hi})


def _float(lo, hi):
    return ("FLOAT", {"min": lo, "max": hi})


SEED = _int(0, 0xFFFFFFFFFFFFFFFF)
NODES: dict[str, dict] = {
    "CheckpointLoaderSimple": {"required": {"ckpt_name": (FILE,)}, "return": ("MODEL", "CLIP", "VAE")},
    "LoraLoader": {
        "required": {
            "model": ("MODEL",), "clip": ("CLIP",), "lora_name": (FILE,),
            "strength_model": _float(-100.0, 100.0), "strength_clip": _float(-100.0, 100.0),
        },
        "return": ("MODEL", "CLIP"),
    },
    "CLIPTextEncode": {"required": {"text": ("STRING",), "clip": ("CLIP",)}, "return": ("CONDITIONING",)},
    "ControlNetLoader": {"required": {"control_net_name": (FILE,)}, "return": ("CONTROL_NET",)},
    "ControlNetApplyAdvanced": {
        "required": {
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "control_net": ("CONTROL_NET",),
            "image": ("IMAGE",), "strength": _float(0.0, 10.0), "start_percent": _float(0.0, 1.0),
            "end_percent": _float(0.0, 1.0),
        },
        "optional": {"vae": ("VAE",)},
        "return": ("CONDITIONING", "CONDITIONING"),
    },
    "EmptyLatentImage": {
        "required": {"width": _int(16, MAX_RESOLUTION), "height": _int(16, MAX_RESOLUTION), "batch_size": _int(1, 4096)},
        "return": ("LATENT",),
    },
    "KSampler": {
        "required": {
            "model": ("MODEL",), "seed": SEED, "steps": _int(1, 10000), "cfg": _float(0.0, 100.0),
            "sampler_name": (SAMPLERS,), "scheduler": (SCHEDULERS,), "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",), "latent_image": ("LATENT",), "denoise": _float(0.0, 1.0),
        },
        "return": ("LATENT",),
    },
    "VAEDecode": {"required": {"samples": ("LATENT",), "vae": ("VAE",)}, "return": ("IMAGE",)},
    "VAEEncode": {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}, "return": ("LATENT",)},
    "LoadImage": {"required": {"image": (FILE,)}, "return": ("IMAGE", "MASK")},
    "SaveImage": {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING",)}, "return": (), "output": True},
    "UpscaleModelLoader": {"required": {"model_name": (FILE,)}, "return": ("UPSCALE_MODEL",)},
    "UltralyticsDetectorProvider": {"required": {"model_name": (FILE,)}, "return": ("BBOX_DETECTOR", "SEGM_DETECTOR")},
    "FaceDetailer": {
        "required": {
            "image": ("IMAGE",), "model": ("MODEL",), "clip": ("CLIP",), "vae": ("VAE",),
            "guide_size": _float(64, MAX_RESOLUTION), "guide_size_for": ("BOOLEAN",),
            "max_size": _float(64, MAX_RESOLUTION), "seed": SEED, "steps": _int(1, 10000),
            "cfg": _float(0.0, 100.0), "sampler_name": (SAMPLERS,), "scheduler": (SCHEDULERS,),
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "denoise": _float(0.0001, 1.0),
            "feather": _int(0, 100), "noise_mask": ("BOOLEAN",), "force_inpaint": ("BOOLEAN",),
            "bbox_threshold": _float(0.0, 1.0), "bbox_dilation": _int(-512, 512), "bbox_crop_factor": _float(1.0, 10),
            "sam_detection_hint": (["center-1", "horizontal-2", "vertical-2", "rect-4", "diamond-4", "mask-area",
                                    "mask-points", "mask-point-bbox", "none"],),
            "sam_dilation": _int(-512, 512), "sam_threshold": _float(0.0, 1.0), "sam_bbox_expansion": _int(0, 1000),
            "sam_mask_hint_threshold": _float(0.0, 1.0), "sam_mask_hint_use_negative": (["False", "Small", "Outter"],),
            "drop_size": _int(1, MAX_RESOLUTION), "bbox_detector": ("BBOX_DETECTOR",), "wildcard": ("STRING",),
            "cycle": _int(1, 10),
        },
        "return": ("IMAGE", "IMAGE", "IMAGE", "MASK", "DETAILER_PIPE", "IMAGE"),
    },
    "UltimateSDUpscale": {
        "required": {
            "image": ("IMAGE",), "model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
            "vae": ("VAE",), "upscale_by": _float(0.05, 4), "seed": SEED, "steps": _int(1, 10000),
            "cfg": _float(0.0, 100.0), "sampler_name": (SAMPLERS,), "scheduler": (SCHEDULERS,),
            "denoise": _float(0.0, 1.0), "upscale_model": ("UPSCALE_MODEL",), "mode_type": (["Linear", "Chess", "None"],),
            "tile_width": _int(8, 8192), "tile_height": _int(8, 8192), "mask_blur": _int(0, 64),
            "tile_padding": _int(0, 8192), "seam_fix_mode": (["None", "Band Pass", "Half Tile", "Half Tile + Intersections"],),
            "seam_fix_denoise": _float(0.0, 1.0), "seam_fix_width": _int(0, 8192), "seam_fix_mask_blur": _int(0, 64),
            "seam_fix_padding": _int(0, 8192), "force_uniform_tiles": ("BOOLEAN",), "tiled_decode": ("BOOLEAN",),
        },
        "return": ("IMAGE",),
    },
}  # fmt: skip
FILE_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".png", ".jpg")


def validate_prompt(prompt: dict) -> list[str]:
    """The errors ComfyUI would report for `prompt` (empty: it would queue it)."""
    errors: list[str] = []
    if not any(NODES.get(n.get("class_type"), {}).get("output") for n in prompt.values()):
        errors.append("prompt_no_outputs: the prompt has no output node")
    for node_id, node in prompt.items():
        schema = NODES.get(node.get("class_type"))
        if schema is None:
            errors.append(f"{node_id}: invalid_prompt: node class {node.get('class_type')!r} does not exist")
            continue
        inputs = node.get("inputs", {})
        for name, spec in {**schema["required"], **schema.get("optional", {})}.items():
            if name not in inputs:
                if name in schema["required"]:
                    errors.append(f"{node_id}.{name}: required_input_missing")
                continue
            errors += [f"{node_id}.{name}: {e}" for e in _check(prompt, inputs[name], spec)]
    return errors


def _check(prompt: dict, value, spec) -> list[str]:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(value, list):  # a link
        if len(value) != 2 or str(value[0]) not in prompt:
            return [f"bad_linked_input: {value!r}"]
        source = NODES.get(prompt[str(value[0])]["class_type"])
        if source is None or not isinstance(value[1], int) or value[1] >= len(source["return"]):
            return [f"bad_linked_input: output {value[1]!r} of node {value[0]}"]
        got = source["return"][value[1]]
        wanted = kind if isinstance(kind, str) else "COMBO"
        return [] if got == wanted else [f"return_type_mismatch: {got} is not {wanted}"]
    if kind == FILE:
        return (
            []
            if isinstance(value, str) and value.endswith(FILE_SUFFIXES)
            else [f"value_not_in_list: {value!r}"]
        )
    if isinstance(kind, list):
        return [] if value in kind else [f"value_not_in_list: {value!r} not in {kind[:5]}..."]
    if kind == "INT" and not (isinstance(value, int) and not isinstance(value, bool)):
        return [f"invalid_input_type: {value!r} is not an INT"]
    if kind == "FLOAT" and not isinstance(value, int | float):
        return [f"invalid_input_type: {value!r} is not a FLOAT"]
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return [f"invalid_input_type: {value!r} is not a BOOLEAN"]
    if kind == "STRING" and not isinstance(value, str):
        return [f"invalid_input_type: {value!r} is not a STRING"]
    if "min" in options and value < options["min"]:
        return [f"value_smaller_than_min: {value} < {options['min']}"]
    if "max" in options and value > options["max"]:
        return [f"value_bigger_than_max: {value} > {options['max']}"]
    return []
