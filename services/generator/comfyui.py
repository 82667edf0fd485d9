"""A ComfyUI graph of a portrait's recipe, for the PNG's `prompt` chunk (ComfyUI's API format:
`{node id: {"class_type", "inputs"}}`, a link being `[node id, output index]`). Dropping the PNG
on ComfyUI loads it as a graph (ComfyUI reads `prompt` when there is no `workflow` chunk).

The five stages with core nodes where they exist (CheckpointLoaderSimple, LoraLoader,
CLIPTextEncode, ControlNetLoader, ControlNetApplyAdvanced, EmptyLatentImage, KSampler, VAEEncode,
VAEDecode, UpscaleModelLoader, LoadImage, SaveImage) and the usual node packs where they do not:
ComfyUI-Impact-Pack's `FaceDetailer` with Impact-Subpack's `UltralyticsDetectorProvider` (the
detailer passes), ComfyUI_UltimateSDUpscale's `UltimateSDUpscale` (the tiled upscale). File
names are the ones users have: the checkpoint, `likeness-<trigger>.safetensors`, the style LoRAs
by file, `control_v11p_sd15_openpose.pth`, `control_v11f1e_sd15_tile.pth`. The pose skeleton
is a `LoadImage` of `pose.png` (the user saves the pose; ComfyUI cannot take it from the PNG).
"""

from __future__ import annotations

from dataclasses import dataclass

# A1111 sampler name -> ComfyUI (sampler_name, scheduler)
COMFY_SAMPLERS = {
    "DPM++ 2M Karras": ("dpmpp_2m", "karras"),
    "Euler a": ("euler_ancestral", "normal"),
    "Euler": ("euler", "normal"),
    "DDIM": ("ddim", "ddim_uniform"),
    "UniPC": ("uni_pc", "normal"),
}
COMFY_CONTROLNETS = {"openpose": "control_v11p_sd15_openpose.pth", "tile": "control_v11f1e_sd15_tile.pth"}
COMFY_UPSCALERS = {"realesrgan_x4plus": "RealESRGAN_x4plus.pth", "4x_ultrasharp": "4x-UltraSharp.pth"}
COMFY_DETECTORS = {"face": "bbox/face_yolov8n.pt", "hand": "bbox/hand_yolov8n.pt"}


@dataclass(frozen=True)
class ComfyLora:
    file: str  # e.g. "likeness-zuvek.safetensors"
    unet: float
    te: float


class _Graph:
    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}

    def add(self, class_type: str, title: str | None = None, **inputs) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        if title:
            self.nodes[node_id]["_meta"] = {"title": title}
        return node_id


