"""Activation boundaries (Heo et al., AAAI 2019)."""

from __future__ import annotations

import torch

from raykd.losses.kd import at_least_float32


def ab_loss(student_pre: torch.Tensor, teacher_pre: torch.Tensor, margin: torch.Tensor | float) -> torch.Tensor:
    """Alternative (hinge-squared) loss on activation boundaries, summed over elements, batch mean.

    Where the teacher neuron is active (t > 0) the student's pre-activation is pushed above +m,
    where inactive below -m: (s - m)^2 [s <= m, t > 0] + (s + m)^2 [s > -m, t <= 0] (eq. 5).
    `margin` is a scalar or per-channel [C] tensor.
    """
    s, t = at_least_float32(student_pre), at_least_float32(teacher_pre)
    m = margin if not torch.is_tensor(margin) else margin.to(s).view(1, -1, *([1] * (s.dim() - 2)))
    on = (t > 0).to(s)
    loss = (s - m).pow(2) * ((s <= m).to(s) * on) + (s + m).pow(2) * ((s > -m).to(s) * (1 - on))
    return loss.sum() / s.shape[0]
