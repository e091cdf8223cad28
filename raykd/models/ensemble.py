"""Several finished students answering as one: the average of their softmax outputs (SKD's
integration of its branches). Its logits are log(mean softmax), so softmax(logits) is exactly the
averaged distribution and it can teach a student through any logit-based method (kd, dkd)."""

from __future__ import annotations

import math

import torch
from torch import nn

from raykd.models.output import ModelOutput


class Ensemble(nn.Module):
    stage_channels: tuple[int, ...] = ()  # no single feature hierarchy: feature methods cannot use it

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        log_probs = torch.stack([m(x).logits.float().log_softmax(dim=1) for m in self.members])
        return ModelOutput(torch.logsumexp(log_probs, dim=0) - math.log(len(self.members)), ())
