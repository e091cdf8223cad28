"""The Distiller contract: an nn.Module that turns a batch into (logits, {loss_name: loss}).

The engine sums the losses and logs each term. A distiller owns every training-only module
(connectors, heads, memory banks); `distiller.student` is what gets exported. The teacher is
frozen here once, so no method can forget to: eval mode, no gradients, forward in no_grad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from raykd.methods.memory import SampleMemory
from raykd.strict import StrictModel


class MethodConfig(StrictModel):
    """Base of every method's config; `name` selects the method."""

    name: str


@dataclass(frozen=True)
class MethodContext:
    """What a method may know about its run before training: to size connectors, heads and
    per-sample memories, and to follow schedules over epochs."""

    num_classes: int
    train_labels: torch.Tensor  # [N] labels of the training split, indexed by batch["index"]
    image_shape: tuple[int, ...]  # one input, e.g. (3, 32, 32)
    epochs: int
    steps_per_epoch: int


class Distiller(nn.Module):
    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    needs_teacher: ClassVar[bool] = False
    needs_class_pairs: ClassVar[bool] = False  # batches carry "pair_image": another image of the same class
    teacher_is_self: ClassVar[bool] = False  # the teacher must be the same architecture (self-training)
    needs_init: ClassVar[bool] = False  # works on a trained model: the node must start from one (`init:`)
    summary: ClassVar[str] = ""  # one line for `raykd methods`
    source: ClassVar[str] = ""  # where the defaults come from (paper, official code), for `raykd methods`

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
        self.epoch = 0
        self.memories: dict[str, SampleMemory] = {}

    @classmethod
    def check_models(cls, cfg: MethodConfig, student: nn.Module, teacher: nn.Module | None) -> str | None:
        """A problem with this student (and teacher, if the node has one), found from shapes alone (the
        models are on the `meta` device) while the config is validated; None when fine."""
        return None

    @classmethod
    def check_teacher_node(cls, cfg: MethodConfig, teacher_method: str) -> str | None:
        """A problem with what trained this node's teacher (`teacher_method`, the teacher node's method name),
        e.g. a method that reads stage classifiers only a `stage_probes` node exports; None when fine."""
        return None

    def setup(self, ctx: MethodContext) -> None:
        """Build what depends on the data or the models' shapes (connectors, heads, memories).
        Called once, on CPU, before the optimizer is made; `probe` gives feature shapes."""

    def start_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch (0-based), before its first batch."""
        self.epoch = epoch

    @property
    def unused_parameters(self) -> bool:
        """True when some trainable parameters get no gradient (DDP must then look for them)."""
        return False

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def _apply(self, fn, recurse=True):
        # Keep the frozen teacher and the per-sample memories on the student's device.
        if self._teacher:
            self._teacher[0]._apply(fn, recurse)
        for mem in self.memories.values():
            mem.data = fn(mem.data)
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
        return {f"memory/{k}": m.data.detach().cpu() for k, m in self.memories.items()}

    def load_extra_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.memories.items():
            if f"memory/{k}" in state:
                m.data = state[f"memory/{k}"].to(m.data.device, m.data.dtype)

    def sharded_state_dict(self) -> dict[str, Any] | None:
        """State each rank holds a different part of (DTSKD's per-sample history): every rank saves its
        own with each checkpoint. None when the method has none."""
        return None

    def load_sharded_state(self, shards: Callable[[int], dict[str, Any]], old_world: int) -> None:
        """Restore from the shards a run of `old_world` ranks saved (`shards(k)` loads rank k's)."""

    def eval_heads(self, out) -> dict[str, torch.Tensor]:
        """Logits of training-only classifiers (auxiliary branches), computed from the student's output,
        so the engine reports each one's accuracy beside the student's."""
        return {}

    def export_extras(self) -> dict[str, Any]:
        """What the node's `final.pt` carries beside the plain student (a stage_probes node's heads). Empty
        for every method that only trains a student: its training-only modules are never exported."""
        return {}

    def result_metrics(self) -> dict[str, float]:
        """Numbers about the method itself (e.g. memory bytes) for the node's result and MLflow."""
        return {}


def ce_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against the batch's soft `target` (video packages' pseudo-labels) when it has
    one, else against its hard `label`. Every method's CE goes through here."""
    target = batch.get("target")
    return F.cross_entropy(logits, batch["label"] if target is None else target.to(logits.dtype),
                           label_smoothing=label_smoothing)


@torch.no_grad()
def probe(model: nn.Module, image_shape: tuple[int, ...]):
    """One eval-mode forward on two zero images: the shapes a method sizes its modules by."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = model(torch.zeros(2, *image_shape, device=device))
    model.train(was_training)
    return out
