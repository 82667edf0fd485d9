"""`PortraitPipeline`: the five stages of the recipe, for one style and a user's likeness.

1. txt2img (base + likeness LoRA + style LoRAs) under the OpenPose ControlNet
2. detailer: faces (prompt with the likeness) and hands, inpainted crop by crop
3. beautify: img2img with a tone-and-colour prompt, denoise 0.3-0.45
4. detailer again (the beautify pass moved the face)
5. upscale: ESRGAN 2x, then tiled img2img under the tile ControlNet at low denoise

One resident base pipeline serves every stage; LoRAs are loaded per call and unloaded after.
Same inputs and seed give the same bytes. Results carry A1111 `parameters` and a JSON chunk,
an identity score against the user's photos, and are ranked by it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

from services.generator.comfyui import ComfyLora, comfyui_prompt
from services.generator.likeness import Likeness, identity_score, load_likeness
from services.generator.loras import LIKENESS_ADAPTER, ActiveLoras, BakedLoras, LoraSpec
from services.generator.metadata import (
    A1111_CONTROLNET,
    A1111_UPSCALERS,
    PRODUCT_KEY,
    a1111_lora_hash,
    a1111_lora_tag,
    a1111_network_alias,
    a1111_parameters,
    adetailer_unit,
    controlnet_unit,
    png_bytes_many,
)
from services.generator.pose import load_pose
from services.generator.prompts import PromptEmbeds, encode_prompt_pair
from services.generator.resident import ResidentModels, short_hash
from services.generator.stages.beautify import BeautifyStage
from services.generator.stages.detailer import DetailerStage, DetailReport
from services.generator.stages.txt2img import Txt2ImgStage
from services.generator.stages.upscale import UpscaleStage
from shared.contracts.stages import DONE, STAGE_SHARES
from shared.extra_networks import LoraRef, extract_loras
from shared.ml import dtype_guard
from shared.pose import Pose, draw_pose
from shared.styles import DetailerPass, Style

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]
VERSION = "portrait-studio 0.1"
ADETAILER_ORDINALS = 4  # ADetailer's default number of units
# The stages in order with their share of the time, for progress reporting (shared/contracts/stages.py).
STAGES = tuple(STAGE_SHARES.items())


@dataclass(frozen=True)
class Scale:
    """Overrides that shrink a style (the tiny preset on CPU): sizes, steps, tiles."""

    width: int
    height: int
    steps: int
    detail_size: int
    tile: int
    padding: int


TINY_SCALE = Scale(width=128, height=192, steps=4, detail_size=64, tile=128, padding=16)


def scale_style(style: Style, scale: Scale) -> Style:
    t2i = style.txt2img.model_copy(
        update={"width": scale.width, "height": scale.height, "steps": scale.steps}
    )
    passes = tuple(
        p.model_copy(
            update={
                "size": scale.detail_size,
                "steps": scale.steps,
                "padding": min(p.padding, scale.padding),
            }
        )
        for p in style.detailer
    )
    beautify = style.beautify.model_copy(update={"steps": scale.steps})
    upscale = style.upscale.model_copy(
        update={"steps": scale.steps, "tile": scale.tile, "padding": scale.padding}
    )
    return style.model_copy(
        update={"txt2img": t2i, "detailer": passes, "beautify": beautify, "upscale": upscale}
    )


@dataclass
class _Described:
    """A finished image with its PNG's metadata, before encoding."""

    image: Image.Image
    seed: int
    parameters: str  # A1111's infotext
    meta: dict  # the product's JSON
    comfyui_prompt: dict  # ComfyUI's API-format graph
    identity_score: float | None
    face_found: bool


@dataclass
class PortraitResult:
    image: Image.Image
    png: bytes  # with the `parameters` and JSON metadata chunks
    style: str
    seed: int
    identity_score: float | None
    face_found: bool
    meta: dict = field(default_factory=dict)

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


