"""Decoupled KD (Zhao et al., CVPR 2022): KD split into target-class (TCKD) and non-target (NCKD) parts."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
             alpha: float, beta: float, temperature: float) -> torch.Tensor:
    """alpha * TCKD + beta * NCKD, each T^2-scaled and averaged over the batch (no warm-up factor).

    TCKD = KL(b_t || b_s) over the binary split [p_target, 1 - p_target] at temperature T;
    NCKD = KL(p~_t || p~_s) over the non-target classes renormalised among themselves.
    """
    t = float(temperature)
    s, te = at_least_float32(student_logits) / t, at_least_float32(teacher_logits) / t
    gt = F.one_hot(target, s.shape[1]).bool()
    p_s, p_t = F.softmax(s, dim=1), F.softmax(te, dim=1)
    b_s = torch.stack([p_s[gt], (p_s * ~gt).sum(1)], dim=1)
    b_t = torch.stack([p_t[gt], (p_t * ~gt).sum(1)], dim=1)
    tckd = (b_t * (b_t.clamp_min(1e-12).log() - b_s.clamp_min(1e-12).log())).sum(1).mean()
    # non-target distributions: mask the target logit out before the softmax
    log_q_s = F.log_softmax(s.masked_fill(gt, float("-inf")), dim=1).masked_fill(gt, 0.0)
    log_q_t = F.log_softmax(te.masked_fill(gt, float("-inf")), dim=1).masked_fill(gt, 0.0)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).sum(1).mean()
    return (alpha * tckd + beta * nckd) * t * t
