"""Similarity-preserving KD (Tung & Mori, ICCV 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32


def similarity_matrix(feat: torch.Tensor) -> torch.Tensor:
    """Row-L2-normalised batch Gram matrix Q Q^T of flattened activations: [B, B]."""
    q = at_least_float32(feat).flatten(1)
    return F.normalize(q @ q.t(), dim=1)


def sp_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """||G_t - G_s||_F^2 / B^2 (eq. 4); channel and spatial sizes may differ between the two."""
    b = student_feat.shape[0]
    return (similarity_matrix(teacher_feat) - similarity_matrix(student_feat)).pow(2).sum() / (b * b)
