"""CIFAR VGG with batch norm (RepDistiller's vgg*_bn, registered as vgg8..vgg19 as in the CRD tables):
five conv blocks, max-pool between the first four, no pool before block 4 at 32x32, one FC."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from raykd.models.init import he_init, pooled
from raykd.models.output import ModelOutput
from raykd.models.registry import register_model

_CFG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _block(widths: list[int], cin: int) -> nn.Sequential:
    """conv-BN-ReLU per width, without the last ReLU (so the block output is the pre-activation)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        cin = w
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    def __init__(self, cfg: list[list[int]], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        cins = [in_channels] + [c[-1] for c in cfg[:-1]]
        self.blocks = nn.ModuleList(_block(c, cin) for c, cin in zip(cfg, cins))
        self.fc = nn.Linear(cfg[-1][-1], num_classes)
        self.stage_channels = tuple(c[-1] for c in cfg[1:])
        he_init(self)
        nn.init.normal_(self.fc.weight, 0, 0.01)

    def forward(self, x):
        h = x.shape[2]
        x = F.max_pool2d(F.relu(self.blocks[0](x)), 2)
        feats, pres = [], []
        for i, block in enumerate(self.blocks[1:], start=1):
            pre = block(x)
            x = F.relu(pre)
            feats.append(x)
            pres.append(pre)
            if i < 3 or (i == 3 and h >= 64):
                x = F.max_pool2d(x, 2)
        emb = pooled(x)
        return ModelOutput(self.fc(emb), tuple(feats), tuple(pres), emb)


def _make(cfg):
    def build(num_classes: int = 100, **kw):
        return VGG(cfg, num_classes, **kw)
    return build


for _name, _cfg in _CFG.items():
    register_model(_name)(_make(_cfg))
