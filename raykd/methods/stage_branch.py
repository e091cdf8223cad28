"""Auxiliary branches that repeat the backbone's later stages (DKS, MixSKD, ONE-style heads).

DKS and MixSKD attach to stage i a branch that rebuilds stages i+1..B of the backbone with its own weights,
then pools and classifies. raykd's zoo does not expose a uniform "run stage j" interface (VGG stages start
with a pool, ShuffleNet stages with a split, ResNet stages return pre-activations), so a branch is built
from shapes alone: for every later stage j, `blocks[j]` blocks reaching stage j's width (or `widths[j]`), the
first with the stride that takes stage j-1's map to stage j's size, each stage ending post-activation.

The block is by default a residual basic block (3x3 conv, BN, ReLU, 3x3 conv, BN, projection shortcut, ReLU).
`backbone_stages(model)` instead gives, for the zoo models whose building blocks it knows, a maker per stage that
repeats the backbone's *own* block (CIFAR/torchvision ResNet basic and bottleneck blocks, their SE variants,
DTSKD's doubled basic block, pre-activation WRN blocks, ShuffleNetV2 units and its 1x1 conv5, VGG conv layers),
and each stage's block count. Basic blocks make absurd branches on other backbones (DKS's layout, CIFAR-100:
cifar_resnet50 965M parameters with basic blocks against 68M with its own bottlenecks, shufflev2_dtskd 76M against
2.2M, vgg16_dtskd 71M against 32M).

A branch ends in global pooling and a head, `head(in_features, num_classes)`: an FC by default; MixSKD gives DTSKD's
VGG a 3-layer MLP like its classifier.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raykd.models.cifar_resnet import BasicBlock as CifarBasic
from raykd.models.cifar_resnet4 import Basic, Bottleneck
from raykd.models.init import he_init, pooled
from raykd.models.seresnet_dtskd import SEBasic
from raykd.models.shufflenetv2_dtskd import ShuffleNetV2DTSKD, ShuffleUnit
from raykd.models.vgg_dtskd import VGGDTSKD
from raykd.models.video import frame_model
from raykd.models.wrn import WideBlock

# (c_in, c_out, stride, blocks) -> one rebuilt stage whose output is post-activation
StageMaker = Callable[[int, int, int, int], nn.Module]
# (in_features, num_classes) -> the classifier on the pooled last map
HeadMaker = Callable[[int, int], nn.Module]


class _Block(Basic):
    """A basic residual block with its output ReLU (the stage outputs raykd taps are post-activation)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(cin, cout, stride, se=False)

    def forward(self, x):
        return F.relu(super().forward(x))


