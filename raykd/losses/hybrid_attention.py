"""Hybrid attention transfer (H-AT; Qu, Deng, Hu, PRCV 2020, pp. 249-260): spatial attention (AT, see
`raykd.losses.attention`) plus channel attention, as the official code computes them (somone23412/H-AT,
cifar_train.py: `at_loss`, `to_embedding`, `sim_loss`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.losses.attention import at_loss
from raykd.losses.kd import at_least_float32


def channel_attention(feat: torch.Tensor) -> torch.Tensor:
    """[B, C]: each channel's spatial mean (global average pooling), L2-normalised per sample
    (official `to_embedding(avg_pool(relu(bn(g))))`: its input is the activated map, our `features`)."""
    return F.normalize(at_least_float32(feat).mean(dim=(2, 3)), dim=1)


def channel_attention_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Batch mean of (1 - cos(a_s, a_t))^2 between the two channel attention vectors (official `sim_loss`).
    Needs equal channel counts (connect the student first); spatial sizes may differ."""
    if student_feat.shape[:2] != teacher_feat.shape[:2]:
        raise ValueError(f"channel_attention_loss needs equal batch and channel sizes (connect the student "
                         f"first), got {tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}")
    cos = (channel_attention(student_feat) * channel_attention(teacher_feat)).sum(dim=1)
    return (1 - cos).pow(2).mean()


def spatial_attention_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, p: float = 2) -> torch.Tensor:
    """AT's loss (official `at_loss`, identical to Zagoruyko & Komodakis with p 2): channels may differ."""
    return at_loss(student_feat, teacher_feat, p)
