"""Hinton KD. Defaults as in the CRD/DKD benchmark code: 0.1 CE + 0.9 KD at T = 4."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raykd.losses import kd_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss
from raykd.methods.registry import register_method


class KDConfig(MethodConfig):
    name: Literal["kd"] = "kd"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0)
    ce_weight: float = Field(0.1, ge=0)


@register_method
class KD(Distiller):
    name = "kd"
    Config = KDConfig
    needs_teacher = True
    summary = "Hinton KD: soft targets at temperature T"
    source = "CRD/DKD benchmark code"

    def forward(self, batch):
        images = batch["image"]
        t_logits = self.teacher_forward(images).logits  # teacher first: see Distiller.teacher_forward
        out = self.student(images)
        return out.logits, {
            "ce": self.cfg.ce_weight * ce_loss(out.logits, batch),
            "kd": self.cfg.alpha * kd_loss(out.logits, t_logits, self.cfg.temperature),
        }
