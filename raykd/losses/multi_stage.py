"""MTKD-SSR's three targets (Gou et al., IJCV 2023, eq. 3-9 and 12) as pure functions over per-stage
tensors, shallow to deep. Every KL is KL(target || learner) at a temperature, summed over classes and
averaged over the batch; `t_squared` multiplies it by T^2 (Hinton's scaling: eq. 3-5 have none, see
methods/mtkd_ssr.py for why it is on by default)."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32, kd_loss
from raykd.losses.pool import match_spatial


def stage_kl(learner: torch.Tensor, target: torch.Tensor, temperature: float, t_squared: bool = True) -> torch.Tensor:
    """KL(softmax(target/T) || softmax(learner/T)); the target is detached (it teaches, it does not learn)."""
    t = float(temperature)
    kl = kd_loss(learner, target.detach(), t)
    return kl if t_squared else kl / (t * t)


def srd_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], temperature: float,
             t_squared: bool = True) -> torch.Tensor:
    """eq. 3: sum over the K stages of KL(p^t_i || p^s_i) at T1, stage i of the teacher to stage i of the student."""
    return sum(stage_kl(s, t, temperature, t_squared) for s, t in zip(student, teacher, strict=True))


def review_pairs(stages: int, window: int | None = None,
                 direction: Literal["shallow_to_deep", "deep_to_shallow"] = "shallow_to_deep") -> list[tuple[int, int]]:
    """(target stage, learner stage) pairs, 0-based. Only the deepest `window` stages take part (None: all K).
    shallow_to_deep (eq. 5-6): each stage learns from every earlier one; deep_to_shallow (Table 9, as
    BYOT/SD): the deepest stage teaches every earlier one."""
    first = 0 if window is None else stages - window
    if first < 0 or stages - first < 2:
        raise ValueError(f"a review needs 2..{stages} stages, got a window of {window}")
    if direction == "deep_to_shallow":
        return [(stages - 1, j) for j in range(first, stages - 1)]
    return [(j, i) for i in range(first + 1, stages) for j in range(first, i)]


def review_loss(stage_logits: Sequence[torch.Tensor], pairs: Sequence[tuple[int, int]], temperature: float,
                t_squared: bool = True) -> torch.Tensor:
    """eq. 5-6 ("CRD"): sum over the pairs of KL(p_target || p_learner) at T2, the target detached."""
    return sum(stage_kl(stage_logits[learner], stage_logits[target], temperature, t_squared)
               for target, learner in pairs)


def channel_weights(feature: torch.Tensor) -> torch.Tensor:
    """eq. 8: [B, C] spatial mean of an activated [B, C, H, W] map (the squeeze of SE / channel distillation)."""
    return at_least_float32(feature).mean(dim=(2, 3))


def scd_loss(student_weights: Sequence[torch.Tensor], teacher_weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """eq. 7, 9: per stage, the squared difference of the channel weights averaged over batch and channels
    (B x D), summed over stages. The student's weights are in the teacher's channels already."""
    return sum(F.mse_loss(at_least_float32(s), at_least_float32(t).detach())
               for s, t in zip(student_weights, teacher_weights, strict=True))


def fd_loss(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """eq. 12 as a mean: per stage, the squared difference of the feature maps averaged over every element
    (eq. 12's plain squared norm grows with B x C x H x W and would swamp the other terms), summed over
    stages; the larger map is pooled to the smaller."""
    total = 0.0
    for s, t in zip(student_maps, teacher_maps, strict=True):
        s, t = match_spatial(at_least_float32(s), at_least_float32(t).detach())
        total = total + F.mse_loss(s, t)
    return total
