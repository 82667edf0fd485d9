"""The stage vocabulary of a portrait job: the generator's progress labels, the keys of
`PortraitsMade.seconds` (timings, benches) and the file of each stage, named once.

The five pipeline stages run in this order (services/generator/pipeline.py); `detail2` is the
second pass of the same detailer. The job itself adds `load`, `prepare` and `store` to its timings.
"""

from __future__ import annotations

import enum


class Stage(enum.StrEnum):
    txt2img = "txt2img"  # the first image, with the pose's ControlNet
    detail = "detail"  # ADetailer-style inpaint of faces and hands
    beautify = "beautify"  # img2img with the style's tone-and-colour prompt
    detail2 = "detail2"  # the detailer again, after beautify
    upscale = "upscale"  # tiled ControlNet upscale


# Where each stage is implemented: services/generator/stages/<module>.py
STAGE_MODULES: dict[Stage, str] = {
    Stage.txt2img: "txt2img",
    Stage.detail: "detailer",
    Stage.beautify: "beautify",
    Stage.detail2: "detailer",
    Stage.upscale: "upscale",
}

# Share of a style's time each stage takes, for progress reporting (sums to 1).
STAGE_SHARES: dict[Stage, float] = {
    Stage.txt2img: 0.35,
    Stage.detail: 0.15,
    Stage.beautify: 0.15,
    Stage.detail2: 0.10,
    Stage.upscale: 0.25,
}


class JobStep(enum.StrEnum):
    """The portrait job's own steps around the pipeline's stages (timings only)."""

    load = "load"  # the resident pipeline, the likeness download
    prepare = "prepare"  # a style's LoRAs baked in, prompts encoded
    store = "store"  # S3 uploads and Portrait rows


DONE = "done"  # the progress label after the last stage
