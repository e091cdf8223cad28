"""Clip classifier from any 2D backbone: frames are folded into the batch, run once, and the logits,
stage features, embedding and stage classifiers are averaged over time (the frame-averaging baseline of SKD)."""

from __future__ import annotations

import torch
from torch import nn

from raykd.models.output import ModelOutput


def _time_mean(x: torch.Tensor, b: int, f: int) -> torch.Tensor:
    return x.view(b, f, *x.shape[1:]).mean(dim=1)


class VideoClassifier(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.stage_channels = backbone.stage_channels

    def forward(self, clips: torch.Tensor) -> ModelOutput:
        if clips.dim() != 5:
            raise ValueError(f"VideoClassifier expects [B, F, C, H, W] clips, got shape {tuple(clips.shape)}")
        b, f = clips.shape[:2]
        out = self.backbone(clips.flatten(0, 1))
        avg = lambda xs: tuple(_time_mean(x, b, f) for x in xs)  # noqa: E731
        emb = None if out.embedding is None else _time_mean(out.embedding, b, f)
        return ModelOutput(_time_mean(out.logits, b, f), avg(out.features), avg(out.pre_features), emb,
                           avg(out.stage_logits))


def frame_model(model: nn.Module) -> nn.Module:
    """The 2D backbone a clip model runs on each frame (the model itself for images): what methods size their
    heads and connectors by."""
    return model.backbone if isinstance(model, VideoClassifier) else model
