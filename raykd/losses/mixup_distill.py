"""MixSKD's losses (Yang et al., "MixSKD: Self-Knowledge Distillation from Mixup for Image Recognition",
ECCV 2022), as pure functions of tensors. The official code is Self-KD-Lib's main_mixskd_cifar.py.

With x~ = lam * x_i + (1 - lam) * x_j (j = perm[i]) and `mix(a) = lam * a + (1 - lam) * a[perm]`:

- `mixup_cross_entropy`: lam * CE(z, y) + (1 - lam) * CE(z, y[perm]) (its mixup_criterion);
- `mutual_kd_loss`: T^2 KL(sg p_a || p_b) + T^2 KL(sg p_b || p_a) at T, batch mean (two DistillKL calls, each
  with a detached target): the interpolated logits mix(z(x)) and the mixed image's z(x~) teach each other;
- `feature_mse`: mean over all elements of (a - b)^2 (F.mse_loss), neither side detached;
- `discriminator_bce`: BCE-with-logits of a 2-way discriminator that labels interpolated maps [1, 0] and
  mixed-image maps [0, 1] (methods/adversarial.py discriminatorLoss), mean over rows and both outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32, kd_loss


def mix(x: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * x + (1 - lam) * x[perm]: mixup of a batch with its permutation (inputs, logits or maps)."""
    return lam * x + (1.0 - lam) * x[perm]


def mixup_cross_entropy(logits: torch.Tensor, target: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * CE(logits, target) + (1 - lam) * CE(logits, target[perm]), batch mean. `target`: class indices
    [B] or probabilities [B, C] (soft labels)."""
    z = at_least_float32(logits)
    if target.is_floating_point():
        target = target.to(z.dtype)
    return lam * F.cross_entropy(z, target) + (1.0 - lam) * F.cross_entropy(z, target[perm])


def mutual_kd_loss(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(b/T) || softmax(a/T)) + T^2 KL(softmax(a/T) || softmax(b/T)); in each the target side is
    detached, so each set of logits learns from the other."""
    return kd_loss(a, b.detach(), temperature) + kd_loss(b, a.detach(), temperature)


def feature_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over every element (gradients reach both sides)."""
    return F.mse_loss(at_least_float32(a), at_least_float32(b))


def discriminator_bce(interpolated: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy (with logits) of a discriminator's 2 outputs: rows of `interpolated` [N, 2] have
    target [1, 0], rows of `mixed` [M, 2] target [0, 1]; mean over all (N + M) * 2 entries."""
    logits = torch.cat([at_least_float32(interpolated), at_least_float32(mixed)])
    target = torch.zeros_like(logits)
    target[: interpolated.shape[0], 0] = 1.0
    target[interpolated.shape[0]:, 1] = 1.0
    return F.binary_cross_entropy_with_logits(logits, target)
