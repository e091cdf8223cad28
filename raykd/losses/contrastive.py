"""Contrastive representation distillation (Tian et al., ICLR 2020): the NCE objective."""

from __future__ import annotations

import torch


def crd_nce_loss(scores: torch.Tensor, noise_prob: float, eps: float = 1e-7) -> torch.Tensor:
    """NCE loss for [B, 1 + K] normalised scores (column 0 the positive pair, the rest K negatives drawn
    with probability `noise_prob` = 1/N each): -E[log h(pos)] - K E[log(1 - h(neg))], with
    h(x) = x / (x + K * noise_prob) (eq. 16-18). Summed over the K negatives, averaged over the batch."""
    k = scores.shape[1] - 1
    mpn = k * noise_prob
    pos, neg = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(pos / (pos + mpn + eps))
    log_d0 = torch.log(mpn / (neg + mpn + eps))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]
