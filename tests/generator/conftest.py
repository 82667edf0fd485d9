"""Fixtures of the generator tests: the real CLIP tokenizer and the tiny preset's models."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # The CPU is shared: with several threads per process, tiny models run 10-20x slower
    # (OpenMP threads spinning against other processes).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def clip_tokenizer():
    from shared.ml.tiny import clip_tokenizer

    return clip_tokenizer()


@pytest.fixture(scope="session")
def tiny_text_encoder():
    """A 2-layer CLIP text encoder of SD-1.5's vocabulary, fixed seed."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, eos_token_id=49407,
    )  # fmt: skip
    return CLIPTextModel(config).eval()


@pytest.fixture(scope="session")
def tiny():
    """The tiny preset's resident models on the CPU (built once, cached under model_dir)."""
    from shared.ml import loading

    return {
        "base": loading.load_base_pipeline("tiny", "cpu"),
        "openpose": loading.load_controlnet("openpose", "tiny", "cpu"),
        "tile": loading.load_controlnet("tile", "tiny", "cpu"),
        "upscaler": loading.load_upscaler("tiny", "cpu"),
    }
