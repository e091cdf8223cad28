"""The CIFAR MobileNetV2 of the CRD/DKD tables (RepDistiller's `mobile_half`: expansion 6, width 0.5,
stride-2 stem, 1280-wide head). Stage taps after block groups 1, 2, 4 and 6, as the reference."""

from __future__ import annotations

from torch import nn

from raykd.models.init import he_init, pooled
from raykd.models.output import ModelOutput
from raykd.models.registry import register_model


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(conv_bn_relu(cin, mid, 1), conv_bn_relu(mid, mid, 3, stride, groups=mid),
                                  nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    TAPS = (1, 2, 4, 6)

    def __init__(self, num_classes: int = 100, expand: int = 6, width: float = 0.5, in_channels: int = 3):
        super().__init__()
        setting = [(1, 16, 1, 1), (expand, 24, 2, 1), (expand, 32, 3, 2), (expand, 64, 4, 2),
                   (expand, 96, 3, 1), (expand, 160, 3, 2), (expand, 320, 1, 1)]
        cin = int(32 * width)
        self.stem = conv_bn_relu(in_channels, cin, 3, 2)
        groups = []
        for t, c, n, s in setting:
            cout = int(c * width)
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
            groups.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(groups)
        last = int(1280 * width) if width > 1.0 else 1280
        self.head = conv_bn_relu(cin, last, 1)
        self.fc = nn.Linear(last, num_classes)
        self.stage_channels = tuple(int(setting[i][1] * width) for i in self.TAPS)
        he_init(self)
        nn.init.normal_(self.fc.weight, 0, 0.01)

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for i, group in enumerate(self.blocks):
            x = group(x)
            if i in self.TAPS:
                feats.append(x)
        emb = pooled(self.head(x))
        # linear bottlenecks: the taps have no activation, so they are their own pre-activation
        return ModelOutput(self.fc(emb), tuple(feats), tuple(feats), emb)


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 100, **kw):
    return MobileNetV2(num_classes, **kw)
