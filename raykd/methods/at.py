"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017): CE + beta * sum over stage pairs of AT,
beta 1000 and p 2 as in the CRD benchmark code (the paper's beta/2 per pair with its own scaling)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raykd.losses import at_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss
from raykd.methods.connectors import stage_pairs
from raykd.methods.registry import register_method


class ATConfig(MethodConfig):
    name: Literal["at"] = "at"
    beta: float = Field(1000.0, ge=0)
    p: float = Field(2.0, gt=0)
    ce_weight: float = Field(1.0, ge=0)


@register_method
class AT(Distiller):
    name = "at"
    Config = ATConfig
    needs_teacher = True
    summary = "attention transfer on every stage pair"
    source = "CRD code"

    def setup(self, ctx):
        self.pairs = stage_pairs(self.student, self.teacher)

    def forward(self, batch):
        t = self.teacher_forward(batch["image"])
        s = self.student(batch["image"])
        at = sum(at_loss(s.features[p.s], t.features[p.t], self.cfg.p) for p in self.pairs)
        return s.logits, {"ce": self.cfg.ce_weight * ce_loss(s.logits, batch),
                          "at": self.cfg.beta * at}
