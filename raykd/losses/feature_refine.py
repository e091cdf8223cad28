"""FRSKD (Ji et al., CVPR 2021): the classifier learns from its self-teacher's refined features and soft
labels (official code: classification/distill_loss/AT.py and KD.py). The self-teacher's side is a
target in both losses: it is detached here, as the official code detaches it."""

from __future__ import annotations

from typing import Sequence

import torch

from raykd.losses.attention import attention_map
from raykd.losses.kd import kd_loss


def refined_attention_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                           p: float = 2) -> torch.Tensor:
    """Sum over stages of mean((a(F_i) - a(T_i))^2), a(F) = L2-normalised, flattened mean over channels of
    F^p (attention transfer, p 2), T_i the self-teacher's refined map of stage i (detached). The maps
    must have equal spatial sizes (the self-teacher keeps each stage's); channels may differ."""
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"{len(student_feats)} student stages but {len(teacher_feats)} refined maps")
    total = 0.0
    for s, t in zip(student_feats, teacher_feats):
        if s.shape[-2:] != t.shape[-2:]:
            raise ValueError(f"a {tuple(s.shape[-2:])} student map against a {tuple(t.shape[-2:])} refined map")
        total = total + (attention_map(s, p) - attention_map(t.detach(), p)).pow(2).mean()
    return total


def self_teacher_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(t/T) || softmax(s/T)), summed over classes, batch mean; the self-teacher's logits t
    are detached (DistillKL: kl_div(reduction='sum') * T^2 / batch)."""
    return kd_loss(student_logits, teacher_logits.detach(), temperature)
