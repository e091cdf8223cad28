"""Teacher-free KD, self-training variant (Yuan et al., CVPR 2020): a pre-trained copy of the student
teaches it again. As the official `loss_kd_self`, the KL is averaged over classes as well as the batch
(nn.KLDivLoss's default), times T^2 and a multiplier: (1 - alpha) CE + alpha * multiplier * T^2 KL / C.
Defaults T 20, alpha 0.95 (the ResNet-18 CIFAR-100 setting; the paper tunes them per model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raykd.losses import kd_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss
from raykd.methods.registry import register_method


class TfKDConfig(MethodConfig):
    name: Literal["tfkd"] = "tfkd"
    temperature: float = Field(20.0, gt=0)
    alpha: float = Field(0.95, ge=0, le=1)
    multiplier: float = Field(1.0, gt=0)


@register_method
class TfKD(Distiller):
    name = "tfkd"
    Config = TfKDConfig
    needs_teacher = True
    teacher_is_self = True
    summary = "teacher-free KD: a trained copy of the student teaches it"
    source = "Tf-KD official loss"

    def forward(self, batch):
        t = self.teacher_forward(batch["image"]).logits
        s = self.student(batch["image"]).logits
        kl = kd_loss(s, t, self.cfg.temperature) / s.shape[1]
        return s, {"ce": (1 - self.cfg.alpha) * ce_loss(s, batch),
                   "kd": self.cfg.alpha * self.cfg.multiplier * kl}