class PortraitPipeline:
    def __init__(
        self,
        models: ResidentModels,
        *,
        scale: Scale | None = None,
        batch_size: int = 4,
        lora_resolver: Callable[[str], Path] | None = None,
        lora_mode: Literal["adapters", "baked"] = "adapters",
        score_identity: bool = True,
    ):
        """`lora_mode`: "adapters" (peft layers, exact and simple) or "baked" (fused in place and
        restored after the job: no new modules, for compiled models, see acceleration.py)."""
        self.models = models
        self.score_identity = score_identity  # off: no dlib face check (benchmarks)
        self._loras = {"adapters": ActiveLoras, "baked": BakedLoras}[lora_mode]
        self.scale = scale
        self.batch_size = batch_size
        self.buckets: list = []  # compiled shapes (compile())
        base = models.base
        sampler = "DPM++ 2M Karras"
        # The dtype guard: what was loaded must stay so (see shared/ml/dtype_guard.py).
        self.placement = dtype_guard.snapshot(models.networks())
        self.txt2img = Txt2ImgStage(base, models.controlnet_openpose, batch_size)
        self.detailer = DetailerStage(base, models.detectors, sampler, batch_size * 2)
        self.beautify = BeautifyStage(base, sampler, batch_size)
        self.upscale = UpscaleStage(base, models.controlnet_tile, models.upscaler, sampler, batch_size * 2)
        dtype_guard.check(self.placement, models.networks(), "while the stage pipelines were built")
        self._resolve_lora = lora_resolver or _registry_lora
        self._lora_hashes: dict[Path, str] = {}
        self._a1111_hashes: dict[Path, str] = {}

    @classmethod
    def from_preset(cls, preset: str | None = None, device: str | None = None, **kwargs) -> PortraitPipeline:
        from services.generator.resident import load_resident

        models = load_resident(preset, device)
        if models.preset == "tiny":
            kwargs.setdefault("scale", TINY_SCALE)
        cuda = str(models.base.device).startswith("cuda")
        if cuda:
            from services.generator.acceleration import accelerate

            # channels_last + fused QKV (LoRAs must then be baked)
            accelerate(models)
            kwargs.setdefault("lora_mode", "baked")
        if compile_wanted(cuda):
            kwargs["lora_mode"] = "baked"  # compiled graphs need the parameters kept in place
            pipeline = cls(models, **kwargs)
            pipeline.compile()
            return pipeline
        if cuda and graphs_wanted():
            kwargs["lora_mode"] = "baked"  # CUDA graphs read the parameters where they were
            pipeline = cls(models, **kwargs)
            pipeline.graph()
            return pipeline
        return cls(models, **kwargs)

    # -- compiled networks (compiled.py) or CUDA graphs (graphed.py) --------------------------

    def compile(self, styles: list[Style] | None = None, mode: str | None = None, backend: str = "inductor"):
        """Compile the UNet and ControlNets for the shape buckets of `styles` (default: every
        style) at this pipeline's scale and batch size. Graphs are built on first use, or by
        `warm_up`. Returns the buckets."""
        from services.generator import compiled
        from shared.config import get_settings
        from shared.ml.compile_cache import use_compile_cache

        if self._loras is not BakedLoras:
            raise ValueError("compiled networks need lora_mode='baked'")
        self.buckets = self._buckets(styles, [self.batch_size])
        if backend == "inductor":
            use_compile_cache(get_settings().compile_cache_folder, self.models.base.device)
        compiled.compile_networks(self.models, self.buckets, mode or get_settings().compile_mode, backend)
        return self.buckets

    def graph(self, styles: list[Style] | None = None) -> list:
        """Replay the UNet and ControlNets from CUDA graphs (services/generator/graphed.py), the
        alternative to `compile`. `warm_up` captures the shapes of `styles` (default: every style)
        for a full batch and for one portrait; other shapes are captured when they first come.
        Returns those shapes (compiled.Bucket)."""
        from services.generator import graphed

        if self._loras is not BakedLoras:
            raise ValueError("CUDA graphs need lora_mode='baked'")
        self.buckets = self._buckets(styles, sorted({1, self.batch_size}))
        graphed.graph_networks(self.models, self.buckets)
        return self.buckets

    def _buckets(self, styles: list[Style] | None, batch_sizes: list[int]) -> list:
        """compiled.shape_buckets of `styles` (default: every style) at this pipeline's scale."""
        from services.generator import compiled
        from shared.styles import load_styles

        styles = list(load_styles().values()) if styles is None else styles
        if self.scale is not None:
            styles = [scale_style(s, self.scale) for s in styles]
        base = self.models.base
        multiple = base.vae_scale_factor * 2 ** (len(base.unet.config.block_out_channels) - 1)
        found = set()
        for size in batch_sizes:
            found |= set(compiled.shape_buckets(styles, size, base.vae_scale_factor, multiple))
        return sorted(found)

    def warm_up(self, freeze: bool = True) -> dict[str, float]:
        """Compile (or load from the compile cache), or capture as CUDA graphs, every bucket;
        then, with `freeze`, allow no further compiles in this process (CUDA graphs still capture
        a new batch size of a bucket's spatial size, in a fraction of a second). Returns seconds
        per bucket."""
        from services.generator import compiled

        seconds = compiled.warm_up(self.models, self.buckets)
        if freeze:
            compiled.freeze_compiled()
        return seconds

    # -- the call ----------------------------------------------------------------------------

    def __call__(
        self,
        likeness: Likeness | Path | str | None,
        style: Style,
        seed: int,
        count: int = 1,
        progress: Progress | None = None,
        pose: Pose | None = None,
        pose_name: str | None = None,
    ) -> list[PortraitResult]:
        """`count` portraits of `likeness` in `style`. `pose` (named `pose_name` in the PNG
        metadata, e.g. "photo:<id>") replaces the style's pose template."""
        if count < 1:
            raise ValueError("count must be at least 1")
        if isinstance(likeness, str | Path):
            likeness = load_likeness(likeness)
        likeness = likeness or Likeness(None)
        self._check_base(style)
        if self.scale is not None:
            style = scale_style(style, self.scale)
        report = _Progress(progress)
        seeds = [seed + i for i in range(count)]

        prompt, tag_loras = extract_loras(style.prompt.replace("{likeness}", likeness.words))
        loras, skipped = self._lora_specs(style, tag_loras, likeness)
        pipe = self.models.base
        try:
            images, detail1, detail2, pose_name = self._stages(
                pipe, loras, likeness, prompt, style, seeds, report, pose, pose_name
            )
        finally:
            dtype_guard.check(self.placement, self.models.networks(), "during the job")
        report.done()

        # Face scores one after another (dlib's networks are not thread-safe), PNGs in parallel.
        described = [
            self._describe(image, style, s, likeness, prompt, loras, skipped, [d1, d2], pose_name)
            for image, s, d1, d2 in zip(images, seeds, detail1, detail2, strict=True)
        ]
        pngs = png_bytes_many([(d.image, d.parameters, d.meta, d.comfyui_prompt) for d in described])
        results = [
            PortraitResult(d.image, png, style.id, d.seed, d.identity_score, d.face_found, d.meta)
            for d, png in zip(described, pngs, strict=True)
        ]
        return sorted(results, key=lambda r: (r.identity_score is None, -(r.identity_score or 0.0), r.seed))

    def _stages(self, pipe, loras, likeness, prompt, style, seeds, report, pose, pose_name):
        """The five stages under the job's LoRAs -> (images, detailer reports x2, pose name used)."""
        with self._loras(pipe, loras):
            embed = _Encoder(pipe, likeness)
            main = embed(prompt, style.negative_prompt)

            report.start(0)
            if pose is None and style.pose:
                pose, pose_name = load_pose(style.pose), style.pose
            control = None
            if pose is not None and self.models.controlnet_openpose is not None:
                control = draw_pose(pose, style.txt2img.width, style.txt2img.height)
            else:
                pose_name = None
            images = self.txt2img(main, style.txt2img, seeds, control)

            report.start(1)
            passes = style.detailer
            images, detail1 = self.detailer(images, passes, embed.for_pass, seeds)

            report.start(2)
            beauty = embed(style.beautify.prompt, style.beautify.negative_prompt)
            images = self.beautify(images, beauty, style.beautify, seeds)

            report.start(3)
            images, detail2 = self.detailer(images, passes, embed.for_pass, seeds)

            report.start(4)
            images = self.upscale(images, main, style.upscale, seeds)
        return images, detail1, detail2, pose_name

    # -- pieces ------------------------------------------------------------------------------

    def _check_base(self, style: Style) -> None:
        if self.models.preset != "tiny" and style.base_model != self.models.base_name:
            raise ValueError(
                f"style {style.id!r} needs base model {style.base_model!r}, "
                f"this worker serves {self.models.base_name!r}"
            )

    def _lora_specs(
        self, style: Style, tag_loras: list[LoraRef], likeness: Likeness
    ) -> tuple[list[LoraSpec], list[str]]:
        from shared.ml.registry import MissingWeights

        specs, skipped = [], []
        wanted = [(lora.name, lora.weight, None) for lora in style.loras]
        wanted += [(lora.name, lora.unet_weight, lora.te_weight) for lora in tag_loras]
        for name, weight, te_weight in wanted:
            try:
                adapter = "style_" + re.sub(r"\W", "_", name)  # peft: no "." or "/" in names
                path = self._resolve_lora(name)
                specs.append(LoraSpec(adapter, path, weight, te_weight, name=name))
            except MissingWeights:
                if self.models.preset != "tiny":
                    raise
                # The tiny preset has random models; real style LoRAs cannot apply to them.
                skipped.append(name)
        if skipped:
            # By design on the tiny preset (and recorded in each PNG's metadata): not a warning.
            log.info("tiny preset: style LoRAs not applied: %s", ", ".join(skipped))
        if likeness.lora_path is not None:
            specs.append(LoraSpec(LIKENESS_ADAPTER, likeness.lora_path, likeness.weight))
        return specs, skipped

    def _lora_hash(self, path: Path) -> str:
        if path not in self._lora_hashes:
            self._lora_hashes[path] = short_hash(path)
        return self._lora_hashes[path]

    def _a1111_hash(self, path: Path) -> str:
        if path not in self._a1111_hashes:
            self._a1111_hashes[path] = a1111_lora_hash(path)
        return self._a1111_hashes[path]

    @staticmethod
    def _a1111_name(spec: LoraSpec, likeness: Likeness) -> str:
        """The name a user's A1111 knows the file by: its stem; the likeness's kohya file is
        `likeness-<trigger>.safetensors` (services/trainer/export.py), whichever file was used here."""
        if spec.adapter == LIKENESS_ADAPTER and spec.path.stem == "pytorch_lora_weights":
            return f"likeness-{likeness.trigger_word}"
        return spec.path.stem

    def _describe(
        self,
        image: Image.Image,
        style: Style,
        seed: int,
        likeness: Likeness,
        prompt: str,
        loras: list[LoraSpec],
        skipped: list[str],
        details: list[DetailReport],
        pose_name: str | None,
    ) -> _Described:
        """A finished image's identity score and the metadata its PNG carries (A1111's
        `parameters`, the product's JSON, ComfyUI's `prompt` graph)."""
        faces = []
        if self.score_identity:
            from shared.faces import detect_faces

            faces = detect_faces(image)
        score = None
        if faces:
            from shared.faces import face_embedding

            score = identity_score(face_embedding(image, faces[0]), likeness.reference_embeddings)
        h = self.models.hashes
        t2i, up = style.txt2img, style.upscale
        names = [s.display_name for s in loras]
        stems = [a1111_network_alias(self._a1111_name(s, likeness)) for s in loras]
        lora_tags = " ".join(
            a1111_lora_tag(stem, s.weight, s.te_weight) for stem, s in zip(stems, loras, strict=True)
        )
        settings: dict[str, object] = {
            "Steps": t2i.steps,
            "Sampler": t2i.sampler,
            "CFG scale": t2i.cfg,
            "Seed": seed,
            "Size": f"{t2i.width}x{t2i.height}",  # txt2img's: the first pass (the final size is below)
            "Model hash": h.get("base"),
            "Model": self.models.base_name,
            "ControlNet 0": controlnet_unit(A1111_CONTROLNET["openpose"], t2i.controlnet_scale)
            if pose_name
            else None,
        }
        for index, params in enumerate(style.detailer[:ADETAILER_ORDINALS]):
            model = next(
                (d.detectors.get(params.detector) for d in details if params.detector in d.detectors), None
            )
            detail_prompt = params.prompt.replace("{likeness}", likeness.words)
            settings |= adetailer_unit(
                index,
                model=model or f"{params.detector}_yolov8n.pt",
                prompt=f"{detail_prompt} {lora_tags}".strip(),  # the job's LoRAs act in every pass
                negative_prompt=params.negative_prompt,
                params=params,
            )
        settings |= {
            "Ultimate SD upscale upscaler": A1111_UPSCALERS.get(up.upscaler, up.upscaler),
            "Ultimate SD upscale tile_width": up.tile,
            "Ultimate SD upscale tile_height": up.tile,
            "Ultimate SD upscale mask_blur": up.mask_blur,
            "Ultimate SD upscale padding": up.padding,
            "Lora hashes": ", ".join(
                f"{stem}: {self._a1111_hash(s.path)}" for stem, s in zip(stems, loras, strict=True)
            )
            or None,
            PRODUCT_KEY: json.dumps(
                {
                    "version": VERSION,
                    "style": style.id,
                    "size": [image.width, image.height],
                    "beautify": style.beautify.model_dump(),
                    "detailer_again_after_beautify": bool(style.detailer),
                    "upscale": up.model_dump(
                        include={"factor", "denoise", "steps", "cfg", "controlnet_scale"}
                    )
                    | {"controlnet": A1111_CONTROLNET["tile"]},
                    "pose": pose_name,
                },
                separators=(",", ":"),
                sort_keys=True,
            ),
        }
        parameters = a1111_parameters(f"{prompt} {lora_tags}".strip(), style.negative_prompt, settings)
        meta = {
            "style": style.id,
            "seed": seed,
            "pose": pose_name,  # the style's template, or "photo:<id>" for the user's own pose
            "preset": self.models.preset,
            "models": {"base": self.models.base_name, "hashes": dict(h)},
            "loras": [
                {
                    "name": name,
                    "weight": s.weight,
                    "te_weight": s.weight if s.te_weight is None else s.te_weight,
                    "hash": self._lora_hash(s.path),
                    "a1111_name": stem,  # `<lora:...>` and `Lora hashes`
                    "a1111_hash": self._a1111_hash(s.path),
                }
                for name, stem, s in zip(names, stems, loras, strict=True)
            ],
            "loras_skipped": skipped,
            "likeness": {"trigger_word": likeness.trigger_word, "class_word": likeness.class_word}
            if likeness.lora_path
            else None,
            "stages": style.model_dump(include={"txt2img", "detailer", "beautify", "upscale"}),
            "detailer": [d.to_json() for d in details],
            "identity_score": score,
            "face_found": bool(faces),
            "size": [image.width, image.height],
        }
        graph = comfyui_prompt(
            style,
            seed=seed,
            prompt=prompt,
            checkpoint=self._checkpoint_file(),
            loras=[
                ComfyLora(f"{stem}.safetensors", s.weight, s.te_strength)
                for stem, s in zip(stems, loras, strict=True)
            ],
            likeness_words=likeness.words,
            pose=bool(pose_name),
        )
        return _Described(image, seed, parameters, meta, graph, score, bool(faces))

    def _checkpoint_file(self) -> str:
        """The base checkpoint's file name as users have it (ComfyUI's `ckpt_name`)."""
        from shared.ml.registry import ModelError, get_spec

        try:
            spec = get_spec(self.models.base_name)
        except ModelError:
            return f"{self.models.base_name}.safetensors"
        return Path(spec.files[0].path).name if spec.layout == "file" and spec.files else spec.name


