"""MixSKD's training-only modules (Self-KD-Lib models/resnet_mixskd.py, methods/adversarial.py).

- Auxiliary branches: the official Auxiliary_Classifier gives stage i (every stage but the last) a branch that
  repeats the backbone's stages i+1..B with its own weights (same block type, same block counts, same widths) and
  its own classifier (an FC for ResNets; the VGG variant repeats VGG's 3-layer MLP). `build_branches` builds them
  with stage_branch's rebuild: `block: backbone` repeats the backbone's own blocks with its block counts
  (stage_branch.backbone_stages: ResNets, SE-ResNets, DTSKD's ResNeXt/SENet/VGG/ShuffleNetV2, WRN, torchvision
  ResNets), which for the official models is exactly the official branch; a backbone whose blocks are not known
  there gets one basic residual block per later stage. `block: basic` uses basic residual blocks (with the
  backbone's block counts where they are known, as DKS's field). DTSKD's VGG (VGGDTSKD) gets an MLP head like its
  classifier (Linear-ReLU-Linear-ReLU-Linear, hidden widths from the model), every other backbone an FC.
- Self-teacher (ResNet_Final_Auxiliary_Classifer): the B last-stage maps (B-1 branch outputs + the backbone's
  last stage) concatenated on channels, a bias-free 1x1 conv back to C, global pooling, an FC. No BN/ReLU.
- Discriminators (discriminatorLoss): per map, Linear(C, 128), ReLU, Linear(128, 2) on the pooled map.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from raykd.methods.stage_branch import HeadMaker, stage_branches, stage_layout
from raykd.models.init import pooled
from raykd.models.vgg_dtskd import VGGDTSKD
from raykd.models.video import frame_model


def mlp_head(hidden: Sequence[int]) -> HeadMaker:
    """(in_features, num_classes) -> Linear-ReLU per hidden width, then a Linear to the classes."""
    def make(cin: int, num_classes: int) -> nn.Module:
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(cin, h), nn.ReLU(inplace=True)]
            cin = h
        return nn.Sequential(*layers, nn.Linear(cin, num_classes))
    return make


def branch_head(model: nn.Module) -> HeadMaker | None:
    """The official branch classifier: VGG's MLP for DTSKD's VGG (MixSKD's VGG variant), else None (an FC)."""
    model = frame_model(model)
    if isinstance(model, VGGDTSKD):
        return mlp_head([m.out_features for m in model.classifier if isinstance(m, nn.Linear)][:-1])
    return None


def build_branches(model: nn.Module, shapes: Sequence[Sequence[int]], num_classes: int,
                   block: Literal["backbone", "basic"] = "backbone") -> nn.ModuleList:
    """One branch per stage but the last, rebuilding every later stage at the backbone's widths."""
    makers, counts = stage_layout(model, block, len(shapes))
    return stage_branches(shapes, list(range(len(shapes) - 1)), num_classes, counts, makers, head=branch_head(model))


class SelfTeacher(nn.Module):
    def __init__(self, channels: int, maps: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(channels * maps, channels, 1, bias=False)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fc(pooled(self.conv(torch.cat(list(maps), 1))))


def discriminator(channels: int, hidden: int = 128) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2))
