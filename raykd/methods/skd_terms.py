"""SKD's three substage terms as modules, shared by the `skd` branches and `rskd`'s combination.

Each returns its distillation term without CE and without its outer weight, so SKD adds CE and
RSKD (eq. 10) weights the three terms with eta, xi and tau. The learned connectors live here and
therefore on the method, never on the exported student.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from raykd.losses import at_loss, df_loss, fsp_loss, kd_loss
from raykd.methods.base import MethodConfig
from raykd.methods.connectors import conv_bn, stage_pairs


class SubstageConfig(MethodConfig):
    """The substage terms' own settings, shared by `skd` and `rskd` (paper symbols in comments)."""

    temperature: float = Field(4.0, gt=0)  # T
    kd_weight: float = Field(0.9, ge=0)  # lambda
    at_weight: float = Field(200.0, ge=0)  # alpha
    df_weight: float = Field(300.0, ge=0)  # beta
    top_k: int = Field(8, gt=0)  # K
    fsp_weight: float = Field(0.9, ge=0)  # gamma
    ce_weight: float = Field(1.0, ge=0)


class ResponseTerm(nn.Module):
    """SKD eq. 1 without CE: T^2 KL between teacher and student soft targets."""

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = temperature

    def forward(self, s, t) -> dict[str, torch.Tensor]:
        return {"kd": kd_loss(s.logits, t.logits, self.temperature)}


def _connectors(pairs) -> nn.ModuleList:
    return nn.ModuleList(nn.Identity() if p.s_channels == p.t_channels else conv_bn(p.s_channels, p.t_channels)
                         for p in pairs)


class FeatureTerm(nn.Module):
    """AT summed over the stage pairs plus DF (top-K teacher channels) averaged over them; a 1x1
    connector maps the student's channels to the teacher's for DF where they differ."""

    def __init__(self, student, teacher, top_k: int):
        super().__init__()
        self.pairs = stage_pairs(student, teacher)
        self.top_k = top_k
        self.connectors = _connectors(self.pairs)

    def forward(self, s, t) -> dict[str, torch.Tensor]:
        at = sum(at_loss(s.features[p.s], t.features[p.t]) for p in self.pairs)
        df = sum(df_loss(c(s.features[p.s]), t.features[p.t], self.top_k)
                 for c, p in zip(self.connectors, self.pairs)) / len(self.pairs)
        return {"at": at, "df": df}


class RelationTerm(nn.Module):
    """FSP between consecutive stages, student stages connected to the teacher's channels."""

    def __init__(self, student, teacher):
        super().__init__()
        self.pairs = stage_pairs(student, teacher)
        self.connectors = _connectors(self.pairs)

    def forward(self, s, t) -> dict[str, torch.Tensor]:
        fs = [c(s.features[p.s]) for c, p in zip(self.connectors, self.pairs)]
        return {"fsp": fsp_loss(fs, [t.features[p.t] for p in self.pairs])}


def check_top_k(top_k: int, student, teacher) -> str | None:
    """DF's K may not exceed the channels of any paired teacher stage: say so before training."""
    smallest = min(p.t_channels for p in stage_pairs(student, teacher))
    if top_k > smallest:
        return (f"top_k {top_k} is larger than the teacher's smallest paired stage ({smallest} channels of "
                f"{list(teacher.stage_channels)}); use top_k <= {smallest}.")
    return None