def comfyui_prompt(
    style, *, seed: int, prompt: str, checkpoint: str, loras: list[ComfyLora], likeness_words: str, pose: bool
) -> dict[str, dict]:
    """The API-format graph of `style` (a shared.styles.Style, as run) for one portrait.
    `prompt`: the main prompt without LoRA tags; `pose`: whether the OpenPose ControlNet ran."""
    g = _Graph()
    t2i, beauty, up = style.txt2img, style.beautify, style.upscale
    sampler, scheduler = COMFY_SAMPLERS.get(t2i.sampler, ("dpmpp_2m", "karras"))
    ckpt = g.add("CheckpointLoaderSimple", ckpt_name=checkpoint)
    model, clip, vae = [ckpt, 0], [ckpt, 1], [ckpt, 2]
    for lora in loras:
        node = g.add(
            "LoraLoader",
            lora_name=lora.file,
            strength_model=lora.unet,
            strength_clip=lora.te,
            model=model,
            clip=clip,
        )
        model, clip = [node, 0], [node, 1]

    def encode(text: str, title: str) -> list:
        return [g.add("CLIPTextEncode", title, text=text.replace("{likeness}", likeness_words), clip=clip), 0]

    positive, negative = encode(prompt, "prompt"), encode(style.negative_prompt, "negative prompt")
    if pose:
        control = g.add("ControlNetLoader", control_net_name=COMFY_CONTROLNETS["openpose"])
        skeleton = g.add("LoadImage", "pose skeleton (save it as pose.png)", image="pose.png")
        applied = g.add(
            "ControlNetApplyAdvanced", positive=positive, negative=negative, control_net=[control, 0],
            image=[skeleton, 0], strength=t2i.controlnet_scale, start_percent=0.0, end_percent=1.0,
        )  # fmt: skip
        t2i_positive, t2i_negative = [applied, 0], [applied, 1]
    else:
        t2i_positive, t2i_negative = positive, negative
    latent = g.add("EmptyLatentImage", width=t2i.width, height=t2i.height, batch_size=1)
    sampled = g.add(
        "KSampler", "1. txt2img", model=model, seed=seed, steps=t2i.steps, cfg=t2i.cfg,
        sampler_name=sampler, scheduler=scheduler, positive=t2i_positive, negative=t2i_negative,
        latent_image=[latent, 0], denoise=1.0,
    )  # fmt: skip
    image = [g.add("VAEDecode", samples=[sampled, 0], vae=vae), 0]

    detectors = {
        kind: g.add("UltralyticsDetectorProvider", model_name=name)
        for kind, name in COMFY_DETECTORS.items()
        if any(p.detector == kind for p in style.detailer)
    }

    def detail(image: list, stage: str) -> list:
        for params in style.detailer:
            node = g.add(
                "FaceDetailer", f"{stage} ({params.detector})", image=image, model=model, clip=clip, vae=vae,
                guide_size=float(params.size), guide_size_for=True, max_size=float(params.size), seed=seed,
                steps=params.steps, cfg=params.cfg, sampler_name=sampler, scheduler=scheduler,
                positive=encode(params.prompt, f"{params.detector} prompt"),
                negative=encode(params.negative_prompt, f"{params.detector} negative prompt"),
                denoise=params.denoise, feather=params.mask_blur, noise_mask=True, force_inpaint=True,
                bbox_threshold=params.confidence, bbox_dilation=params.mask_dilate,
                bbox_crop_factor=round(1 + 2 * params.padding / params.size, 2),
                sam_detection_hint="center-1", sam_dilation=0, sam_threshold=0.93, sam_bbox_expansion=0,
                sam_mask_hint_threshold=0.7, sam_mask_hint_use_negative="False", drop_size=10,
                bbox_detector=[detectors[params.detector], 0], wildcard="", cycle=1,
            )  # fmt: skip
            image = [node, 0]
        return image

    image = detail(image, "2. detailer")
    encoded = g.add("VAEEncode", pixels=image, vae=vae)
    beautified = g.add(
        "KSampler", "3. beautify", model=model, seed=seed, steps=beauty.steps, cfg=beauty.cfg,
        sampler_name=sampler, scheduler=scheduler, positive=encode(beauty.prompt, "beautify prompt"),
        negative=encode(beauty.negative_prompt, "beautify negative prompt"), latent_image=[encoded, 0],
        denoise=beauty.denoise,
    )  # fmt: skip
    image = detail([g.add("VAEDecode", samples=[beautified, 0], vae=vae), 0], "4. detailer again")
    tile = g.add("ControlNetLoader", control_net_name=COMFY_CONTROLNETS["tile"])
    tiled = g.add(
        "ControlNetApplyAdvanced", positive=positive, negative=negative, control_net=[tile, 0], image=image,
        strength=up.controlnet_scale, start_percent=0.0, end_percent=1.0,
    )  # fmt: skip
    upscaler = g.add("UpscaleModelLoader", model_name=COMFY_UPSCALERS.get(up.upscaler, up.upscaler))
    upscaled = g.add(
        "UltimateSDUpscale", "5. upscale", image=image, model=model, positive=[tiled, 0], negative=[tiled, 1],
        vae=vae, upscale_by=up.factor, seed=seed, steps=up.steps, cfg=up.cfg, sampler_name=sampler,
        scheduler=scheduler, denoise=up.denoise, upscale_model=[upscaler, 0], mode_type="Linear",
        tile_width=up.tile, tile_height=up.tile, mask_blur=up.mask_blur, tile_padding=up.padding,
        seam_fix_mode="None", seam_fix_denoise=1.0, seam_fix_width=64, seam_fix_mask_blur=8,
        seam_fix_padding=16, force_uniform_tiles=True, tiled_decode=False,
    )  # fmt: skip
    g.add("SaveImage", filename_prefix=f"portrait-{style.id}", images=[upscaled, 0])
    return g.nodes
