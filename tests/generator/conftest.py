"""Fixtures of the generator tests: the real CLIP tokenizer and tiny SD-1.5-shaped models."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest


def _build_clip_tokenizer(directory: Path):
    """SD-1.5's tokenizer from the BPE vocabulary inside the open-clip-torch wheel."""
    import importlib.util

    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spec = importlib.util.find_spec("open_clip")  # located, not imported (needs ftfy)
    bpe = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe) as f:
        merges = f.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(directory), model_max_length=77)


@pytest.fixture(scope="session")
def clip_tokenizer(tmp_path_factory):
    return _build_clip_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_text_encoder():
    """A 2-layer CLIP text encoder of SD-1.5's vocabulary, fixed seed."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, eos_token_id=49407,
    )  # fmt: skip
    return CLIPTextModel(config).eval()
