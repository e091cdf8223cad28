"""Activation boundaries (Heo et al., AAAI 2019), as the CRD benchmark runs it: an initialisation
stage (`phase: init`, a node of its own) trains the student's stages and 1x1 connectors so the signs
of their pre-activations match the teacher's (margin 1, deeper stages weighted 2^(i-n+1), scaled
3/1000 per sample); the next node starts from it with `init:` and trains with CE (or KD).
`phase: train` instead keeps the AB term next to CE for single-stage use."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import nn

from raykd.losses import ab_loss
from raykd.methods.base import Distiller, MethodConfig
from raykd.methods.connectors import conv_bn, stage_pairs
from raykd.methods.init_stage import InitStage
from raykd.methods.registry import register_method


class ABConfig(MethodConfig):
    name: Literal["ab"] = "ab"
    phase: Literal["init", "train"] = "init"
    margin: float = Field(1.0, gt=0)
    beta: float = Field(1.0, ge=0)
    ce_weight: float = Field(1.0, ge=0)


@register_method
class AB(InitStage, Distiller):
    name = "ab"
    Config = ABConfig
    needs_teacher = True
    summary = "activation boundaries on pre-activations; phase: init is the init stage"
    source = "CRD code (30 init epochs)"

    def setup(self, ctx):
        self.pairs = stage_pairs(self.student, self.teacher)
        self.connectors = nn.ModuleList(conv_bn(p.s_channels, p.t_channels) for p in self.pairs)
        n = len(self.pairs)
        self.weights = [2.0 ** (k - n + 1) for k in range(n)]

    def forward(self, batch):
        t = self.teacher_forward(batch["image"])
        s = self.student(batch["image"])
        ab = 0.0
        for k, p in enumerate(self.pairs):
            source = self.connectors[k](s.pre_features[p.s])
            target = t.pre_features[p.t]
            if source.shape[-2:] != target.shape[-2:]:
                source = F.adaptive_avg_pool2d(source, target.shape[-2:])
            ab = ab + self.weights[k] * ab_loss(source, target, self.cfg.margin) * 3 / 1000
        return self.phase_losses(s.logits, batch["label"], "ab", ab)
