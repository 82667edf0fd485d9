import copy

import pytest
import torch

from services.generator.prompts import (
    encode_prompt_pair,
    extract_loras,
    parse_prompt_attention,
    tokenize_chunks,
)


def _approx(parsed):
    return [(t, round(w, 6)) for t, w in parsed]


def test_attention_matches_a1111_examples():
    assert parse_prompt_attention("normal text") == [("normal text", 1.0)]
    assert _approx(parse_prompt_attention("an (important) word")) == [
        ("an ", 1.0), ("important", 1.1), (" word", 1.0),
    ]  # fmt: skip
    assert _approx(parse_prompt_attention("(unbalanced")) == [("unbalanced", 1.1)]
    assert parse_prompt_attention(r"\(literal\]") == [("(literal]", 1.0)]
    assert _approx(parse_prompt_attention("(unnecessary)(parens)")) == [("unnecessaryparens", 1.1)]
    text = "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."
    assert _approx(parse_prompt_attention(text)) == [
        ("a ", 1.0), ("house", 1.573), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
        (", sun, ", 1.1), ("sky", 1.4641), (".", 1.1),
    ]  # fmt: skip
    assert parse_prompt_attention("a BREAK b") == [("a", 1.0), ("BREAK", -1), ("b", 1.0)]


def test_lora_tags_are_extracted(caplog):
    text, loras = extract_loras("photo <lora:add_detail:0.4>, <lora:film> <hypernet:x:1>")
    assert text == "photo ,  "  # whitespace is kept, as in A1111; unknown networks are removed
    assert [(lora.name, lora.te_weight, lora.unet_weight) for lora in loras] == [
        ("add_detail", 0.4, 0.4),
        ("film", 1.0, 1.0),
    ]
    assert "<hypernet:x:1>" in caplog.text  # skipped with a warning, as A1111 does
    with pytest.raises(ValueError, match="bad LoRA weight"):
        extract_loras("<lora:x:heavy>")


def test_a1111_lora_syntax_te_and_unet_weights_and_lyco():
    """A1111's `<lora:name:te:unet>`, named `te=`/`unet=`, and `<lyco:...>` (an alias of lora)."""
    _, loras = extract_loras("<lora:a:0.8:0.5> <lora:b:unet=0.3> <lora:c:te=0:unet=1> <lyco:d:0.7>")
    assert [(lora.name, lora.te_weight, lora.unet_weight) for lora in loras] == [
        ("a", 0.8, 0.5),
        ("b", 1.0, 0.3),
        ("c", 0.0, 1.0),
        ("d", 0.7, 0.7),
    ]


def test_unknown_extra_networks_never_reach_the_encoder(clip_tokenizer, tiny_text_encoder):
    text, loras = extract_loras("a photo <hypernet:x:1> <lyco:y:0.7> <embedding:z>")
    assert loras[0].name == "y"
    encode_prompt_pair(clip_tokenizer, tiny_text_encoder, text)  # old code: "remove <lora" error


def test_chunks_wrap_75_tokens_in_bos_eos(clip_tokenizer):
    ((ids, weights),) = tokenize_chunks(clip_tokenizer, "a (cat:1.5)")
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407
    assert ids[1:3] == [320, 2368] and ids[3:] == [49407] * 74
    assert weights[1:3] == [1.0, 1.5] and set(weights[3:]) == {1.0}

    long = tokenize_chunks(clip_tokenizer, " ".join(["cat"] * 100))
    assert [len(ids) for ids, _ in long] == [77, 77]
    assert long[0][0][1:76] == [2368] * 75 and long[1][0][1:26] == [2368] * 25

    # the break moves back to the last comma when it is at most 20 tokens earlier
    text = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)
    first, second = tokenize_chunks(clip_tokenizer, text)
    assert first[0][71] == 267 and first[0][72:] == [49407] * 5  # comma, then padding
    assert second[0][1:11] == [1929] * 10

    assert len(tokenize_chunks(clip_tokenizer, "a BREAK b")) == 2


def test_embeddings_chunk_weight_and_pad(clip_tokenizer, tiny_text_encoder):
    enc = tiny_text_encoder
    short = encode_prompt_pair(clip_tokenizer, enc, "a cat", "")
    assert short.prompt_embeds.shape == (1, 77, 32) == short.negative_prompt_embeds.shape

    long = encode_prompt_pair(clip_tokenizer, enc, " ".join(["cat"] * 100), "ugly")
    assert long.prompt_embeds.shape == (1, 154, 32) == long.negative_prompt_embeds.shape
    empty = encode_prompt_pair(clip_tokenizer, enc, "", "").prompt_embeds
    assert torch.equal(long.negative_prompt_embeds[:, 77:], empty)  # padded with an empty chunk

    plain = encode_prompt_pair(clip_tokenizer, enc, "a cat").prompt_embeds
    assert torch.equal(encode_prompt_pair(clip_tokenizer, enc, "a (cat:1.0)").prompt_embeds, plain)
    weighted = encode_prompt_pair(clip_tokenizer, enc, "a (cat:1.5)").prompt_embeds
    assert not torch.allclose(weighted, plain)

    # SD's CLIP output has a clearly non-zero mean (large constant channels): give the random
    # encoder one, so that restoring the mean is observable.
    shifted = copy.deepcopy(enc)
    with torch.no_grad():
        shifted.final_layer_norm.bias.fill_(0.5)
    plain = encode_prompt_pair(clip_tokenizer, shifted, "a cat").prompt_embeds
    weighted = encode_prompt_pair(clip_tokenizer, shifted, "a (cat:1.5)").prompt_embeds
    assert not torch.allclose(weighted, plain)
    assert abs(plain.mean()) > 0.4
    assert torch.allclose(weighted.mean(), plain.mean(), atol=1e-5)  # mean restored
    # weights on a zero-mean random encoder must not blow up the mean restoration
    busy = "(a:1.4), ((b)), [c], (d:0.3), " * 12
    assert torch.isfinite(encode_prompt_pair(clip_tokenizer, enc, busy).prompt_embeds).all()
    with pytest.raises(ValueError, match="extract_loras"):
        encode_prompt_pair(clip_tokenizer, enc, "a <lora:x:1>")
