"""Linear probes on a trained model's stages: global average pool + FC on every stage but the last, fitted
by cross-entropy on the model's frozen features (its weights and BN statistics are not touched).

The node starts from the model with `init:` and exports it with the probes attached (`final.pt` holds
the model and its `stage_heads`), so a node that names it as `teacher` sees the probes' logits in
`ModelOutput.stage_logits`: MTKD-SSR's teacher-side stage classifiers, fitted once per teacher and shared
by every variant that learns from it (DESIGN.md). The model's own classifier is the last stage's.
"""

from __future__ import annotations

from typing import Literal

import torch

from raykd.methods.base import Distiller, MethodConfig, ce_loss
from raykd.methods.registry import register_method
from raykd.models.stage_heads import StageHeads, heads_blob
from raykd.models.video import frame_model


class StageProbesConfig(MethodConfig):
    name: Literal["stage_probes"] = "stage_probes"


@register_method
class StageProbes(Distiller):
    name = "stage_probes"
    Config = StageProbesConfig
    needs_init = True
    summary = "linear probes on a frozen model's stages, exported with it (MTKD-SSR's teacher heads)"
    source = "MTKD-SSR (Gou et al., IJCV 2023) sec. 3.1: an auxiliary GAP + FC classifier per stage"

    @classmethod
    def check_models(cls, cfg, student, teacher):
        if len(student.stage_channels) < 2:
            return "stage_probes needs a model of at least 2 stages (the last stage's classifier is the model's own)."
        return None

    def setup(self, ctx):
        model = frame_model(self.student)
        model.requires_grad_(False)
        self.heads = StageHeads(model.stage_channels[:-1], ctx.num_classes)

    def train(self, mode: bool = True):
        super().train(mode)
        self.student.eval()  # frozen: batch-norm statistics stay the trained model's
        return self

    def forward(self, batch):
        with torch.no_grad():
            out = self.student(batch["image"])
        return out.logits, {"ce": sum(ce_loss(z, batch) for z in self.heads(out.features))}

    def eval_heads(self, out):
        return {f"stage{i}": z for i, z in enumerate(self.heads(out.features), start=1)}

    def export_extras(self):
        return {"stage_heads": heads_blob(self.heads)}
