"""Progressive self-knowledge distillation (Kim et al., ICCV 2021): the target is the label softened
by the model's own prediction for the sample at the previous epoch, alpha_t = alpha_T * (t + 1) / T
(alpha_T 0.8), trained with soft-target cross-entropy. Predictions live in a per-sample memory."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from raykd.losses import pskd_targets, soft_cross_entropy
from raykd.methods.base import Distiller, MethodConfig
from raykd.methods.memory import SampleMemory
from raykd.methods.registry import register_method


class PSKDConfig(MethodConfig):
    name: Literal["pskd"] = "pskd"
    alpha_T: float = Field(0.8, ge=0, le=1)


@register_method
class PSKD(Distiller):
    name = "pskd"
    Config = PSKDConfig
    summary = "progressive self-KD from last epoch's own predictions"
    source = "PS-KD paper and code"

    def setup(self, ctx):
        self.epochs = ctx.epochs
        self.memories["past"] = SampleMemory(len(ctx.train_labels), ctx.num_classes)

    def alpha_t(self) -> float:
        return self.cfg.alpha_T * (self.epoch + 1) / self.epochs

    def forward(self, batch):
        labels, index = batch["label"], batch["index"]
        out = self.student(batch["image"])
        past = self.memories["past"]
        if self.epoch == 0:  # no previous epoch yet: the official code seeds the memory with one-hot labels
            prev = F.one_hot(labels, out.logits.shape[1]).float()
        else:
            prev = past[index]
        targets = pskd_targets(labels, prev, self.alpha_t())
        past.write(index, torch.softmax(out.logits.detach().float(), dim=1))
        return out.logits, {"pskd": soft_cross_entropy(out.logits, targets)}
