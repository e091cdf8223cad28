"""The Distiller contract: an nn.Module that turns a batch into (logits, {loss_name: loss}).

The engine sums the losses and logs each term. A distiller owns every training-only module
(connectors, heads, memory banks); `distiller.student` is what gets exported. The teacher is
frozen here once, so no method can forget to: eval mode, no gradients, forward in no_grad.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn


class MethodConfig(BaseModel):
    """Base of every method's config; `name` selects the method."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    name: str


class Distiller(nn.Module):
    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    needs_teacher: ClassVar[bool] = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: MethodConfig):
        super().__init__()
        self.student = student
        self.cfg = cfg
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        # Kept outside the module tree: its weights are not trained, checkpointed or exported,
        # and DDP neither broadcasts nor syncs them.
        self._teacher = [teacher] if teacher is not None else []

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def _apply(self, fn, recurse=True):
        # Keep the frozen teacher on the same device/dtype as the student.
        if self._teacher:
            self._teacher[0]._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @torch.no_grad()
    def teacher_forward(self, images: torch.Tensor):
        """The frozen teacher's output. Call it *before* the student's forward: the student's
        activations then stay in cache between its forward and backward (bench/RESULTS.md:
        a KD step falls from 1.36x to 1.03x of student step + teacher forward on CPU)."""
        return self.teacher(images)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def extra_state_dict(self) -> dict[str, Any]:
        """Method state that is not a parameter or buffer (saved in every checkpoint)."""
        return {}

    def load_extra_state_dict(self, state: dict[str, Any]) -> None:
        pass
