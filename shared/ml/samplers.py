"""Samplers by their A1111 names (the names styles use), as diffusers schedulers: the generator's
stages and the trainer's validation renders pick them here."""

from __future__ import annotations


def make_scheduler(name: str, config):
    """The diffusers scheduler for an A1111 sampler name (a fresh object: schedulers hold state)."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    if name == "DPM++ 2M Karras":
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
        )
    table = {
        "Euler a": EulerAncestralDiscreteScheduler,
        "Euler": EulerDiscreteScheduler,
        "DDIM": DDIMScheduler,
        "UniPC": UniPCMultistepScheduler,
    }
    if name not in table:
        raise ValueError(f"unknown sampler {name!r}")
    return table[name].from_config(config)
