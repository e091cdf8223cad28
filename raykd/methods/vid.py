"""Variational information distillation (Ahn et al., CVPR 2019): per stage pair a small conv net
predicts the teacher's features as a Gaussian mean with a learned per-channel variance; CE + 1 * VID
(CRD code: regressor width = teacher channels, initial variance 5)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from raykd.losses import vid_loss
from raykd.losses.pool import match_spatial
from raykd.methods.base import Distiller, MethodConfig, ce_loss
from raykd.methods.connectors import stage_pairs
from raykd.methods.registry import register_method


class VIDConfig(MethodConfig):
    name: Literal["vid"] = "vid"
    beta: float = Field(1.0, ge=0)
    init_variance: float = Field(5.0, gt=0)
    eps: float = Field(1e-5, gt=0)
    ce_weight: float = Field(1.0, ge=0)


def _regressor(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(), nn.Conv2d(cout, cout, 1, bias=False),
                         nn.ReLU(), nn.Conv2d(cout, cout, 1, bias=False))


@register_method
class VID(Distiller):
    name = "vid"
    Config = VIDConfig
    needs_teacher = True
    summary = "variational information distillation on every stage pair"
    source = "CRD code"

    def setup(self, ctx):
        self.pairs = stage_pairs(self.student, self.teacher)
        self.regressors = nn.ModuleList(_regressor(p.s_channels, p.t_channels) for p in self.pairs)
        # softplus(alpha) + eps = init_variance at the start
        alpha0 = math.log(math.expm1(self.cfg.init_variance - self.cfg.eps))
        self.log_scales = nn.ParameterList(nn.Parameter(torch.full((p.t_channels,), alpha0)) for p in self.pairs)

    def forward(self, batch):
        t = self.teacher_forward(batch["image"])
        s = self.student(batch["image"])
        vid = 0.0
        for k, p in enumerate(self.pairs):
            fs, ft = match_spatial(s.features[p.s], t.features[p.t])
            vid = vid + vid_loss(self.regressors[k](fs), self.log_scales[k], ft, self.cfg.eps)
        return s.logits, {"ce": self.cfg.ce_weight * ce_loss(s.logits, batch),
                          "vid": self.cfg.beta * vid}
