"""Sun et al., "Deeply-supervised Knowledge Synergy" (CVPR 2019): the synergy loss, pairwise knowledge
matching between every two classifiers of a deeply supervised network."""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from raykd.losses.kd import at_least_float32, kd_loss

Pairs = Literal["all", "top_down", "bottom_up"]


def synergy_pairs(n: int, pairs: Pairs = "all") -> list[tuple[int, int]]:
    """(teacher, learner) index pairs among `n` classifiers ordered shallow to deep: `all` every ordered pair
    (the official dense matching, both directions), `top_down` each learns from the deeper ones only,
    `bottom_up` from the shallower ones only."""
    keep = {"all": lambda m, k: m != k, "top_down": lambda m, k: m > k, "bottom_up": lambda m, k: m < k}[pairs]
    return [(m, k) for m in range(n) for k in range(n) if keep(m, k)]


def synergy_loss(logits: Sequence[torch.Tensor], temperature: float = 1.0, pairs: Pairs = "all") -> torch.Tensor:
    """sum over (m, n) in `synergy_pairs` of T^2 * KL(softmax(z_m / T) || softmax(z_n / T)), batch mean.

    `logits`: each classifier's [B, C] logits, shallow to deep. Each target softmax is a constant (detached, as
    the official main.py's `KL_divergence(o2.detach(), o)`), so every term trains only its learner. With one
    classifier (no pair) the loss is zero."""
    total = at_least_float32(logits[0]).new_zeros(())
    for m, k in synergy_pairs(len(logits), pairs):
        total = total + kd_loss(logits[k], logits[m].detach(), temperature)
    return total
