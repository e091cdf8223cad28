"""ReviewKD: distilling knowledge via knowledge review (Chen et al., CVPR 2021).

The student's stage maps plus its pooled embedding (as a [B, C, 1, 1] "stage", deepest) go through
attention-based fusion (ABF) modules from deep to shallow: each ABF maps its student level to a mid
width (1x1 conv + BN), fuses it with the residual coming from the deeper level (upsampled, nearest, to
this level's size) through two sigmoid attention maps from a 1x1 conv on their concatenation, and its
output (3x3 conv + BN to the teacher's width) is compared with the teacher's pre-activation map of that
level by the hierarchical context loss (raykd.losses.review.hcl_loss). Total
`ce_weight * CE + min(epoch / warmup_epochs, 1) * kd_loss_weight * HCL`, logged as `ce` and `review`.

Defaults, all from the official code (dvlab-research/ReviewKD, CIFAR-100/):
- kd_loss_weight 1.0, warmup_epochs 20, ce_weight 1.0: train.py (--kd-loss-weight, --kd-warm-up,
  --ce-loss-weight); per-pair weights (5 for resnet32x4 / wrn_40_2 teachers, 8 for shufflev2, 0.6 for
  resnet56 -> resnet20, 1 for resnet110 -> resnet32) come from script/reviewKD.sh, in conf/cifar100/reviewkd.
- Warm-up counts epochs from 0 as train.py does (`for epoch in range(epochs)`, `min(1, epoch / 20)`):
  the first epoch carries no review loss (mdistiller's port counts from 1, as our DKD does).
- max_mid_channel 512: ABF width `min(512, student embedding channels)` (model/reviewkd.py).
- student_preact False: the CIFAR ReviewKD module calls the student with `is_feat=True` and no
  `preact`, so it reads post-activation stage maps; the teacher is called with `preact=True` and its
  stem output dropped (`t_features[1:]`), so the targets are `pre_features` + embedding.
- ABF init as official: kaiming_uniform(a=1) on both convs, PyTorch defaults on the attention conv.

Mapping to raykd models: level k pairs student stage s with teacher stage t of
connectors.stage_pairs (aligned from the deepest when the stage counts differ), plus the embeddings.
Where maps differ in size, the ABF resizes its fused map to the teacher's size (nearest) before its
3x3 conv, and that resized map is the residual handed to the next shallower level, which resizes it to
its own size: exactly what build_review_kd's `shapes` / `out_shapes` do for its vgg8 <- ResNet50,
mobilenetv2 <- vgg13 / ResNet50 and shufflev1 / v2 <- resnet32x4 / wrn_40_2 pairs, here derived from
the maps at run time instead of tables (so 4-stage and ImageNet-sized models work unchanged).
Deviation: official WRN students hand over raw block sums (their `is_feat` taps); raykd's WRN exposes
only BN(sum) (`pre_features`) and its ReLU (`features`), so a WRN student uses `features` like every
other. The optional KL term of train.py (--use-kl, off in every official script) is not included.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from raykd.losses.review import hcl_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss, probe
from raykd.methods.connectors import stage_pairs
from raykd.methods.registry import register_method


class ReviewKDConfig(MethodConfig):
    name: Literal["reviewkd"] = "reviewkd"
    kd_loss_weight: float = Field(1.0, ge=0, description="weight of the HCL review loss (train.py)")
    warmup_epochs: float = Field(20.0, ge=0, description="linear warm-up of the review loss, epochs counted from 0")
    ce_weight: float = Field(1.0, ge=0)
    max_mid_channel: int = Field(512, gt=0, description="ABF width = min(this, student embedding channels)")
    student_preact: bool = Field(False, description="read the student's pre-activation maps (official CIFAR: no)")


class ABF(nn.Module):
    """Attention-based fusion: student level -> (fused with the deeper residual) -> teacher-shaped map."""

    def __init__(self, cin: int, mid: int, cout: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid))
        self.conv2 = nn.Sequential(nn.Conv2d(mid, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x, residual, out_size):
        """(output compared with the teacher, residual for the next shallower level)."""
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            att = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def _as_map(embedding: torch.Tensor) -> torch.Tensor:
    return embedding.flatten(1)[:, :, None, None]


@register_method
class ReviewKD(Distiller):
    name = "reviewkd"
    Config = ReviewKDConfig
    needs_teacher = True
    summary = "knowledge review: ABF-fused student levels, deep to shallow, vs teacher maps by pyramid MSE (HCL)"
    source = "ReviewKD official code: CIFAR-100/train.py (kd_loss_weight 1, warm-up 20 epochs), model/reviewkd.py"

    def setup(self, ctx):
        self.pairs = stage_pairs(self.student, self.teacher)
        s_emb = probe(self.student, ctx.image_shape).embedding.flatten(1).shape[1]
        t_emb = probe(self.teacher, ctx.image_shape).embedding.flatten(1).shape[1]
        mid = min(self.cfg.max_mid_channel, s_emb)
        cins = [p.s_channels for p in self.pairs] + [s_emb]
        couts = [p.t_channels for p in self.pairs] + [t_emb]
        # shallow to deep, like the levels; the deepest (the embedding) has nothing to fuse
        self.abfs = nn.ModuleList(ABF(ci, mid, co, fuse=k < len(cins) - 1)
                                  for k, (ci, co) in enumerate(zip(cins, couts)))

    def warmup_factor(self) -> float:
        """train.py counts epochs from 0: min(1, epoch / warm_up), so epoch 0 carries no review loss."""
        w = self.cfg.warmup_epochs
        return 1.0 if w == 0 else min(self.epoch / w, 1.0)

    def review(self, s, t) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The ABF outputs and the teacher maps they are compared with, shallow to deep."""
        s_maps = s.pre_features if self.cfg.student_preact else s.features
        xs = [s_maps[p.s] for p in self.pairs] + [_as_map(s.embedding)]
        targets = [t.pre_features[p.t] for p in self.pairs] + [_as_map(t.embedding)]
        outs, residual = [None] * len(xs), None
        for k in reversed(range(len(xs))):
            outs[k], residual = self.abfs[k](xs[k], residual, targets[k].shape[-2:])
        return outs, targets

    def forward(self, batch):
        t = self.teacher_forward(batch["image"])
        s = self.student(batch["image"])
        outs, targets = self.review(s, t)
        return s.logits, {"ce": self.cfg.ce_weight * ce_loss(s.logits, batch),
                          "review": self.warmup_factor() * self.cfg.kd_loss_weight * hcl_loss(outs, targets)}
