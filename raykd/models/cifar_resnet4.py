"""Four-stage CIFAR ResNets (ResNet-18/34/50/101 with a 3x3 stride-1 stem and no max-pool), the backbones of
the PS-KD, CS-KD, BYOT and DTSKD tables (RepDistiller's resnetv2 layout), their SE variants
(squeeze-and-excitation on each residual branch, reduction 16, Hu et al. 2018), and DTSKD's "ResNeXt-18"
(its official models/resnext2_dtskd.py: no grouped convolutions; each block's first conv doubles the width)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from raykd.models.init import pooled
from raykd.models.output import ModelOutput
from raykd.models.registry import register_model


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Linear(c, c // reduction)
        self.fc2 = nn.Linear(c // reduction, c)

    def forward(self, x):
        w = self.fc2(F.relu(self.fc1(pooled(x)))).sigmoid()
        return x * w[:, :, None, None]


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, se: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SqueezeExcite(planes) if se else None
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.se is not None:
            out = self.se(out)
        return out + (x if self.shortcut is None else self.shortcut(x))


class DoubledBasic(Basic):
    """The DTSKD code's ResNeXt block: conv3x3 to 2x planes, conv3x3 back to planes (no groups)."""

    def __init__(self, cin: int, planes: int, stride: int, se: bool):
        super().__init__(cin, planes, stride, se)
        self.conv1 = nn.Conv2d(cin, 2 * planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * planes)
        self.conv2 = nn.Conv2d(2 * planes, planes, 3, 1, 1, bias=False)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, se: bool):
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.se = SqueezeExcite(cout) if se else None
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        if self.se is not None:
            out = self.se(out)
        return out + (x if self.shortcut is None else self.shortcut(x))


class CifarResNet4(nn.Module):
    def __init__(self, block, blocks: tuple[int, ...], num_classes: int = 100, se: bool = False,
                 in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin, stages = 64, []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            layer = []
            for j in range(n):
                layer.append(block(cin, planes, (1 if i == 0 else 2) if j == 0 else 1, se))
                cin = planes * block.expansion
            stages.append(nn.ModuleList(layer))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(cin, num_classes)
        self.stage_channels = tuple(p * block.expansion for p in (64, 128, 256, 512))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return residual_stages(self.stages, F.relu(self.bn1(self.conv1(x))), self.fc)


def residual_stages(stages, x, fc) -> ModelOutput:
    """Run stages of blocks that return their pre-activation; tap each stage's last block."""
    feats, pres = [], []
    for stage in stages:
        for block in stage:
            pre = block(x)
            x = F.relu(pre)
        feats.append(x)
        pres.append(pre)
    emb = pooled(x)
    return ModelOutput(fc(emb), tuple(feats), tuple(pres), emb)


_SPECS = {
    "cifar_resnet18": (Basic, (2, 2, 2, 2), False),
    "cifar_resnet34": (Basic, (3, 4, 6, 3), False),
    "cifar_resnet50": (Bottleneck, (3, 4, 6, 3), False),
    "cifar_resnet101": (Bottleneck, (3, 4, 23, 3), False),
    "resnext18_dtskd": (DoubledBasic, (2, 2, 2, 2), False),
    "seresnet18": (Basic, (2, 2, 2, 2), True),
    "seresnet34": (Basic, (3, 4, 6, 3), True),
}


def _make(block, blocks, se):
    def build(num_classes: int = 100, **kw):
        return CifarResNet4(block, blocks, num_classes, se=se, **kw)
    return build


for _name, _spec in _SPECS.items():
    register_model(_name)(_make(*_spec))
