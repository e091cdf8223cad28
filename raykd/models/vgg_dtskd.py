"""The CIFAR VGG of the DTSKD tables, as its official code defines it (models/vgg.py and vgg_dtskd.py,
inherited from the PS-KD code): a 64-wide stem, four stages each closed by a max-pool (so the deepest
stage is 1x1 at 32 px), and a three-layer MLP classifier (512-512-classes) on the pooled last stage.
It differs from the CRD zoo's `vgg*` (one FC, no pool after the last block), so it has its own names.
VGG-16 is the official one; VGG-11 is not in the official code and uses the same layout with the
standard VGG-11 widths (one conv in the stem and first stage, two in each of the others)."""

from __future__ import annotations

from torch import nn

from raykd.models.init import pooled
from raykd.models.output import ModelOutput
from raykd.models.registry import register_model

# conv count of the stem (64) and of the stages (128, 256, 512, 512)
_DEPTHS = {"vgg11_dtskd": (1, 1, 2, 2, 2), "vgg16_dtskd": (2, 2, 3, 3, 3)}
_WIDTHS = (64, 128, 256, 512, 512)


def _stage(cin: int, width: int, n: int) -> nn.Sequential:
    """n x (conv3x3 with bias, BN, ReLU), then a 2x2 max-pool; the last ReLU is applied by the caller
    so the stage's pre-activation can be tapped (pooling commutes with ReLU)."""
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(cin if i == 0 else width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers[:-1], nn.MaxPool2d(2))


class VGGDTSKD(nn.Module):
    def __init__(self, depths: tuple[int, ...], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        cins = (in_channels,) + _WIDTHS[:-1]
        self.stem = _stage(cins[0], _WIDTHS[0], depths[0])
        self.stages = nn.ModuleList(_stage(c, w, n) for c, w, n in zip(cins[1:], _WIDTHS[1:], depths[1:]))
        self.classifier = nn.Sequential(nn.Linear(512, 512), nn.ReLU(True), nn.Linear(512, 512), nn.ReLU(True),
                                        nn.Linear(512, num_classes))
        self.stage_channels = _WIDTHS[1:]
        for m in self.modules():  # the official init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.stem(x).relu()
        feats, pres = [], []
        for stage in self.stages:
            pre = stage(x)
            x = pre.relu()
            feats.append(x)
            pres.append(pre)
        emb = pooled(x)
        return ModelOutput(self.classifier(emb), tuple(feats), tuple(pres), emb)


def _make(depths):
    def build(num_classes: int = 100, **kw):
        return VGGDTSKD(depths, num_classes, **kw)
    return build


for _name, _depths in _DEPTHS.items():
    register_model(_name)(_make(_depths))
