"""FitNets (Romero et al., ICLR 2015): a regressor maps a student stage onto the teacher's hint.

Two phases, as in the paper: `phase: hint` trains the student up to the guided stage (plus the
regressor) on the hint loss alone - a node of its own whose weights the next node starts from via
`init:`; `phase: train` adds the hint to cross-entropy (beta 100, the CRD benchmark setting).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raykd.errors import ConfigError
from raykd.losses import fitnet_loss
from raykd.methods.base import Distiller, MethodConfig, probe
from raykd.methods.connectors import conv_regressor, stage_pairs
from raykd.methods.init_stage import InitStage
from raykd.methods.registry import register_method


class FitNetConfig(MethodConfig):
    name: Literal["fitnet"] = "fitnet"
    phase: Literal["train", "hint"] = "train"
    hint_stage: int = Field(1, ge=0, description="student stage guided by the teacher's matching stage")
    beta: float = Field(100.0, ge=0)
    ce_weight: float = Field(1.0, ge=0)


@register_method
class FitNet(InitStage, Distiller):
    init_phase = "hint"
    name = "fitnet"
    Config = FitNetConfig
    needs_teacher = True
    summary = "FitNets hints through a conv regressor; phase: hint is the init stage"
    source = "CRD code; two-stage as in FitNets"

    def setup(self, ctx):
        s, t = probe(self.student, ctx.image_shape), probe(self.teacher, ctx.image_shape)
        pairs = stage_pairs(self.student, self.teacher)
        if self.cfg.hint_stage >= len(pairs):
            raise ConfigError(f"method.hint_stage: {self.cfg.hint_stage} is out of range; the student has "
                              f"{len(pairs)} stages to pair with the teacher's (0..{len(pairs) - 1}).")
        pair = pairs[self.cfg.hint_stage]
        self.si, self.ti = pair.s, pair.t
        self.regressor = conv_regressor(s.features[self.si].shape[1:], t.features[self.ti].shape[1:])

    def forward(self, batch):
        t = self.teacher_forward(batch["image"])
        s = self.student(batch["image"])
        hint = fitnet_loss(self.regressor(s.features[self.si]), t.features[self.ti])
        return self.phase_losses(s.logits, batch["label"], "hint", hint)
