"""Plain supervised training: cross-entropy only (teachers and baselines)."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field

from raykd.methods.base import Distiller, MethodConfig
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
        ce = F.cross_entropy(out.logits, batch["label"], label_smoothing=self.cfg.label_smoothing)
        return out.logits, {"ce": ce}
