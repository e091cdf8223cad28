"""MobileNetV1 (Howard et al. 2017), the ImageNet student of the CRD/DKD tables (ResNet-50 -> MobileNetV1):
a 3x3 stride-2 stem and 13 depthwise-separable blocks, 4.23M parameters at 1000 classes."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from raykd.errors import ConfigError
from raykd.models.init import pooled
from raykd.models.output import ModelOutput
from raykd.models.registry import register_model

# (out channels, stride) of each depthwise-separable block
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
_TAPS = (2, 4, 10, 12)  # last block at /4, /8, /16, /32


def _separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))  # last ReLU applied by the caller


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU(inplace=True))
        cin, blocks = 32, []
        for cout, stride in _BLOCKS:
            blocks.append(_separable(cin, cout, stride))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(1024, num_classes)
        self.stage_channels = tuple(_BLOCKS[i][0] for i in _TAPS)

    def forward(self, x):
        x = self.stem(x)
        feats, pres = [], []
        for i, block in enumerate(self.blocks):
            pre = block(x)
            x = F.relu(pre)
            if i in _TAPS:
                feats.append(x)
                pres.append(pre)
        emb = pooled(x)
        return ModelOutput(self.fc(emb), tuple(feats), tuple(pres), emb)


@register_model("mobilenet_v1")
def mobilenet_v1(num_classes: int = 1000, pretrained: bool = False, in_channels: int = 3):
    if pretrained:
        raise ConfigError("model_kwargs.pretrained: torchvision has no ImageNet weights for mobilenet_v1; "
                          "train it (or load your own checkpoint) instead.")
    return MobileNetV1(num_classes, in_channels)
