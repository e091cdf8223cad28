"""Variational information distillation (Ahn et al., CVPR 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32


def vid_loss(pred_mean: torch.Tensor, log_scale: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Gaussian negative log-likelihood of the teacher's features under the student's prediction,
    up to a constant: mean of 0.5 * ((mu - t)^2 / sigma^2 + log sigma^2), sigma^2 = softplus(alpha_c) + eps
    per channel (eq. 6)."""
    mu, t = at_least_float32(pred_mean), at_least_float32(target)
    var = (F.softplus(at_least_float32(log_scale)) + eps).view(1, -1, *([1] * (mu.dim() - 2)))
    return (0.5 * ((mu - t).pow(2) / var + var.log())).mean()
