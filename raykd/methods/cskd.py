"""Class-wise self-KD (Yun et al., CVPR 2020): the prediction for another sample of the same class
(computed without gradient) teaches the prediction for this one: CE + lambda * T^2 KL, T 4, lambda 1.
The loader draws the partner ("pair_image"); the official code spends half of each batch on partners,
here a batch of B anchors comes with B partners."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from raykd.losses import kd_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss
from raykd.methods.registry import register_method


class CSKDConfig(MethodConfig):
    name: Literal["cskd"] = "cskd"
    temperature: float = Field(4.0, gt=0)
    lamda: float = Field(1.0, ge=0, description="weight of the class-wise term (the paper's lambda_cls)")


@register_method
class CSKD(Distiller):
    name = "cskd"
    Config = CSKDConfig
    needs_class_pairs = True
    summary = "class-wise self-KD between samples of the same class"
    source = "CS-KD paper and code"

    def forward(self, batch):
        out = self.student(batch["image"])
        with torch.no_grad():
            pair = self.student(batch["pair_image"]).logits
        return out.logits, {"ce": ce_loss(out.logits, batch),
                            "cls": self.cfg.lamda * kd_loss(out.logits, pair, self.cfg.temperature)}
