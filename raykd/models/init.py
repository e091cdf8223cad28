"""Weight initialisation shared by the CIFAR backbones (He init, BN at identity, zero FC bias)."""

from __future__ import annotations

import math

from torch import nn


def he_init(model: nn.Module) -> None:
    """The RepDistiller/CRD init: conv weights ~ N(0, 2 / (k*k*out)), BN (1, 0), linear bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def pooled(x):
    """Global average pool to a [B, C] vector (the classifier's input)."""
    return x.mean(dim=(2, 3))
