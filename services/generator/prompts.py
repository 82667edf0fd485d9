"""A1111 prompt conventions, turned into embeddings for diffusers pipelines.

- Attention: `(word)` x1.1, `[word]` /1.1, `(word:1.3)`, nesting multiplies, `\\(` is literal,
  `BREAK` starts a new chunk (A1111's `parse_prompt_attention`, same results).
- Extra networks (`<lora:name:0.7>`) are taken out first: see shared/extra_networks.py.
- Length: tokens are split into 75-token chunks (moving a chunk break back to a comma at most
  20 tokens earlier), each chunk wrapped in BOS/EOS to 77 tokens and encoded separately; the
  chunk embeddings are concatenated, so prompts are not cut at 77 tokens.
- Weights scale each token's embedding, then the chunk is rescaled to its original mean
  (A1111's "emphasis: original").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from shared.extra_networks import EXTRA_NETWORK, LoraRef, extract_loras

__all__ = ["LoraRef", "PromptEmbeds", "encode_prompt_pair", "extract_loras", "tokenize_chunks"]

CHUNK_TOKENS = 75
COMMA_BACKTRACK = 20

_ATTENTION = re.compile(
    r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:
""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


@dataclass(frozen=True)
class PromptEmbeds:
    prompt_embeds: torch.Tensor  # [1, 77 * chunks, dim]
    negative_prompt_embeds: torch.Tensor  # same shape


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs; ("BREAK", -1) marks a forced chunk break."""
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= multiplier

    for m in _ATTENTION.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(res))
        elif token == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif token == ")" and round_brackets:
            multiply_range(round_brackets.pop(), 1.1)
        elif token == "]" and square_brackets:
            multiply_range(square_brackets.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for pos in round_brackets:  # unbalanced brackets still count, as in A1111
        multiply_range(pos, 1.1)
    for pos in square_brackets:
        multiply_range(pos, 1 / 1.1)
    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):  # merge neighbours of equal weight
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return [(t, w) for t, w in res]


def tokenize_chunks(tokenizer, prompt: str) -> list[tuple[list[int], list[float]]]:
    """A1111's chunking: each chunk is BOS + 75 tokens (EOS-padded) + EOS, with weights."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    parsed = parse_prompt_attention(prompt)
    texts = [text for text, _ in parsed]
    token_lists = tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    chunks: list[tuple[list[int], list[float]]] = []
    tokens: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close_chunk() -> None:
        nonlocal tokens, weights, last_comma
        pad = CHUNK_TOKENS - len(tokens)
        chunks.append(([bos, *tokens, *[eos] * pad, eos], [1.0, *weights, *[1.0] * pad, 1.0]))
        tokens, weights, last_comma = [], [], -1

    for ids, (text, weight) in zip(token_lists, parsed, strict=True):
        if text == "BREAK" and weight == -1:
            close_chunk()
            continue
        for token in ids:
            if token == comma:
                last_comma = len(tokens)
            elif (
                len(tokens) == CHUNK_TOKENS
                and last_comma != -1
                and len(tokens) - last_comma <= COMMA_BACKTRACK
            ):
                cut = last_comma + 1
                moved_tokens, moved_weights = tokens[cut:], weights[cut:]
                tokens, weights = tokens[:cut], weights[:cut]
                close_chunk()
                tokens, weights = moved_tokens, moved_weights
            if len(tokens) == CHUNK_TOKENS:
                close_chunk()
            tokens.append(token)
            weights.append(weight)
    if tokens or not chunks:
        close_chunk()
    return chunks


@torch.no_grad()
def _encode_chunks(text_encoder, chunks: list[tuple[list[int], list[float]]]) -> torch.Tensor:
    device, dtype = text_encoder.device, text_encoder.dtype
    ids = torch.tensor([c[0] for c in chunks], device=device)
    weights = torch.tensor([c[1] for c in chunks], device=device, dtype=torch.float32)
    z = text_encoder(ids)[0].float()  # last_hidden_state: [chunks, 77, dim]
    original_mean = z.mean(dim=(1, 2), keepdim=True)
    weighted = z * weights.unsqueeze(-1)
    new_mean = weighted.mean(dim=(1, 2), keepdim=True)
    # Restore each chunk's mean (A1111). Where the mean is ~0 (a random text encoder: layer norm
    # without SD's large constant channels) the ratio would explode: keep the weighted values.
    scale = z.abs().mean(dim=(1, 2), keepdim=True)
    safe = (new_mean.abs() > 1e-3 * scale) & (original_mean.abs() > 1e-3 * scale)
    ratio = torch.where(safe, original_mean / torch.where(safe, new_mean, 1.0), 1.0)
    z = weighted * ratio
    return z.reshape(1, -1, z.shape[-1]).to(dtype)


def encode_prompt_pair(tokenizer, text_encoder, prompt: str, negative_prompt: str = "") -> PromptEmbeds:
    """Embeddings of an A1111 prompt and its negative, padded to the same number of chunks
    with empty chunks (as A1111 does) so classifier-free guidance can batch them."""
    if EXTRA_NETWORK.search(prompt) or EXTRA_NETWORK.search(negative_prompt):
        raise ValueError("remove <lora:...> and other extra-network tags with extract_loras first")
    pos = tokenize_chunks(tokenizer, prompt)
    neg = tokenize_chunks(tokenizer, negative_prompt)
    empty = tokenize_chunks(tokenizer, "")[0]
    n = max(len(pos), len(neg))
    pos += [empty] * (n - len(pos))
    neg += [empty] * (n - len(neg))
    return PromptEmbeds(_encode_chunks(text_encoder, pos), _encode_chunks(text_encoder, neg))
