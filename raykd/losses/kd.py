"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, averaged over the batch.

    The T^2 factor keeps gradient magnitudes comparable across temperatures (Hinton, sec. 2).
    Half-precision logits are promoted to float32 so autocast does not lose the soft targets' tails.
    """
    t = float(temperature)
    log_p_s = F.log_softmax(at_least_float32(student_logits) / t, dim=1)
    log_p_t = F.log_softmax(at_least_float32(teacher_logits) / t, dim=1)
    kl = torch.sum(log_p_t.exp() * (log_p_t - log_p_s), dim=1)
    return kl.mean() * (t * t)
