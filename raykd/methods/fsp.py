"""FSP (Yim et al., CVPR 2017): the student learns the teacher's flow between consecutive stages.
As in the paper and the CRD code, it is an initialisation stage (`phase: init`, its own node; the
next node starts from it with `init:`); `phase: train` keeps it next to CE (weight 50 in CRD's
scripts). 1x1 connectors map student channels to the teacher's where they differ (DESIGN)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from raykd.losses import fsp_loss
from raykd.methods.base import Distiller, MethodConfig
from raykd.methods.connectors import conv_bn, stage_pairs
from raykd.methods.init_stage import InitStage
from raykd.methods.registry import register_method


class FSPConfig(MethodConfig):
    name: Literal["fsp"] = "fsp"
    phase: Literal["init", "train"] = "init"
    beta: float = Field(50.0, ge=0)
    ce_weight: float = Field(1.0, ge=0)


@register_method
class FSP(InitStage, Distiller):
    name = "fsp"
    Config = FSPConfig
    needs_teacher = True
    summary = "flow of solution procedure between stages; phase: init is the init stage"
    source = "CRD code (30 init epochs); connectors per DESIGN.md"

    def setup(self, ctx):
        self.pairs = stage_pairs(self.student, self.teacher)
        self.connectors = nn.ModuleList(
            nn.Identity() if p.s_channels == p.t_channels else conv_bn(p.s_channels, p.t_channels)
            for p in self.pairs)

    def forward(self, batch):
        t = self.teacher_forward(batch["image"])
        s = self.student(batch["image"])
        fs = [c(s.features[p.s]) for c, p in zip(self.connectors, self.pairs)]
        ft = [t.features[p.t] for p in self.pairs]
        fsp = fsp_loss(fs, ft)
        return self.phase_losses(s.logits, batch["label"], "fsp", fsp)
