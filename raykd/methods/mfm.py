"""DTSKD's auxiliary branches: B-1 classifiers on a B-stage backbone whose features are fused top-down
by the Mixed Fusion Module (Li et al. 2024, eq. 8), as the official code builds them
(models/resnet_dtskd.py and siblings):

- F_B is the globally pooled last stage (no lateral of its own).
- For b = B-1 .. 1: lateral f_t(T_b) = global pool, 1x1 conv, BN, ReLU (ShuffleNetV2 in the official
  code: 1x1 conv, BN, ReLU at full resolution first, then pool, then the same block again);
  top-down f_s(F_{b+1}) = 1x1 conv, BN, ReLU; then
  mixed:  F_b = fuse(cat(f_t(T_b) + f_s(F_{b+1}), f_s(F_{b+1})))   (fuse = 1x1 conv 2w -> w, BN, ReLU)
  concat: F_b = fuse(cat(f_t(T_b), f_s(F_{b+1})))                  (Table 8's UNet style)
  add:    F_b = f_t(T_b) + f_s(F_{b+1})                            (Table 8's FPN style: no fuse conv)
  none:   F_b = pool(1x1 conv, BN, ReLU of T_b), no top-down path  (Table 7's plain branches)
- Branch b's classifier is an FC on F_b. Nothing is detached: the branches' gradients reach the
  backbone through the laterals and through the pooled last stage.

Widths: the official code fuses every level at the last stage's width (512 for ResNet-18),
`width: constant`. The paper's text has the merge conv "halve the channels to C_{b+1}", so
`width: pyramid` gives level b the channels of stage b+1. The 1x1 convs on pooled (1x1) maps are
Linear layers here (the same parameters and arithmetic, without the conv overhead).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from raykd.models.init import pooled


def _block(cin: int, cout: int) -> nn.Sequential:
    """A 1x1 conv block on pooled vectors: Linear (no bias), BN, ReLU."""
    return nn.Sequential(nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Lateral(nn.Module):
    """f_t: stage map [N, C, H, W] -> vector [N, w]."""

    def __init__(self, cin: int, width: int, kind: Literal["pool_conv", "conv_pool_conv", "conv_pool"]):
        super().__init__()
        self.full = _conv_block(cin, width) if kind != "pool_conv" else None
        self.vec = _block(width if self.full is not None else cin, width) if kind != "conv_pool" else None

    def forward(self, x):
        if self.full is not None:
            x = self.full(x)
        x = pooled(x)
        return self.vec(x) if self.vec is not None else x


class MixedFusionBranches(nn.Module):
    def __init__(self, stage_channels: Sequence[int], num_classes: int, *, mode: str = "mixed",
                 width: str = "constant", lateral: str = "pool_conv", branches: Sequence[int] | None = None):
        super().__init__()
        channels = tuple(stage_channels)
        levels = len(channels) - 1  # B-1 branches, numbered 1 (shallowest) .. B-1
        self.branches = tuple(sorted(branches)) if branches else tuple(range(1, levels + 1))
        if levels < 1 or any(not 1 <= b <= levels for b in self.branches):
            raise ValueError(f"branches must lie in 1..{levels} for a backbone of {len(channels)} stages, "
                             f"got {list(self.branches)}")
        self.mode = mode
        # width of F_b, b = 1..B (F_B: the pooled last stage)
        self.widths = {b: channels[-1] if width == "constant" else channels[min(b, levels)] for b in range(1, levels + 1)}
        self.widths[levels + 1] = channels[-1]
        lowest = min(self.branches)
        built = self.branches if mode == "none" else range(lowest, levels + 1)  # top-down needs every level above
        kind = "conv_pool" if mode == "none" else lateral
        self.laterals = nn.ModuleDict({str(b): Lateral(channels[b - 1], self.widths[b], kind) for b in built})
        if mode != "none":
            self.topdown = nn.ModuleDict({str(b): _block(self.widths[b + 1], self.widths[b]) for b in built})
        if mode in ("mixed", "concat"):
            self.fuse = nn.ModuleDict({str(b): _block(2 * self.widths[b], self.widths[b]) for b in built})
        self.fcs = nn.ModuleDict({str(b): nn.Linear(self.widths[b], num_classes) for b in self.branches})

    def fused(self, features: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
        """F_b for every built level b (the inputs of the branch classifiers)."""
        out: dict[int, torch.Tensor] = {}
        if self.mode == "none":
            return {b: self.laterals[str(b)](features[b - 1]) for b in self.branches}
        top = pooled(features[-1])
        for b in range(len(features) - 1, min(self.branches) - 1, -1):
            up = self.topdown[str(b)](top)
            lat = self.laterals[str(b)](features[b - 1])
            if self.mode == "mixed":
                top = self.fuse[str(b)](torch.cat([lat + up, up], 1))
            elif self.mode == "concat":
                top = self.fuse[str(b)](torch.cat([lat, up], 1))
            else:  # add
                top = lat + up
            out[b] = top
        return out

    def forward(self, features: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
        """Branch number -> logits, shallowest first."""
        fused = self.fused(features)
        return {b: self.fcs[str(b)](fused[b]) for b in self.branches}
