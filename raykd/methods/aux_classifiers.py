"""TOFD's auxiliary classifiers (official models/resnet.py: `SepConv`, `auxiliary1..3`, `fc1..3`).

A stage's classifier is a chain of SepConvs that walks the network's own later stages: one SepConv per
stage transition j -> j+1, channels C_j -> C_{j+1}, so its output has the deepest stage's width (the
official ResNet-18 head on layer1 is 64 -> 128 -> 256 -> 512); then global average pooling (the
official AvgPool2d(4, 4) on the 4x4 last map of a CIFAR ResNet-18) gives the task-oriented feature,
and an FC its logits. Stride 2 where the next stage's map is smaller (every official transition),
1 where it is the same size (VGG's last stage, shufflev2_dtskd's): the sizes come from a probe, so any
zoo backbone works; pooling is global, so the map the chain ends on need not match the last stage's.
Init as official: Kaiming normal (fan_out, relu) on every conv, BN weight 1 / bias 0, default FC.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from raykd.models.init import pooled


class SepConv(nn.Sequential):
    """Depthwise k x k (stride s) -> 1x1 -> BN -> ReLU -> depthwise k x k -> 1x1 (c_in -> c_out) -> BN -> ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2, kernel_size: int = 3):
        pad = kernel_size // 2
        super().__init__(
            nn.Conv2d(c_in, c_in, kernel_size, stride, pad, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, kernel_size, 1, pad, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )


class AuxClassifier(nn.Module):
    """SepConv chain over `channels` (C_i, ..., C_K) with `strides` (one per transition), GAP, FC."""

    def __init__(self, channels: Sequence[int], strides: Sequence[int], num_classes: int):
        super().__init__()
        if len(strides) != len(channels) - 1 or len(strides) < 1:
            raise ValueError(f"an auxiliary classifier needs one stride per stage transition: {channels}, {strides}")
        self.convs = nn.Sequential(*(SepConv(a, b, s) for a, b, s in zip(channels[:-1], channels[1:], strides)))
        self.fc = nn.Linear(channels[-1], num_classes)
        self.feature_dim = int(channels[-1])
        for m in self.convs.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(task-oriented feature [B, C_K], logits [B, classes])."""
        feature = pooled(self.convs(x))
        return feature, self.fc(feature)


def stage_classifier(shapes: Sequence[Sequence[int]], stage: int, num_classes: int) -> AuxClassifier:
    """The auxiliary classifier on `stage` of a backbone whose stage maps have `shapes` [(C, H, W), ...]."""
    later = [tuple(s) for s in shapes[stage:]]
    channels = [c for c, _, _ in later]
    strides = [2 if b[1] < a[1] or b[2] < a[2] else 1 for a, b in zip(later[:-1], later[1:])]
    return AuxClassifier(channels, strides, num_classes)
