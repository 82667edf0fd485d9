"""A1111's extra-network tags in prompts: `<lora:name:0.7>` is taken out of the text and returned
as a LoraRef; `<lora:name:te:unet>` (or named `te=` / `unet=`) gives the text encoder and the UNet
their own weights; `<lyco:...>` is the same as `<lora:...>` (A1111 >= 1.5 registers it as an
alias); tags of any other network (`<hypernet:x:1>`) are removed with a warning, as A1111's
extra_networks.py does ("Skipping unknown extra network"). No torch here: styles load it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
LORA_TAGS = ("lora", "lyco")


@dataclass(frozen=True)
class LoraRef:
    name: str
    te_weight: float  # text-encoder multiplier (A1111's `te`)
    unet_weight: float  # UNet multiplier (A1111's `unet`; defaults to te)


def extract_loras(prompt: str) -> tuple[str, list[LoraRef]]:
    """Remove every `<kind:...>` extra-network tag; return the text and the LoRA tags.

    A LoRA tag is `<lora:name[:te[:unet]]>` with optional named `te=` / `unet=` (A1111's
    extra_networks_lora): te defaults to 1.0, unet to te. Tags of other kinds are dropped with
    a warning. Raises ValueError naming the tag when a weight is not a number.
    """
    loras: list[LoraRef] = []

    def take(m: re.Match) -> str:
        kind, args = m.group(1), m.group(2).split(":")
        if kind not in LORA_TAGS:
            log.warning("skipping unknown extra network %r in the prompt", m.group(0))
            return ""
        positional = [a for a in args[1:] if "=" not in a]
        named = dict(a.split("=", 1) for a in args[1:] if "=" in a)
        try:
            te = float(named.get("te", positional[0] if positional else 1.0))
            unet = float(named.get("unet", positional[1] if len(positional) > 1 else te))
        except ValueError as exc:
            raise ValueError(f"bad LoRA weight in {m.group(0)!r}") from exc
        loras.append(LoraRef(args[0], te, unet))
        return ""

    return EXTRA_NETWORK.sub(take, prompt), loras
