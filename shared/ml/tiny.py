"""The `tiny` preset: SD-1.5-shaped models with random weights, built from configs with fixed seeds.

No model hub is needed: demo, CI and every test run on these. They are saved once under
`settings.model_dir / "tiny"` as real diffusers folders and files, and loaded through the same
loader code as the real weights. Their images are noise; their shapes and code paths are real.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch

from shared.ml.quiet import quiet_model_logs

# Bump when a config below changes: the cache folder is rebuilt.
VERSION = "2"
SEED = 1234
TRAIN_SIZE = 64  # the training / generation resolution that keeps tiny CPU runs fast


def root(model_dir: Path | None = None) -> Path:
    from shared.config import get_settings

    return Path(model_dir or get_settings().model_dir) / "tiny"


def paths(model_dir: Path | None = None) -> dict[str, Path]:
    base = root(model_dir)
    return {
        "base": base / "pipeline",
        "controlnet_openpose": base / "controlnet-openpose",
        "controlnet_tile": base / "controlnet-tile",
        "upscaler": base / "upscaler-4x.safetensors",
    }


def ensure_built(model_dir: Path | None = None) -> dict[str, Path]:
    """Build the tiny models once (atomically, safe across processes) and return their paths."""
    from filelock import FileLock

    base = root(model_dir)
    stamp = base / "VERSION"
    if stamp.exists() and stamp.read_text() == VERSION:
        return paths(model_dir)
    base.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base) + ".lock"):
        if stamp.exists() and stamp.read_text() == VERSION:
            return paths(model_dir)
        tmp = base.with_name(f"tiny.build{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        _build(tmp)
        (tmp / "VERSION").write_text(VERSION)
        shutil.rmtree(base, ignore_errors=True)
        tmp.rename(base)
    return paths(model_dir)


def _build(out: Path) -> None:
    from diffusers import ControlNetModel, StableDiffusionPipeline

    quiet_model_logs()  # "Writing model shards" too: in a worker, a log line per save
    components = build_components(tokenizer_dir=out / "clip-tokenizer")
    pipe = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(out / "pipeline")
    for seed, kind in ((SEED + 1, "openpose"), (SEED + 2, "tile")):
        controlnet = ControlNetModel.from_unet(components["unet"])
        _reinit_zero_convs(controlnet, seed)
        controlnet.save_pretrained(out / f"controlnet-{kind}")
    _save_upscaler(out / "upscaler-4x.safetensors")


def build_components(tokenizer_dir: Path | None = None) -> dict:
    """Fresh random SD-1.5-shaped components (same weights on every call: fixed seeds)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=TRAIN_SIZE // 8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),  # attention at low res only
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    torch.manual_seed(SEED)
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 64, 64),  # 4 blocks: scale factor 8, like SD-1.5
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        sample_size=TRAIN_SIZE,
        scaling_factor=0.18215,
    )
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    scheduler = PNDMScheduler(  # SD-1.5's scheduler config
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": clip_tokenizer(tokenizer_dir),
        "scheduler": scheduler,
    }


def clip_tokenizer(folder: Path | None = None):
    """SD-1.5's CLIP BPE tokenizer, built from the vocabulary shipped in open-clip-torch's wheel
    (the ids equal SD-1.5's). `folder` caches vocab.json and merges.txt."""
    from transformers import CLIPTokenizer

    folder = folder or root() / "clip-tokenizer"
    if not (folder / "vocab.json").exists():
        tmp = folder.with_name(f"clip-tokenizer.build{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        vocab, merges = _clip_vocab()
        (tmp / "vocab.json").write_text(json.dumps(vocab))
        (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return CLIPTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        model_max_length=77,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def _clip_vocab() -> tuple[dict[str, int], list[str]]:
    # The same construction as open_clip's SimpleTokenizer (and OpenAI's CLIP): byte tokens,
    # byte tokens + "</w>", the 48,894 merges, then the two special tokens: 49,408 in all.
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open-clip-torch is needed for the CLIP vocabulary: pip install it")
    bpe = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_tokens = list(_bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _reinit_zero_convs(controlnet, seed: int) -> None:
    # from_unet zero-initialises the output convolutions, so an untrained control has no effect.
    # Random (variance-preserving) weights make the tiny control act, as a trained one does; the
    # conditioning embedding is re-initialised too, else its default init washes the image out.
    generator = torch.Generator().manual_seed(seed)
    embedding = [m for m in controlnet.controlnet_cond_embedding.modules() if isinstance(m, torch.nn.Conv2d)]
    outputs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    with torch.no_grad():
        # gain 2: SiLU between the embedding's convs. Embedding first: the draws keep their order.
        for convs, gain in ((embedding, 2.0), (outputs, 1.0)):
            for conv in convs:
                fan_in = conv.weight[0].numel()
                conv.weight.normal_(0.0, (gain / fan_in) ** 0.5, generator=generator)
                conv.bias.zero_()


def _save_upscaler(path: Path) -> None:
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(SEED)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=4)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
