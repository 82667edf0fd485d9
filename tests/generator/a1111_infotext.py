"""A1111's reading of an infotext ("parameters" PNG chunk), ported for the tests (A1111 is
AGPL-3.0 and no package of the registries installs it). Followed step by step:

- `parse_generation_parameters`, `unquote`, `re_param`, `re_imagesize`: modules/infotext_utils.py
  (the defaults it adds, with A1111's default options: styles ignored, no skipped fields);
- `txt2img_enable_hr`: modules/ui.py, the txt2img PasteField of `enable_hr`;
- `lora_infotext_pasted`: extensions-builtin/Lora/scripts/lora_script.py `infotext_pasted`
  (a `<lora:alias:` whose alias has a `Lora hashes` entry is replaced by the alias of the file
  on disk with that short hash).
"""

from __future__ import annotations

import json
import re

re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")
re_lora = re.compile("<lora:([^:]+):")


def unquote(text: str) -> str:
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def parse_generation_parameters(x: str) -> dict:
    res: dict = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False

    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""

    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt

    for k, v in re_param.findall(lastline):
        if v[0] == '"' and v[-1] == '"':
            v = unquote(v)
        m = re_imagesize.match(v)
        if m is not None:
            res[f"{k}-1"] = m.group(1)
            res[f"{k}-2"] = m.group(2)
        else:
            res[k] = v

    if "Clip skip" not in res:
        res["Clip skip"] = "1"
    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0
    defaults = {
        "Hires sampler": "Use same sampler",
        "Hires checkpoint": "Use same checkpoint",
        "Hires prompt": "",
        "Hires negative prompt": "",
        "Mask mode": "Inpaint masked",
        "Masked content": "original",
        "Inpaint area": "Whole picture",
        "Masked area padding": 32,
        "RNG": "GPU",
        "Schedule type": "Automatic",
    }
    for key, value in defaults.items():
        res.setdefault(key, value)
    return res


def txt2img_enable_hr(d: dict) -> bool:
    """Whether pasting into txt2img ticks "Hires. fix"."""
    return "Denoising strength" in d and (
        "Hires upscale" in d or "Hires upscaler" in d or "Hires resize-1" in d
    )


def lora_infotext_pasted(d: dict, on_disk: dict[str, str]) -> None:
    """`on_disk`: short hash (12 hex) -> alias of the LoRA file the user has."""
    hashes = d.get("Lora hashes")
    if not hashes:
        return
    pairs = [x.strip().split(":", 1) for x in hashes.split(",")]
    hashes = {x[0].strip().replace(",", ""): x[1].strip() for x in pairs}

    def network_replacement(m):
        alias = m.group(1)
        shorthash = hashes.get(alias)
        if shorthash is None:
            return m.group(0)
        network_on_disk = on_disk.get(shorthash)
        if network_on_disk is None:
            return m.group(0)
        return f"<lora:{network_on_disk}:"

    d["Prompt"] = re.sub(re_lora, network_replacement, d["Prompt"])
