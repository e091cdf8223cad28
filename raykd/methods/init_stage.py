"""Methods whose paper runs them as an initialisation stage (FitNets' hints, AB, FSP).

In their init phase only the guiding term is trained (no CE, so the classifier gets no gradient
and DDP must look for unused parameters); the node that follows starts from the result with
`init:`. In the train phase the term sits next to CE, weighted by `beta`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F


class InitStage:
    init_phase: ClassVar[str] = "init"

    @property
    def unused_parameters(self) -> bool:
        return self.cfg.phase == self.init_phase

    def phase_losses(self, logits: torch.Tensor, labels: torch.Tensor, term: str,
                     value: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.cfg.phase == self.init_phase:
            return logits, {term: value}
        return logits, {"ce": self.cfg.ce_weight * F.cross_entropy(logits, labels), term: self.cfg.beta * value}
