"""One deterministic render of a (tiny) pipeline, shared by the ml and trainer tests."""

import numpy as np
import torch


def render(pipe, prompt: str, *, steps: int, size: int = 64, seed: int = 0, **kw) -> np.ndarray:
    out = pipe(
        prompt,
        num_inference_steps=steps,
        height=size,
        width=size,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **kw,
    )
    return out.images[0]
