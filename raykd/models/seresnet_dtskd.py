"""SENet-34 of the DTSKD tables, as the official DTSKD code defines it (models/senet.py, from the
pytorch-cifar100 collection): convolutions with biases, a ReLU at the end of each residual branch
*before* squeeze-and-excitation (reduction 16), then the shortcut and a final ReLU. This differs from
the zoo's `seresnet34` (bias-free convs, SE on the pre-activation branch), hence its own name."""

from __future__ import annotations

from torch import nn

from raykd.models.cifar_resnet4 import residual_stages
from raykd.models.init import pooled
from raykd.models.registry import register_model


class SEBasic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, reduction: int = 16):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())
        self.excitation = nn.Sequential(nn.Linear(cout, cout // reduction), nn.ReLU(inplace=True),
                                        nn.Linear(cout // reduction, cout), nn.Sigmoid())

    def forward(self, x):
        r = self.residual(x)
        return r * self.excitation(pooled(r))[:, :, None, None] + self.shortcut(x)  # pre-activation


class SEResNetDTSKD(nn.Module):
    def __init__(self, blocks: tuple[int, ...], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        cin, stages = 64, []
        for i, (c, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            stages.append(nn.ModuleList(SEBasic(cin if j == 0 else c, c, (1 if i == 0 else 2) if j == 0 else 1)
                                        for j in range(n)))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(512, num_classes)
        self.stage_channels = (64, 128, 256, 512)

    def forward(self, x):
        return residual_stages(self.stages, self.pre(x), self.fc)


@register_model("seresnet34_dtskd")
def seresnet34_dtskd(num_classes: int = 100, **kw):
    return SEResNetDTSKD((3, 4, 6, 3), num_classes, **kw)
