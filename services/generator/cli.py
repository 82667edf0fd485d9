"""`studio generate`: the portrait pipeline from the command line, without any service."""

from __future__ import annotations

import random
from pathlib import Path

import typer


def generate_cmd(
    style: str = typer.Option(..., "--style", help="style id (shared/styles/*.yaml)"),
    out: Path = typer.Option(..., "--out", help="folder for the PNG files"),
    likeness: Path | None = typer.Option(
        None, "--likeness", help="likeness folder or LoRA .safetensors file; none: no likeness"
    ),
    photos: Path | None = typer.Option(
        None, "--photos", help="folder of the person's photos, for the identity score"
    ),
    pose_photo: Path | None = typer.Option(
        None,
        "--pose-photo",
        help="a photo whose pose the portraits take (MediaPipe BlazePose), in place of the style's",
    ),
    count: int = typer.Option(1, "--count", min=1, max=32),
    seed: int | None = typer.Option(None, "--seed", help="default: random"),
    preset: str | None = typer.Option(None, "--preset", help="tiny | sd15 (default: settings)"),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: settings)"),
) -> None:
    """Generate portraits of a likeness in a style; writes PNGs with A1111 metadata."""
    from rich.console import Console
    from rich.table import Table

    from services.generator.pipeline import PortraitPipeline
    from shared.styles import StyleError, get_style

    console = Console(stderr=True)
    try:
        chosen = get_style(style)
    except StyleError as exc:
        raise typer.BadParameter(str(exc), param_hint="--style") from exc
    if likeness is not None and not likeness.exists():
        raise typer.BadParameter(f"{likeness} does not exist", param_hint="--likeness")
    seed = seed if seed is not None else random.randrange(2**31)
    from services.generator.likeness import LikenessError, load_likeness

    try:
        person = load_likeness(likeness, photos) if likeness is not None else None
    except LikenessError as exc:
        raise typer.BadParameter(str(exc), param_hint="--likeness") from exc
    pose = _pose_of(pose_photo) if pose_photo is not None else None
    pipeline = PortraitPipeline.from_preset(preset, device)

    def progress(fraction: float, stage: str) -> None:
        console.print(f"[{fraction:5.0%}] {stage}")

    from services.generator.lora_files import UnusableLora

    try:
        results = pipeline(
            person,
            chosen,
            seed=seed,
            count=count,
            progress=progress,
            pose=pose,
            pose_name=f"photo:{pose_photo.name}" if pose_photo is not None else None,
        )
    except UnusableLora as exc:  # the user's file, not a bug: a sentence and exit 2 (usage)
        console.print(f"Error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    out.mkdir(parents=True, exist_ok=True)
    table = Table("file", "seed", "size", "identity", "face")
    for result in results:
        path = out / f"{chosen.id}_{result.seed}.png"
        path.write_bytes(result.png)
        score = "-" if result.identity_score is None else f"{result.identity_score:.3f}"
        table.add_row(str(path), str(result.seed), f"{result.width}x{result.height}", score,
                      "yes" if result.face_found else "no")  # fmt: skip
    Console().print(table)


def _pose_of(path: Path):
    """The pose of the person in a photo file; a bad file or no person is a usage error in words."""
    from PIL import UnidentifiedImageError

    from shared.blazepose import PoseRejected, find_pose
    from shared.images import open_upright

    try:
        return find_pose(open_upright(path)).pose  # several people: the most prominent
    except (UnidentifiedImageError, OSError) as exc:
        message = f"{path} could not be read as a photo ({exc})"
        raise typer.BadParameter(message, param_hint="--pose-photo") from exc
    except PoseRejected as exc:
        raise typer.BadParameter(f"{path}: {exc.reason}", param_hint="--pose-photo") from exc


def main() -> None:  # `python -m services.generator.cli`
    typer.run(generate_cmd)


if __name__ == "__main__":
    main()


def warmup_cmd(
    preset: str | None = typer.Option(None, "--preset", help="tiny | sd15 (default: settings)"),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: settings)"),
) -> None:
    """For COMPILE_NETWORKS=on (CUDA graphs, the default, need no cache): compile the UNet and
    ControlNets for every style's shape buckets, or load them from the compile cache under
    MODEL_DIR; prints seconds per bucket. Run it once per GPU type and torch
    version (e.g. as a Kubernetes Job or initContainer on the model volume) so workers start warm."""
    import json
    import os
    import time

    os.environ.setdefault("COMPILE_NETWORKS", "on")  # this command exists to compile
    from services.generator.pipeline import PortraitPipeline
    from shared.config import get_settings

    get_settings.cache_clear()
    began = time.perf_counter()
    pipeline = PortraitPipeline.from_preset(preset, device)
    loaded = time.perf_counter() - began
    if not pipeline.buckets:
        raise typer.BadParameter("COMPILE_NETWORKS is off: nothing to warm up")
    seconds = pipeline.warm_up()
    report = {
        "load_seconds": round(loaded, 1),
        "warm_up_seconds": round(time.perf_counter() - began - loaded, 1),
        "cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        "buckets": seconds,
    }
    typer.echo(json.dumps(report, indent=2))
