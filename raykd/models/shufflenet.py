"""CIFAR ShuffleNet V1 (g=3) and V2 (1.0x) as in the CRD/DKD tables (RepDistiller's ShuffleV1/V2):
1x1 stem without pooling, three stages, taps at each stage's last block (pre-activation too)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raykd.models.init import pooled
from raykd.models.output import ModelOutput
from raykd.models.registry import register_model


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _bn_conv(cin, cout, k=1, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class V1Block(nn.Module):
    """Returns (output, pre-activation)."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        mid = cout // 4
        self.g1 = 1 if cin == 24 else groups
        self.stride = stride
        self.conv1 = _bn_conv(cin, mid, groups=self.g1)
        self.conv2 = _bn_conv(mid, mid, 3, stride, groups=mid)
        self.conv3 = _bn_conv(mid, cout, groups=groups)

    def forward(self, x):
        out = channel_shuffle(F.relu(self.conv1(x)), self.g1)
        out = self.conv3(F.relu(self.conv2(out)))
        if self.stride == 2:
            pre = torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1)
        else:
            pre = out + x
        return F.relu(pre), pre


class V2Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        half = c // 2
        self.conv1 = _bn_conv(half, half)
        self.conv2 = _bn_conv(half, half, 3, groups=half)
        self.conv3 = _bn_conv(half, half)

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        pre = self.conv3(self.conv2(F.relu(self.conv1(x2))))
        pre = channel_shuffle(torch.cat([x1, pre], 1), 2)  # same channel order as the output
        return F.relu(pre), pre


class V2Down(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.left = nn.Sequential(_bn_conv(cin, cin, 3, 2, groups=cin), _bn_conv(cin, mid), nn.ReLU(inplace=True))
        self.right = nn.Sequential(_bn_conv(cin, mid), nn.ReLU(inplace=True), _bn_conv(mid, mid, 3, 2, groups=mid),
                                   _bn_conv(mid, mid), nn.ReLU(inplace=True))

    def forward(self, x):
        out = channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)
        return out, out


def _run(blocks, x):
    pre = x
    for b in blocks:
        x, pre = b(x)
    return x, pre


class ShuffleNet(nn.Module):
    def __init__(self, stages: nn.ModuleList, stage_channels, head: nn.Module | None, width: int,
                 num_classes: int, in_channels: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True))
        self.stages = stages
        self.head = head
        self.fc = nn.Linear(width, num_classes)
        self.stage_channels = tuple(stage_channels)

    def forward(self, x):
        x = self.stem(x)
        feats, pres = [], []
        for stage in self.stages:
            x, pre = _run(stage, x)
            feats.append(x)
            pres.append(pre)
        emb = pooled(x if self.head is None else self.head(x))
        return ModelOutput(self.fc(emb), tuple(feats), tuple(pres), emb)


@register_model("shufflev1")
def shufflev1(num_classes: int = 100, in_channels: int = 3, groups: int = 3):
    outs, blocks = (240, 480, 960), (4, 8, 4)
    cin, stages = 24, []
    for cout, n in zip(outs, blocks):
        # the first block of a stage concatenates its pooled input, so its branch makes cout - cin
        stages.append(nn.ModuleList([V1Block(cin, cout - cin, 2, groups)] +
                                    [V1Block(cout, cout, 1, groups) for _ in range(n - 1)]))
        cin = cout
    return ShuffleNet(nn.ModuleList(stages), outs, None, outs[-1], num_classes, in_channels)


@register_model("shufflev2")
def shufflev2(num_classes: int = 100, in_channels: int = 3):
    outs, blocks = (116, 232, 464), (3, 7, 3)
    cin, stages = 24, []
    for cout, n in zip(outs, blocks):
        stages.append(nn.ModuleList([V2Down(cin, cout)] + [V2Block(cout) for _ in range(n)]))
        cin = cout
    head = nn.Sequential(nn.Conv2d(cin, 1024, 1, bias=False), nn.BatchNorm2d(1024), nn.ReLU(inplace=True))
    return ShuffleNet(nn.ModuleList(stages), outs, head, 1024, num_classes, in_channels)
