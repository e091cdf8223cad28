"""Cross-entropy against soft targets, and the progressive targets of PS-KD (Kim et al., ICCV 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-sum_c q_c log p_c, batch mean, for a target distribution q per row."""
    return -(targets * F.log_softmax(at_least_float32(logits), dim=1)).sum(1).mean()


def pskd_targets(labels: torch.Tensor, past_probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha_t) * onehot(y) + alpha_t * p_{t-1}(x): the model's own last-epoch prediction softens
    the label, more as training goes on (alpha_t = alpha_T * t / T, eq. 7)."""
    onehot = F.one_hot(labels, past_probs.shape[1]).to(past_probs)
    return (1.0 - alpha) * onehot + alpha * past_probs
