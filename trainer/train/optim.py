"""AdamW with Emotion-LLaMA's weight-decay groups, and its learning-rate schedules.

Weight decay applies to matrices only: biases, norms and every other 1-D
parameter get none (MiniGPT-v2's ``get_optimizer_params``). The schedule is a
``LambdaLR`` so its position travels in ``state_dict``: linear warm-up from
``warmup_lr`` to ``lr`` then cosine down to ``min_lr`` (stage 1: 1e-6 -> 1e-5 over
1000 steps, down to 1e-6), or constant (stage 2: 1e-6).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "lr_at"]


def build_optimizer(
    named_params: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, in two groups: decayed matrices, undecayed 1-D/bias/norm."""
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") or "norm" in name.lower() else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("no trainable parameter to optimise")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


def lr_at(
    step: int, schedule: str, lr: float, warmup_lr: float, min_lr: float, warmup_steps: int, total_steps: int
) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    Raises:
        ValueError: naming an unknown schedule.
    """
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"schedule {schedule!r} must be 'cosine' or 'constant'")
    if step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    lr: float,
    warmup_lr: float,
    min_lr: float,
    warmup_steps: int,
    total_steps: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following ``lr_at`` (the optimizer's base lr must be ``lr``)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_at(step, schedule, lr, warmup_lr, min_lr, warmup_steps, total_steps) / lr
    )
