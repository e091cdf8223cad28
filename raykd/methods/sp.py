"""Similarity-preserving KD (Tung & Mori, ICCV 2019) on the last stage pair: CE + 3000 * SP (CRD code)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raykd.losses import sp_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss
from raykd.methods.registry import register_method


class SPConfig(MethodConfig):
    name: Literal["sp"] = "sp"
    beta: float = Field(3000.0, ge=0)
    ce_weight: float = Field(1.0, ge=0)


@register_method
class SP(Distiller):
    name = "sp"
    Config = SPConfig
    needs_teacher = True
    summary = "similarity-preserving: batch similarity of the last stage"
    source = "CRD code"

    def forward(self, batch):
        t = self.teacher_forward(batch["image"])
        s = self.student(batch["image"])
        return s.logits, {"ce": self.cfg.ce_weight * ce_loss(s.logits, batch),
                          "sp": self.cfg.beta * sp_loss(s.features[-1], t.features[-1])}
