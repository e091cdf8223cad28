"""Optimisers and a step-wise learning-rate schedule that is a pure function of the step.

Being a function of (step, steps_per_epoch) means resuming needs no scheduler state.
"""

from __future__ import annotations

import math

import torch

from raykd.config import OptimizerConfig, ScheduleConfig


def build_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def lr_at(step: int, steps_per_epoch: int, epochs: int, base_lr: float, cfg: ScheduleConfig) -> float:
    """Linear warm-up, then cosine / multistep (milestones in epochs, as in the papers) / constant."""
    total = max(1, epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if cfg.name == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return cfg.min_lr + 0.5 * (base_lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))
    if cfg.name == "multistep":
        epoch = step // max(1, steps_per_epoch)
        return base_lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return base_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
