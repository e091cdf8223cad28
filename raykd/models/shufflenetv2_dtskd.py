"""ShuffleNetV2 (1.0x) of the DTSKD tables, as its official code defines it (models/shufflenetv2_dtskd.py,
from the pytorch-cifar100 collection): a 3x3 stem (conv+BN, no ReLU, no pool), three stages of
116/232/464 channels (4, 8 and 4 units, the first of each strided), a 1x1 conv to 1024 channels and an
FC. Convolutions carry biases. It differs from the CRD zoo's `shufflev2`, hence its own name.

Its four stages for distillation are the three unit stages and the 1024-channel conv (the official
DTSKD branches tap exactly these). The unit stages end in a concatenation of ReLU outputs, so they
have no separate pre-activation: their `pre_features` are the features themselves."""

from __future__ import annotations

import torch
from torch import nn

from raykd.models.init import pooled
from raykd.models.output import ModelOutput
from raykd.models.registry import register_model
from raykd.models.shufflenet import channel_shuffle


def _pw(cin, cout, relu=True):
    layers = [nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


def _dw(c, stride):
    return [nn.Conv2d(c, c, 3, stride, 1, groups=c), nn.BatchNorm2d(c)]


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.split = stride == 1 and cin == cout
        if self.split:  # half the channels pass through untouched
            half = cin // 2
            self.shortcut = nn.Identity()
            self.residual = nn.Sequential(*_pw(half, half), *_dw(half, 1), *_pw(half, half))
        else:
            self.shortcut = nn.Sequential(*_dw(cin, stride), *_pw(cin, cout // 2))
            self.residual = nn.Sequential(*_pw(cin, cin), *_dw(cin, stride), *_pw(cin, cout // 2))

    def forward(self, x):
        a, b = x.chunk(2, dim=1) if self.split else (x, x)
        return channel_shuffle(torch.cat([self.shortcut(a), self.residual(b)], 1), 2)


class ShuffleNetV2DTSKD(nn.Module):
    def __init__(self, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        widths, repeats = (116, 232, 464), (3, 7, 3)
        self.pre = nn.Sequential(nn.Conv2d(in_channels, 24, 3, padding=1), nn.BatchNorm2d(24))
        cin, stages = 24, []
        for w, r in zip(widths, repeats):
            stages.append(nn.Sequential(ShuffleUnit(cin, w, 2), *(ShuffleUnit(w, w, 1) for _ in range(r))))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.conv5 = nn.Sequential(*_pw(464, 1024, relu=False))
        self.fc = nn.Linear(1024, num_classes)
        self.stage_channels = widths + (1024,)

    def forward(self, x):
        x = self.pre(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        pre = self.conv5(x)
        x = pre.relu()
        emb = pooled(x)
        return ModelOutput(self.fc(emb), (*feats, x), (*feats, pre), emb)


@register_model("shufflev2_dtskd")
def shufflev2_dtskd(num_classes: int = 100, **kw):
    return ShuffleNetV2DTSKD(num_classes, **kw)