class _Relu(nn.Module):
    """A block returning its pre-activation sum, followed by the ReLU its stage applies."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        return F.relu(self.block(x))


def residual_stage(block: Callable[[int, int, int], nn.Module]) -> StageMaker:
    """A stage of `blocks` blocks `block(c_in, c_out, stride)`, the first strided."""
    def make(cin: int, cout: int, stride: int, blocks: int) -> nn.Module:
        return nn.Sequential(*(block(cin if k == 0 else cout, cout, stride if k == 0 else 1) for k in range(blocks)))
    return make


basic_stage = residual_stage(_Block)


def plain_stage(cin: int, cout: int, stride: int, blocks: int) -> nn.Module:
    """VGG's stage: `blocks` x (3x3 conv with bias, BN, ReLU), then a max-pool by `stride`."""
    layers: list[nn.Module] = []
    for k in range(blocks):
        layers += [nn.Conv2d(cin if k == 0 else cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *([nn.MaxPool2d(stride)] if stride > 1 else []))


def pointwise_stage(cin: int, cout: int, stride: int, blocks: int) -> nn.Module:
    """`blocks` x (1x1 conv with bias, BN, ReLU), the first strided (ShuffleNetV2's conv5)."""
    layers: list[nn.Module] = []
    for k in range(blocks):
        layers += [nn.Conv2d(cin if k == 0 else cout, cout, 1, stride if k == 0 else 1), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _wide_stage(cin: int, cout: int, stride: int, blocks: int) -> nn.Module:
    """Pre-activation WRN blocks closed by BN + ReLU (as WRN closes its last stage), so the output is activated."""
    body = residual_stage(WideBlock)(cin, cout, stride, blocks)
    return nn.Sequential(*body, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _torchvision_block(cls, cin: int, cout: int, stride: int) -> nn.Module:
    planes = cout // cls.expansion
    down = None
    if stride != 1 or cin != cout:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    return cls(cin, planes, stride, down)


def _residual_maker(block: nn.Module) -> Callable[[int, int, int], nn.Module] | None:
    """How to build more blocks like `block` (output post-activation), or None for an unknown block."""
    if isinstance(block, (Basic, Bottleneck)):  # Basic covers DoubledBasic; both return the pre-activation
        cls, se = type(block), block.se is not None
        return lambda cin, cout, s: _Relu(cls(cin, cout // cls.expansion, s, se))
    if isinstance(block, (SEBasic, CifarBasic)):
        cls = type(block)
        return lambda cin, cout, s: _Relu(cls(cin, cout, s))
    if isinstance(block, ShuffleUnit):
        return ShuffleUnit
    try:
        from torchvision.models.resnet import BasicBlock as TVBasic, Bottleneck as TVBottleneck
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    if isinstance(block, (TVBasic, TVBottleneck)):
        return partial(_torchvision_block, type(block))
    return None


def _blocks_of(stage: nn.Module) -> list[nn.Module]:
    if hasattr(stage, "blocks"):
        return list(stage.blocks)
    return list(stage) if isinstance(stage, (nn.Sequential, nn.ModuleList)) else []


def backbone_stages(model: nn.Module) -> list[tuple[StageMaker, int]] | None:
    """(maker, block count) for each stage of `model` (a clip model's frame backbone), repeating the backbone's
    own building block; None when the model's blocks are not known here (use basic blocks then)."""
    model = frame_model(model)
    if isinstance(model, VGGDTSKD):
        return [(plain_stage, sum(isinstance(m, nn.Conv2d) for m in s)) for s in model.stages]
    if isinstance(getattr(model, "net", None), nn.Module) and hasattr(model.net, "layer4"):  # torchvision ResNet
        stages = [getattr(model.net, f"layer{i}") for i in (1, 2, 3, 4)]
    else:
        stages = list(getattr(model, "stages", None) or [])
    if not stages:
        return None
    out: list[tuple[StageMaker, int]] = []
    for stage in stages:
        blocks = _blocks_of(stage)
        if blocks and all(isinstance(b, WideBlock) for b in blocks):
            out.append((_wide_stage, len(blocks)))
            continue
        make = _residual_maker(blocks[0]) if blocks else None
        if make is None or not all(type(b) is type(blocks[0]) for b in blocks):
            return None
        out.append((residual_stage(make), len(blocks)))
    if isinstance(model, ShuffleNetV2DTSKD):  # its fourth stage is the 1x1 conv to 1024 channels
        out.append((pointwise_stage, 1))
    return out if len(out) == len(model.stage_channels) else None


def stage_layout(model: nn.Module, block: str, num_stages: int) -> tuple[list[StageMaker] | StageMaker, list[int]]:
    """(makers, block counts) of a rebuild of `model`'s stages: `block` "backbone" repeats its own blocks where
    `backbone_stages` knows them, "basic" uses basic blocks at its block counts; unknown models get one basic
    block per stage."""
    known = backbone_stages(model)
    counts = [n for _, n in known] if known else [1] * num_stages
    makers = [m for m, _ in known] if known and block == "backbone" else basic_stage
    return makers, counts


class StageBranch(nn.Module):
    """Stage `start`'s output -> rebuilt stages start+1..B -> (logits, last map).

    `stages`: the maker of every stage (one for all, or one per stage; basic blocks by default);
    `widths`: the channels of every stage (default: the backbone's, from `shapes`);
    `head`: the classifier's maker (default: an FC)."""

    def __init__(self, shapes: Sequence[Sequence[int]], start: int, num_classes: int, blocks: Sequence[int],
                 stages: StageMaker | Sequence[StageMaker] | None = None, widths: Sequence[int] | None = None,
                 head: HeadMaker | None = None):
        super().__init__()
        makers = [stages or basic_stage] * len(shapes) if stages is None or callable(stages) else list(stages)
        chans = [s[0] for s in shapes] if widths is None else list(widths)
        if len(makers) != len(shapes) or len(chans) != len(shapes):
            raise ValueError(f"stages/widths need one entry for each of the {len(shapes)} stages")
        layers: list[nn.Module] = []
        for j in range(start + 1, len(shapes)):
            h_prev, h = shapes[j - 1][1], shapes[j][1]
            stride = max(1, round(h_prev / h))
            if blocks[j] < 1:
                raise ValueError(f"stage {j} needs at least one block in a branch from stage {start}, not {blocks[j]}")
            layers.append(makers[j](chans[j - 1] if j > start + 1 else shapes[start][0], chans[j], stride, blocks[j]))
        self.body = nn.Sequential(*layers)
        self.fc = (head or nn.Linear)(chans[-1], num_classes)
        he_init(self)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.body(f)
        return self.fc(pooled(m)), m


def stage_branches(shapes: Sequence[Sequence[int]], starts: Sequence[int], num_classes: int,
                   blocks: int | Sequence[int] = 1,
                   stages: StageMaker | Sequence[StageMaker] | None = None,
                   head: HeadMaker | None = None) -> nn.ModuleList:
    """One StageBranch per start stage (0-based; each before the last stage). `blocks`: per stage, or one
    number for every stage; `stages` and `head`: as StageBranch's (basic blocks and an FC by default)."""
    per_stage = [blocks] * len(shapes) if isinstance(blocks, int) else list(blocks)
    if len(per_stage) != len(shapes):
        raise ValueError(f"blocks has {len(per_stage)} entries for {len(shapes)} stages")
    for s in starts:
        if not 0 <= s < len(shapes) - 1:
            raise ValueError(f"a branch must start before the last of the {len(shapes)} stages, not at {s}")
    return nn.ModuleList(StageBranch(shapes, s, num_classes, per_stage, stages, head=head) for s in starts)


def stage_shapes(out) -> list[tuple[int, int, int]]:
    """[C, H, W] of each stage of a probed `ModelOutput`."""
    return [tuple(f.shape[1:]) for f in out.features]
