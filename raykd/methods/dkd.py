"""Decoupled KD (Zhao et al., CVPR 2022): CE + min(epoch / warmup, 1) * (alpha TCKD + beta NCKD).
Defaults are mdistiller's CIFAR-100 ones (alpha 1, beta 8, T 4, 20 warm-up epochs); the paper uses
beta 2 for ResNet-56/110 teachers and 6 for WRN/VGG ones (see conf/cifar100/dkd)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raykd.losses import dkd_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss
from raykd.methods.registry import register_method


class DKDConfig(MethodConfig):
    name: Literal["dkd"] = "dkd"
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(8.0, ge=0)
    temperature: float = Field(4.0, gt=0)
    warmup_epochs: int = Field(20, ge=0)
    ce_weight: float = Field(1.0, ge=0)


@register_method
class DKD(Distiller):
    name = "dkd"
    Config = DKDConfig
    needs_teacher = True
    summary = "decoupled KD (target / non-target) with linear warm-up"
    source = "DKD paper / mdistiller"

    def warmup_factor(self) -> float:
        """mdistiller counts epochs from 1: the first epoch already carries 1/warmup."""
        w = self.cfg.warmup_epochs
        return 1.0 if w == 0 else min((self.epoch + 1) / w, 1.0)

    def forward(self, batch):
        t = self.teacher_forward(batch["image"]).logits
        s = self.student(batch["image"]).logits
        dkd = dkd_loss(s, t, batch["label"], self.cfg.alpha, self.cfg.beta, self.cfg.temperature)
        return s, {"ce": self.cfg.ce_weight * ce_loss(s, batch),
                   "dkd": self.warmup_factor() * dkd}
