"""FRSKD's self-teacher: the BiFPNc of the official code (classification/models/bifpnc.py, utils.py), built
from the classifier's stage shapes so it fits any zoo model (3 or 4 stages, any widths and sizes).

Level i carries d_i = width * c_i channels (c_i: stage i's channels). With n stages, x_i the stage
outputs, "block" = DepthConvBlock (1x1: conv, BN, ReLU; 3x3: `depth` times [depthwise 3x3, pointwise
1x1, BN] with a ReLU between repeats, no ReLU at the end) and w the fast-normalised fusion weights
relu(w) / (sum relu(w) + 1e-6), one vector per node, initialised to ones:

    L_i  = lat(relu(x_i))                       1x1 block c_i -> d_i, every level
    L'_i = lat2(relu(x_i))                      1x1 block c_i -> d_i, levels 1..n-1
    P_{n-1} = L_{n-1};  P_i = up_conv_i(w0 relu(L_i) + w1 up_i(relu(P_{i+1})))          (top-down)
    N_0 = P_0;          N_i = down_conv_i(w0 relu(L'_i) + w1 relu(P_i) + w2 down_i(relu(N_{i-1})))
                        (the deepest level has no P term: w0 L' + w1 down)                 (bottom-up)
    refined features relu(N_i); logits = fc(avgpool(relu(N_{n-1})))

up_i = resample to level i, then 1x1 block d_{i+1} -> d_i; down_i = resample to level i, then 1x1
block d_{i-1} -> d_i. The official resamplers assume every stage halves the previous one (nearest
upsampling x2, 3x3/2 max-pool with TF "same" zero padding); those are used wherever two levels differ
by exactly 2x. Levels of equal size (the last two stages of vgg8 or shufflev2_dtskd) pass through
unchanged, and any other ratio uses nearest interpolation to the target size (up) or adaptive max-pool
(down): a choice of ours, the official code has no such models. `repeat` is fixed at the official 1
(the official BiFPNc cannot stack a second layer unless width is 1: its lateral convs expect c_i inputs).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raykd.models.init import pooled

EPS = 1e-6  # bifpnc.py: BiFPN_layer.epsilon


def depth_conv_block(cin: int, cout: int, kernel: int = 1, depth: int = 1) -> nn.Sequential:
    """The official DepthConvBlock (models/utils.py)."""
    if kernel == 1:
        return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
    layers: list[nn.Module] = []
    for k in range(depth):
        c = cin if k == 0 else cout
        if k:
            layers.append(nn.ReLU())
        layers += [nn.Conv2d(c, c, kernel, padding=kernel // 2, groups=c, bias=False),
                   nn.Conv2d(c, cout, 1, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers)


class Resample(nn.Module):
    """Maps a [B, C, h, w] map to the fixed size `dst` (decided once, from the probe shapes)."""

    def __init__(self, src: Sequence[int], dst: Sequence[int]):
        super().__init__()
        (sh, sw), (dh, dw) = tuple(src), tuple(dst)
        self.dst = (dh, dw)
        if (sh, sw) == (dh, dw):
            self.mode = "identity"
        elif (dh, dw) == (2 * sh, 2 * sw):
            self.mode = "up2"  # official: nn.Upsample(scale_factor=2, mode="nearest")
        elif (dh, dw) == (math.ceil(sh / 2), math.ceil(sw / 2)):
            self.mode = "pool2"  # official: MaxPool2dStaticSamePadding(3, 2)
            ph, pw = (dh - 1) * 2 - sh + 3, (dw - 1) * 2 - sw + 3
            self.pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        elif dh >= sh and dw >= sw:
            self.mode = "interpolate"
        else:
            self.mode = "adaptive_max"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "identity":
            return x
        if self.mode == "up2":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.mode == "pool2":
            return F.max_pool2d(F.pad(x, self.pad), 3, 2)
        if self.mode == "interpolate":
            return F.interpolate(x, size=self.dst, mode="nearest")
        return F.adaptive_max_pool2d(x, self.dst)

    def extra_repr(self) -> str:
        return f"{self.mode}, dst={self.dst}"


def _weights(w: torch.Tensor) -> torch.Tensor:
    w = F.relu(w)
    return w / (w.sum() + EPS)


class SelfTeacherBiFPN(nn.Module):
    """Refines the classifier's stage features [x_0 .. x_{n-1}] (shallow to deep) into features of the
    same spatial sizes with width * c_i channels, and classifies the deepest: forward -> (feats, logits)."""

    def __init__(self, shapes: Sequence[Sequence[int]], num_classes: int, width: int = 2, depth: int = 2):
        super().__init__()
        shapes = [tuple(s) for s in shapes]  # [C, H, W] per stage
        n = len(shapes)
        if n < 2:
            raise ValueError(f"the FRSKD self-teacher needs at least 2 stages, got {n}")
        c = [s[0] for s in shapes]
        d = [width * ci for ci in c]
        hw = [s[1:] for s in shapes]
        self.lat = nn.ModuleList(depth_conv_block(c[i], d[i]) for i in range(n))
        self.lat2 = nn.ModuleList(depth_conv_block(c[i], d[i]) for i in range(1, n))
        self.up = nn.ModuleList(nn.Sequential(Resample(hw[i + 1], hw[i]), depth_conv_block(d[i + 1], d[i]))
                                for i in range(n - 1))
        self.up_conv = nn.ModuleList(depth_conv_block(d[i], d[i], 3, depth) for i in range(n - 1))
        self.up_weight = nn.ParameterList(nn.Parameter(torch.ones(2)) for _ in range(n - 1))
        self.down = nn.ModuleList(nn.Sequential(Resample(hw[i - 1], hw[i]), depth_conv_block(d[i - 1], d[i]))
                                  for i in range(1, n))
        self.down_conv = nn.ModuleList(depth_conv_block(d[i], d[i], 3, depth) for i in range(1, n))
        self.down_weight = nn.ParameterList(nn.Parameter(torch.ones(3 if i < n - 1 else 2)) for i in range(1, n))
        self.fc = nn.Linear(d[-1], num_classes)
        self.channels = tuple(d)

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        n = len(self.lat)
        x = [F.relu(f) for f in feats]
        lat = [conv(f) for conv, f in zip(self.lat, x)]
        lat2 = [conv(f) for conv, f in zip(self.lat2, x[1:])]
        td = [lat[-1]]  # top-down path, deepest first
        for i in range(n - 2, -1, -1):
            w = _weights(self.up_weight[i])
            td.insert(0, self.up_conv[i](w[0] * F.relu(lat[i]) + w[1] * self.up[i](F.relu(td[0]))))
        out = [td[0]]  # bottom-up path
        for i in range(1, n):
            w = _weights(self.down_weight[i - 1])
            fused = w[0] * F.relu(lat2[i - 1])
            if i < n - 1:
                fused = fused + w[1] * F.relu(td[i]) + w[2] * self.down[i - 1](F.relu(out[-1]))
            else:
                fused = fused + w[1] * self.down[i - 1](F.relu(out[-1]))
            out.append(self.down_conv[i - 1](fused))
        refined = [F.relu(o) for o in out]
        logits = self.fc(pooled(refined[-1]))
        return refined, logits
