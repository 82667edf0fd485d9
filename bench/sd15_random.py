"""SD-1.5's architecture with random weights (fixed seed), for the GPU benchmarks.

A step costs the same whatever the weights, so the seconds are real although the images are
noise: UNet 860M, VAE 84M, CLIP ViT-L text encoder 123M, SD-1.5's scheduler and tokenizer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.ml import tiny  # noqa: E402


def sd15_components(device: str, small: bool = False) -> dict:
    """The components of a StableDiffusionPipeline, built on `device`. `small`: the same blocks,
    layers and names with narrow channels (32-64) and a 2-layer text encoder, for CPU tests."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    width = 32 if small else 768
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64, cross_attention_dim=width, attention_head_dim=8,
            block_out_channels=(32, 64, 64, 64) if small else (320, 640, 1280, 1280),
        )  # fmt: skip
        vae = AutoencoderKL(
            block_out_channels=(32, 64, 64, 64) if small else (128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408, hidden_size=width, intermediate_size=64 if small else 3072,
                num_hidden_layers=2 if small else 12, num_attention_heads=4 if small else 12,
                max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=width,
                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
            )
        )  # fmt: skip
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        num_train_timesteps=1000, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tiny.clip_tokenizer(),
        "scheduler": scheduler,
    }


def pipeline(components: dict, device: str, dtype: torch.dtype):
    """A StableDiffusionPipeline of `components` (these or tiny.build_components()), no safety checker."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    return pipe.to(device, dtype)


# -- the sd15 preset's model folder, with random weights --------------------------------------

# What the sd15 preset loads (shared/ml/manifest.yaml), and what is written for each: the real
# files' names and formats, random contents. Detectors (adetailer_*) and yolo_pose are left out:
# without them the face detailer falls back to dlib and the hand pass is skipped
# (services/generator/detectors.py), as on a server where they are not pulled.
WRITTEN = ("epicrealism", "sd15_config", "controlnet_openpose", "controlnet_tile", "realesrgan_x4plus",
           "lora_detail", "lora_film")  # fmt: skip
MANIFEST_NAME = "random-weights-manifest.yaml"


def write_model_dir(root: Path, device: str, *, small: bool = False, rank: int = 32) -> Path:
    """Write random SD-1.5 weights into `root` (MODEL_DIR) in the sd15 preset's layout, and the
    manifest that names their hashes; returns that manifest's path (set MODEL_MANIFEST to it).

    Full size: a 2.1 GB fp16 A1111 single-file base (UNet + VAE + CLIP text), two 0.7 GB fp16
    ControlNets (the tile one as the hub's `.bin` pickle plus its safetensors conversion), a
    64 MB RRDBNet x4 `.pth`, two UNet LoRAs of rank `rank`. `small` keeps every
    file, name and key layout with narrow layers (tests). Raises ValueError for a non-empty root
    that holds no earlier random manifest (never overwrite real weights).
    """
    from diffusers import ControlNetModel
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    from bench import ldm_checkpoint
    from shared.ml import registry
    from shared.ml.convert import pickle_to_safetensors

    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()) and not (root / MANIFEST_NAME).exists():
        raise ValueError(f"{root} holds other files: random bench weights go into an empty MODEL_DIR")
    spec = yaml.safe_load(registry.MANIFEST.read_text())
    folder = {name: root / name for name in WRITTEN}
    file_of = {name: folder[name] / spec["models"][name]["files"][0]["path"] for name in WRITTEN}

    parts = sd15_components(device, small=small)
    unet, vae, text_encoder = parts["unet"], parts["vae"], parts["text_encoder"]
    pipe = pipeline(parts, device, torch.float16)
    folder["epicrealism"].mkdir(exist_ok=True)
    save_file(ldm_checkpoint.single_file_state(unet, vae, text_encoder), str(file_of["epicrealism"]))

    config = folder["sd15_config"]
    pipe.save_config(config)  # model_index.json
    unet.save_config(config / "unet")
    vae.save_config(config / "vae")
    parts["scheduler"].save_config(config / "scheduler")
    text_encoder.config.save_pretrained(config / "text_encoder")
    tiny.clip_tokenizer(config / "tokenizer")  # SD-1.5's vocab.json + merges.txt
    parts["tokenizer"].save_pretrained(config / "tokenizer")
    special = config / "tokenizer" / "special_tokens_map.json"
    if not special.exists():  # transformers 5 folds it into tokenizer_config.json
        tokens = parts["tokenizer"]
        special.write_text(
            json.dumps({k: getattr(tokens, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")})
        )
    for stale in config.rglob("*.safetensors"):
        stale.unlink()

    for name, variant in (("controlnet_openpose", "fp16"), ("controlnet_tile", None)):
        with torch.device(device):
            controlnet = ControlNetModel.from_unet(unet).to(torch.float16)
        # The hub's tile ControlNet is a pickle only (diffusion_pytorch_model.bin): write the same.
        controlnet.save_pretrained(folder[name], variant=variant, safe_serialization=variant == "fp16")
        del controlnet

    torch.manual_seed(0)
    esrgan = ESRGAN(
        in_nc=3, out_nc=3, num_filters=16 if small else 64, num_blocks=1 if small else 23, scale=4
    )
    folder["realesrgan_x4plus"].mkdir(exist_ok=True)
    torch.save({"params_ema": esrgan.state_dict()}, file_of["realesrgan_x4plus"])  # Real-ESRGAN's layout

    from bench.generate_bench import random_lora  # the generator bench's random style LoRA

    for name in ("lora_detail", "lora_film"):
        made = random_lora(pipe, folder[name], rank, text_encoder=False)
        made.replace(file_of[name])

    for name in WRITTEN:
        for file in spec["models"][name]["files"]:
            path = folder[name] / file["path"]
            file["sha256"] = registry.sha256_file(path)
            file.pop("size", None)
            registry.record_pin(root, f"{name}/{file['path']}", path, file["sha256"])
            if converted := registry.FileSpec(**file).converted_path:  # as `studio models pull` does
                out = folder[name] / converted
                pickle_to_safetensors(path, out, metadata={"source_sha256": file["sha256"]})
                registry.record_pin(root, f"{name}/{converted}", out, registry.sha256_file(out))
        note = spec["models"][name].get("notes", "")
        spec["models"][name]["notes"] = f"RANDOM WEIGHTS written by bench/sd15_random.py (bench only). {note}"
    manifest = root / MANIFEST_NAME
    manifest.write_text(
        "# RANDOM SD-1.5-sized weights for benchmarks (bench/sd15_random.py), not the published files:\n"
        "# images are noise. Used only where MODEL_MANIFEST names this file.\n"
        + yaml.safe_dump(spec, sort_keys=False)
    )
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description="random SD-1.5 weights in the sd15 preset's layout")
    parser.add_argument("--model-dir", type=Path, required=True, help="an empty MODEL_DIR")
    parser.add_argument("--small", action="store_true", help="narrow layers, same layout (tests, CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--force", action="store_true", help="write again over an earlier random set")
    args = parser.parse_args()
    if (args.model_dir / MANIFEST_NAME).exists() and not args.force:
        print(f"random weights already in {args.model_dir} (--force writes them again)")
        return
    start = time.perf_counter()
    try:
        manifest = write_model_dir(args.model_dir, args.device, small=args.small)
    except ValueError as exc:  # a folder holding other files: say so, no traceback
        sys.exit(str(exc))
    size = sum(p.stat().st_size for p in args.model_dir.rglob("*") if p.is_file())
    print(f"wrote {size / 2**30:.2f} GiB in {time.perf_counter() - start:.1f} s; use with:")
    print(f"export MODEL_PRESET=sd15 MODEL_DIR={args.model_dir} MODEL_MANIFEST={manifest}")


if __name__ == "__main__":
    main()
