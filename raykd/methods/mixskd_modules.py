"""MixSKD's training-only modules (Self-KD-Lib models/resnet_mixskd.py, methods/adversarial.py).

- Auxiliary branches: the official Auxiliary_Classifier gives stage i (every stage but the last) a branch that
  repeats the backbone's stages i+1..B with its own weights (same block type, same block counts) and its own
  classifier (an FC for ResNets; the VGG variant repeats VGG's 3-layer MLP). `replica_branches` builds exactly
  that, from fresh He-initialised copies of the later stages and of the classifier, for the backbones whose
  stages can be re-run one by one: CifarResNet4 (cifar_resnet*, seresnet18/34, resnext18_dtskd), SEResNetDTSKD,
  CifarResNet (resnet8..110, resnet8x4/32x4), VGGDTSKD and ShuffleNetV2DTSKD (whose 4th stage is conv5).
  Other backbones (the CRD zoo's VGG/ShuffleNets, MobileNets, WRN, torchvision) get the shared
  `stage_branch.stage_branches` rebuild from shapes (one basic residual block per later stage).
- Self-teacher (ResNet_Final_Auxiliary_Classifer): the B last-stage maps (B-1 branch outputs + the backbone's
  last stage) concatenated on channels, a bias-free 1x1 conv back to C, global pooling, an FC. No BN/ReLU.
- Discriminators (discriminatorLoss): per map, Linear(C, 128), ReLU, Linear(128, 2) on the pooled map.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raykd.methods.stage_branch import stage_branches
from raykd.models.cifar_resnet import CifarResNet
from raykd.models.cifar_resnet4 import CifarResNet4
from raykd.models.init import he_init, pooled
from raykd.models.seresnet_dtskd import SEResNetDTSKD
from raykd.models.shufflenetv2_dtskd import ShuffleNetV2DTSKD
from raykd.models.vgg_dtskd import VGGDTSKD

REPLICABLE = (CifarResNet4, SEResNetDTSKD, CifarResNet, VGGDTSKD, ShuffleNetV2DTSKD)


class _Stage(nn.Module):
    """One backbone stage, run the way its model runs it, returning the post-activation map.
    kind: blocks (residual blocks returning pre-activations), pair (returns (post, pre)), relu, plain."""

    def __init__(self, body: nn.Module, kind: str):
        super().__init__()
        self.body, self.kind = body, kind

    def forward(self, x):
        if self.kind == "blocks":
            for block in self.body:
                x = F.relu(block(x))
            return x
        if self.kind == "pair":
            return self.body(x)[0]
        return self.body(x).relu() if self.kind == "relu" else self.body(x)


def _stages_and_head(model: nn.Module) -> tuple[list[_Stage], nn.Module]:
    if isinstance(model, (CifarResNet4, SEResNetDTSKD)):
        return [_Stage(s, "blocks") for s in model.stages], model.fc
    if isinstance(model, CifarResNet):
        return [_Stage(s, "pair") for s in model.stages], model.fc
    if isinstance(model, VGGDTSKD):
        return [_Stage(s, "relu") for s in model.stages], model.classifier
    if isinstance(model, ShuffleNetV2DTSKD):
        return [*(_Stage(s, "plain") for s in model.stages), _Stage(model.conv5, "relu")], model.fc
    raise TypeError(f"{type(model).__name__} has no re-runnable stages")


class ReplicaBranch(nn.Module):
    """Stage `start`'s output -> fresh copies of the backbone's later stages and classifier -> (logits, last map)."""

    def __init__(self, stages: Sequence[nn.Module], head: nn.Module):
        super().__init__()
        self.stages = copy.deepcopy(nn.ModuleList(stages))
        self.head = copy.deepcopy(head)
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        he_init(self)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for stage in self.stages:
            f = stage(f)
        return self.head(pooled(f)), f


def replica_branches(model: nn.Module) -> nn.ModuleList:
    stages, head = _stages_and_head(model)
    return nn.ModuleList(ReplicaBranch(stages[i + 1:], head) for i in range(len(stages) - 1))


def build_branches(model: nn.Module, shapes: Sequence[Sequence[int]], num_classes: int, kind: str) -> nn.ModuleList:
    """One branch per stage but the last; `kind`: replica | rebuild | auto (replica where the backbone allows)."""
    if kind == "replica" or (kind == "auto" and isinstance(model, REPLICABLE)):
        return replica_branches(model)
    return stage_branches(shapes, list(range(len(shapes) - 1)), num_classes)


class SelfTeacher(nn.Module):
    def __init__(self, channels: int, maps: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(channels * maps, channels, 1, bias=False)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fc(pooled(self.conv(torch.cat(list(maps), 1))))


def discriminator(channels: int, hidden: int = 128) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2))
