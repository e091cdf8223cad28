"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32
from raykd.losses.pool import match_spatial


def attention_map(feat: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Spatial attention: mean over channels of |A|^p, flattened and L2-normalised per sample."""
    return F.normalize(at_least_float32(feat).abs().pow(p).mean(1).flatten(1), dim=1)


def at_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Mean squared difference of the two attention maps (the larger map pooled to the smaller first)."""
    s, t = match_spatial(student_feat, teacher_feat)
    return (attention_map(s, p) - attention_map(t, p)).pow(2).mean()
