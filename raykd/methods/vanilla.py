"""Plain supervised training: cross-entropy only (teachers and baselines)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raykd.methods.base import Distiller, MethodConfig, ce_loss
from raykd.methods.registry import register_method


class VanillaConfig(MethodConfig):
    name: Literal["vanilla"] = "vanilla"
    label_smoothing: float = Field(0.0, ge=0, lt=1)


@register_method
class Vanilla(Distiller):
    name = "vanilla"
    Config = VanillaConfig
    summary = "cross-entropy only (teachers, baselines)"

    def forward(self, batch):
        out = self.student(batch["image"])
        ce = ce_loss(out.logits, batch, self.cfg.label_smoothing)
        return out.logits, {"ce": ce}
