"""Flow of Solution Procedure (Yim et al., CVPR 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from raykd.losses.kd import at_least_float32
from raykd.losses.pool import match_spatial


def fsp_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """G = F_a^T F_b / (h * w): [B, Ca, Cb] Gram between two layers (larger map pooled to the smaller)."""
    a, b = match_spatial(at_least_float32(a), at_least_float32(b))
    hw = a.shape[-1] * a.shape[-2]
    return torch.bmm(a.flatten(2), b.flatten(2).transpose(1, 2)) / hw


def fsp_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over consecutive-stage pairs of the mean squared difference of student and teacher FSP
    matrices. Channel counts must already agree (methods apply their connectors first)."""
    if len(student_feats) != len(teacher_feats) or len(student_feats) < 2:
        raise ValueError("fsp_loss needs the same number (>= 2) of student and teacher stages")
    total = 0.0
    for i in range(len(student_feats) - 1):
        g_s = fsp_matrix(student_feats[i], student_feats[i + 1])
        g_t = fsp_matrix(teacher_feats[i], teacher_feats[i + 1])
        total = total + (g_s - g_t).pow(2).mean()
    return total
