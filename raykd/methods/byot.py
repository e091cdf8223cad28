"""Be Your Own Teacher (Zhang et al., ICCV 2019): every shallow stage gets a head (strided convs up
to the deepest stage's shape, pooling, FC); the deepest classifier teaches them by KL at T 3 and its
pooled features by a masked L2 hint. Defaults are the official code's: loss coefficient 0.3 (shallow heads:
0.7 CE + 0.3 KL), feature coefficient 0.03, T 3. Heads are dropped at export (only `student` is saved).
The official KL is a soft-target CE without T^2; here KL without T^2 (same gradient). The hint acts,
as in the official code, on the pooled feature vectors (head output vs the deepest stage's); the
official sums it over the batch too, here it is averaged over samples so the weight ignores batch size."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from raykd.losses import kd_loss
from raykd.methods.base import Distiller, MethodConfig, probe
from raykd.methods.registry import register_method


class BYOTConfig(MethodConfig):
    name: Literal["byot"] = "byot"
    temperature: float = Field(3.0, gt=0)
    alpha: float = Field(0.3, ge=0, le=1, description="the official loss_coefficient")
    feature_weight: float = Field(0.03, ge=0)


def _head(c_in: int, h_in: int, c_out: int, h_out: int) -> nn.Sequential:
    steps = max(0, round(math.log2(h_in / h_out)))
    layers: list[nn.Module] = []
    if steps == 0:
        layers += [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    c = c_in
    for k in range(steps):
        nxt = c_out if k == steps - 1 else min(c * 2, c_out)
        layers += [nn.Conv2d(c, nxt, 3, 2, 1, bias=False), nn.BatchNorm2d(nxt), nn.ReLU(inplace=True)]
        c = nxt
    return nn.Sequential(*layers)


def masked_hint(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(f - t)^2 where either is active, summed per sample, batch mean (BYOT's feature loss)."""
    mask = ((f > 0) | (target > 0)).to(f)
    return ((f - target).pow(2) * mask).sum(1).mean()


@register_method
class BYOT(Distiller):
    name = "byot"
    Config = BYOTConfig
    summary = "self-distillation from the deepest classifier to heads on shallow stages"
    source = "BYOT official code"

    def setup(self, ctx):
        out = probe(self.student, ctx.image_shape)
        deep = out.features[-1]
        c, h = deep.shape[1], deep.shape[-1]
        self.heads = nn.ModuleList(_head(f.shape[1], f.shape[-1], c, h) for f in out.features[:-1])
        self.fcs = nn.ModuleList(nn.Linear(c, ctx.num_classes) for _ in out.features[:-1])

    def eval_heads(self, out):
        """Each shallow head's own prediction (DTSKD's Table 12 compares them with its branches)."""
        heads = zip(self.heads, self.fcs, out.features[:-1])
        return {f"branch{i}": fc(head(f).mean(dim=(2, 3))) for i, (head, fc, f) in enumerate(heads, start=1)}

    def forward(self, batch):
        out = self.student(batch["image"])
        labels, T, a = batch["label"], self.cfg.temperature, self.cfg.alpha
        deep_logits, deep_vec = out.logits.detach(), out.features[-1].mean(dim=(2, 3)).detach()
        ce = F.cross_entropy(out.logits, labels)
        kd = hint = 0.0
        for head, fc, f in zip(self.heads, self.fcs, out.features[:-1]):
            g = head(f).mean(dim=(2, 3))
            logits = fc(g)
            ce = ce + (1 - a) * F.cross_entropy(logits, labels)
            kd = kd + a * kd_loss(logits, deep_logits, T) / (T * T)
            hint = hint + self.cfg.feature_weight * masked_hint(g, deep_vec)
        return out.logits, {"ce": ce, "kd": kd, "feature": hint}
