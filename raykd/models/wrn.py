"""Wide ResNets (Zagoruyko & Komodakis 2016) as in the CRD/DKD CIFAR tables (RepDistiller's wrn.py).

Pre-activation blocks, so a stage's activation is the BN + ReLU that opens the next stage: `pre_features`
are the stage outputs through that BN (the reference's `preact=True` taps) and `features` their ReLU,
keeping the one contract every method reads (RepDistiller distils the raw block sums instead).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from raykd.models.init import he_init, pooled
from raykd.models.output import ModelOutput
from raykd.models.registry import register_model


class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(o))))
        # The reference's shortcut reads the activated input when shapes change, the raw one otherwise.
        return out + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.stages = nn.ModuleList(
            nn.Sequential(*[WideBlock(widths[s] if i == 0 else widths[s + 1], widths[s + 1],
                                      (1 if s == 0 else 2) if i == 0 else 1) for i in range(n)])
            for s in range(3)
        )
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self.stage_channels = tuple(widths[1:])
        he_init(self)

    def forward(self, x):
        x = self.conv1(x)
        raw = []
        for stage in self.stages:
            x = stage(x)
            raw.append(x)
        pres = (_peek_bn(self.stages[1][0].bn1, raw[0]), _peek_bn(self.stages[2][0].bn1, raw[1]), self.bn(raw[2]))
        feats = tuple(F.relu(p) for p in pres)
        emb = pooled(feats[-1])
        return ModelOutput(self.fc(emb), feats, pres, emb)


def _peek_bn(bn: nn.BatchNorm2d, x):
    """`bn(x)` without updating its running statistics (the block applies it again for real)."""
    use_batch = bn.training or bn.running_mean is None
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=use_batch,
                        momentum=0.0, eps=bn.eps)


def _make(depth, widen):
    def build(num_classes: int = 100, **kw):
        return WideResNet(depth, widen, num_classes, **kw)
    return build


for _d, _w in [(16, 1), (16, 2), (40, 1), (40, 2)]:
    register_model(f"wrn_{_d}_{_w}")(_make(_d, _w))
