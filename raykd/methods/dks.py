"""Deeply-supervised Knowledge Synergy (Sun, Yao, Zhou & Zhao, CVPR 2019): auxiliary classifiers on branches that
repeat the backbone's later building blocks (deep supervision), plus the synergy loss, dense pairwise knowledge
matching between every two classifiers in both directions:

    L = CE(backbone) + branch_ce_weight * sum_b CE(branch b) + synergy_weight * sum_{m != n} T^2 KL(p_m || p_n)

with p_m detached (a constant target; losses/synergy.py). Defaults are the official code's (sundw2014/DKS,
wrn_DKS/main.py `h()`): every CE and every KL term weight 1, no temperature (T 1), all ordered pairs.

Branches (official wrn_DKS/resnet.py, WRN's three groups of n blocks): `ep1` on group 0 rebuilds group 1 (n blocks)
and group 2 (n // 2 blocks); `ep2` on group 1 rebuilds group 2 (n blocks) at twice its width; each ends in BN,
ReLU, pooling and its own FC. Generalised here to B stages: branches on the two deepest non-final stages (B-3 and
B-2, i.e. conv3_x / conv4_x of a 4-stage ResNet, where DHM's DKS-style ImageNet ResNets and Self-KD-Lib's
CIFAR_ResNet18_dks put them); a branch on stage s rebuilds stages s+1..B-2 with the backbone's block counts and
the last stage with half of them (at least one), except the deepest branch (s = B-2), which rebuilds the last
stage with all its blocks at `width_multiplier` (2) times its width. At 32x32 the branches cost 0.69 GMACs on
cifar_resnet18 and 1.37G on resnext18_dtskd, DTSKD's Table 2 figures for DKS (ResNet-18 0.56G -> 1.25G, ResNeXt-18
1.11G -> 2.47G).

Choices where the sources are loose:
- Blocks (`block: backbone`) repeat the backbone's own building block (stage_branch.backbone_stages: ResNet basic /
  bottleneck / SE blocks, DTSKD's ResNeXt and SENet blocks, WRN blocks, ShuffleNetV2 units and its 1x1 conv5,
  VGG conv layers), as DKS "repeats the building blocks of the backbone" (DTSKD, Fig. 2); a backbone whose blocks
  are not known gets basic residual blocks, one per stage. `block: basic` forces basic blocks.
- The official KL adds 1e-8 to both distributions before the log; log-softmax makes that guard unnecessary. The
  paper writes the matching as a cross-entropy H(p_m, p_n); with p_m constant it has the same gradient as KL.
- `temperature` (T^2-scaled) is not in the official code; Self-KD-Lib's DKS uses its KL at T 4 instead.
- On VGG-16 the default layout gives 0.52 GMACs at 32x32, DTSKD's Table 2 says 0.45G, which this layout gives
  with `width_multiplier: 1`; the official rule (2x) is kept for every backbone.
The branches are training-only: `student` alone is exported; `eval_heads` reports each branch as
`branch<i>`, i the (1-based) stage it sits on, like BYOT's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from torch import nn

from raykd.errors import ConfigError
from raykd.losses.synergy import synergy_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss, probe
from raykd.methods.registry import register_method
from raykd.methods.stage_branch import StageBranch, stage_layout, stage_shapes
from raykd.models.video import frame_model


class DKSConfig(MethodConfig):
    name: Literal["dks"] = "dks"
    stages: tuple[int, ...] | None = Field(
        None, description="0-based stages that get a branch; default the two deepest non-final ones (official)")
    width_multiplier: float = Field(2.0, gt=0, description="width of the deepest branch's rebuilt last stage")
    block: Literal["backbone", "basic"] = Field("backbone", description="branch blocks: the backbone's own, or basic")
    branch_ce_weight: float = Field(1.0, ge=0, description="weight of each branch's CE (official 1)")
    synergy_weight: float = Field(1.0, ge=0, description="weight of each pairwise KL term (official 1)")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the matching (official: none, 1)")
    pairs: Literal["all", "top_down", "bottom_up"] = Field(
        "all", description="which classifiers teach which: all ordered pairs (official), deeper->shallower only, "
                           "or shallower->deeper only")

    @field_validator("stages")
    @classmethod
    def _distinct(cls, v):
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError(f"stages must be distinct stage indices, got {list(v)}")
        return None if v is None else tuple(sorted(v))


def default_stages(num_stages: int) -> tuple[int, ...]:
    return tuple(s for s in (num_stages - 3, num_stages - 2) if s >= 0)


def branch_plan(counts: list[int], widths: list[int], start: int, multiplier: float) -> tuple[list[int], list[int]]:
    """Blocks and widths of each stage for the branch on stage `start` (the official rule generalised)."""
    last = len(counts) - 1
    blocks, chans = list(counts), list(widths)
    if start == last - 1:
        chans[last] = 4 * max(1, round(widths[last] * multiplier / 4))
    else:
        blocks[last] = max(1, counts[last] // 2)
    return blocks, chans


@register_method
class DKS(Distiller):
    name = "dks"
    Config = DKSConfig
    summary = "auxiliary branches repeating the later stages, all classifiers matched pairwise (synergy loss)"
    source = ("DKS official code (sundw2014/DKS): wrn_DKS/main.py (CE and KL weights 1, T 1, all ordered pairs, "
              "targets detached), wrn_DKS/resnet.py (branches ep1/ep2, 2x width)")

    @classmethod
    def check_models(cls, cfg, student, teacher):
        k = len(frame_model(student).stage_channels)
        if k < 2:
            return f"dks attaches branches to stages before the last, so it needs 2 stages or more; this model has {k}."
        bad = [s for s in cfg.stages or () if not 0 <= s <= k - 2]
        if bad:
            return f"stages: {bad} out of range; branches go on stages 0..{k - 2} (0-based) of this {k}-stage model."
        return None

    def setup(self, ctx):
        cfg = self.cfg
        problem = self.check_models(cfg, self.student, None)
        if problem:
            raise ConfigError(f"method: {problem}")
        shapes = stage_shapes(probe(self.student, ctx.image_shape))
        makers, counts = stage_layout(self.student, cfg.block, len(shapes))
        self.starts = cfg.stages or default_stages(len(shapes))
        branches = []
        for s in self.starts:
            blocks, widths = branch_plan(counts, [c for c, _, _ in shapes], s, cfg.width_multiplier)
            branches.append(StageBranch(shapes, s, ctx.num_classes, blocks, makers, widths))
        self.branches = nn.ModuleList(branches)

    def eval_heads(self, out):
        return {f"branch{s + 1}": b(out.features[s])[0] for s, b in zip(self.starts, self.branches)}

    def forward(self, batch):
        out = self.student(batch["image"])
        heads = [b(out.features[s])[0] for s, b in zip(self.starts, self.branches)]
        cfg = self.cfg
        branch_ce = sum(ce_loss(z, batch) for z in heads) * cfg.branch_ce_weight
        synergy = synergy_loss([*heads, out.logits], cfg.temperature, cfg.pairs) * cfg.synergy_weight
        return out.logits, {"ce": ce_loss(out.logits, batch), "branch_ce": branch_ce, "synergy": synergy}
