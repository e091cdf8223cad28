"""CIFAR ResNets (He et al. 2016) as used across the KD literature (CRD / DKD tables).

Layer for layer the reference architecture: 3x3 stem, three stages of basic blocks at strides
1, 2, 2, projection shortcuts (1x1 conv + BN) when shape changes, global pooling, one FC.
The only change is adaptive pooling, which gives identical results at 32x32 input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raykd.models.output import ModelOutput
from raykd.models.registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the pre-activation sum; the stage applies the last ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class Stage(nn.Module):
    def __init__(self, inplanes: int, planes: int, blocks: int, stride: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            [BasicBlock(inplanes if i == 0 else planes, planes, stride if i == 0 else 1) for i in range(blocks)]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for i, block in enumerate(self.blocks):
            pre = block(x)
            x = F.relu(pre)
        return x, pre


class CifarResNet(nn.Module):
    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.stages = nn.ModuleList(
            [
                Stage(widths[0], widths[1], n, 1),
                Stage(widths[1], widths[2], n, 2),
                Stage(widths[2], widths[3], n, 2),
            ]
        )
        self.fc = nn.Linear(widths[3], num_classes)
        self.stage_channels = tuple(widths[1:])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        x = F.relu(self.bn1(self.conv1(x)))
        feats, pres = [], []
        for stage in self.stages:
            x, pre = stage(x)
            feats.append(x)
            pres.append(pre)
        emb = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return ModelOutput(self.fc(emb), tuple(feats), tuple(pres), emb)


_SPECS = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}


def _make(depth, widths):
    def build(num_classes: int = 10, **kw) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes=num_classes, **kw)

    return build


for _name, (_depth, _widths) in _SPECS.items():
    register_model(_name)(_make(_depth, _widths))
