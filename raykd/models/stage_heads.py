"""Classifiers on a backbone's stages: global average pool + FC on each stage but the last (whose
classifier is the model's own). MTKD-SSR trains them on its student; a `stage_probes` node fits them as
linear probes on a frozen teacher and exports the teacher with them (`WithStageHeads`), so every
MTKD-SSR student of that teacher reads its stage predictions from `ModelOutput.stage_logits`."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from raykd.models.init import pooled
from raykd.models.output import ModelOutput


class StageHeads(nn.Module):
    def __init__(self, channels: Sequence[int], num_classes: int):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.fcs = nn.ModuleList(nn.Linear(c, num_classes) for c in self.channels)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Logits of stages 1..K-1 from the K stage maps (the last map is not used)."""
        return tuple(fc(pooled(f)) for fc, f in zip(self.fcs, features[: len(self.fcs)], strict=True))


class WithStageHeads(nn.Module):
    """A backbone whose output carries its stage heads' logits; its `logits` are the backbone's own."""

    def __init__(self, backbone: nn.Module, heads: StageHeads):
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        self.stage_channels = backbone.stage_channels

    def forward(self, x: torch.Tensor) -> ModelOutput:
        out = self.backbone(x)
        return out._replace(stage_logits=self.heads(out.features))


def heads_blob(heads: StageHeads) -> dict:
    """What a student file stores to rebuild the heads (`heads_from_blob`)."""
    return {"channels": list(heads.channels), "num_classes": heads.fcs[0].out_features,
            "state_dict": {k: v.detach().cpu() for k, v in heads.state_dict().items()}}


def heads_from_blob(blob: dict) -> StageHeads:
    heads = StageHeads(blob["channels"], blob["num_classes"])
    heads.load_state_dict(blob["state_dict"])
    return heads
