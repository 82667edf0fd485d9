"""Random LoRA snapshots for the trainer's checkpoint-choice tests."""

from __future__ import annotations

import torch


def random_snapshots(pipe, count: int = 3) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """`count` snapshots (step 10, 20, ...) of random weights for the LoRA already added to
    `pipe` (`lora.add_lora`), each seeded by its index: the shape of what training saves, with
    weights far enough apart that each snapshot renders other pictures."""
    from services.trainer import lora

    snapshots = []
    for k in range(count):
        torch.manual_seed(k)
        state = {key: torch.randn_like(v) * 0.5 for key, v in lora.lora_state(pipe).items()}
        snapshots.append((10 * (k + 1), state))
    return snapshots