class _Encoder:
    """Prompt embeddings under the job's active LoRAs (the text encoder may carry LoRA layers)."""

    def __init__(self, pipe, likeness: Likeness):
        self.pipe = pipe
        self.likeness = likeness
        self._cache: dict[tuple[str, str], PromptEmbeds] = {}

    def __call__(self, prompt: str, negative: str) -> PromptEmbeds:
        prompt = prompt.replace("{likeness}", self.likeness.words)
        prompt, tags = extract_loras(prompt)
        if tags:
            raise ValueError("LoRA tags are only allowed in the style's main prompt")
        key = (prompt, negative)
        if key not in self._cache:
            self._cache[key] = encode_prompt_pair(
                self.pipe.tokenizer, self.pipe.text_encoder, prompt, negative
            )
        return self._cache[key]

    def for_pass(self, params: DetailerPass) -> PromptEmbeds:
        return self(params.prompt, params.negative_prompt)


class _Progress:
    def __init__(self, callback: Progress | None):
        self.callback = callback

    def start(self, index: int) -> None:
        if self.callback:
            done = sum(share for _, share in STAGES[:index])
            self.callback(round(done, 4), STAGES[index][0])

    def done(self) -> None:
        if self.callback:
            self.callback(1.0, DONE)


def compile_wanted(cuda: bool) -> bool:
    """The COMPILE_NETWORKS setting: "auto" compiles on CUDA only."""
    from shared.config import get_settings

    setting = get_settings().compile_networks
    return setting == "on" or (setting == "auto" and cuda)


def graphs_wanted() -> bool:
    """The CUDA_GRAPHS setting ("on" or "off"; used on CUDA when the networks are not compiled)."""
    from shared.config import get_settings

    return get_settings().cuda_graphs == "on"


def _registry_lora(name: str) -> Path:
    from shared.ml.registry import resolve

    return resolve(name)
