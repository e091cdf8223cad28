"""DTSKD's two self-teachers (Li et al., Pattern Recognition 2024, eq. 4-6) as pure functions.

Both use the official code's KL (utils/label_dynamic.py, KL_Loss / KL_Loss2): the target
distribution gets 1e-7 added (not renormalised) before the log, the result is scaled by T^2,
summed over classes and averaged over the batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32

EPS = 1e-7  # the official code's 10 ** (-7)


def kl_to_target(student_logits: torch.Tensor, target: torch.Tensor, temperature: float = 1.0,
                 eps: float = EPS) -> torch.Tensor:
    """T^2 * sum_c q'_c (log q'_c - log softmax(s / T)_c), batch mean, with q' = target + eps."""
    t = float(temperature)
    q = at_least_float32(target) + eps
    log_p = F.log_softmax(at_least_float32(student_logits) / t, dim=1)
    return (q * (q.log() - log_p)).sum(1).mean() * (t * t)


def structural_loss(branch_logits: Sequence[torch.Tensor], backbone_logits: torch.Tensor,
                    temperature: float = 4.0, detach: bool = False) -> torch.Tensor:
    """eq. 4: sum over the branches of KL(softmax(backbone / T) || softmax(branch / T)), T^2-scaled.
    The official code does not detach the backbone, so its logits also learn from the branches;
    `detach=True` makes the backbone a fixed teacher for this term."""
    teacher = at_least_float32(backbone_logits)
    teacher = F.softmax((teacher.detach() if detach else teacher) / float(temperature), dim=1)
    return sum(kl_to_target(b, teacher, temperature) for b in branch_logits)


def historical_loss(logits: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                    weights: Sequence[float]) -> torch.Tensor:
    """eq. 5: sum_b lambda_b KL(p'_b || p_b) at T 1, for the backbone (b = 0) and every branch, where
    p'_b is the label softened by the head's own last-epoch prediction (`history_targets`)."""
    return sum(w * kl_to_target(z, q) for z, q, w in zip(logits, targets, weights, strict=True))


def history_targets(onehot: torch.Tensor, past: torch.Tensor, beta: float) -> torch.Tensor:
    """eq. 6: p'_t = beta_t * y + (1 - beta_t) * p_{t-1}."""
    return beta * onehot + (1.0 - beta) * past
