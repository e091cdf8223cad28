"""FitNets hints (Romero et al., ICLR 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32


def fitnet_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the student's regressed hint and the teacher's guided layer."""
    return F.mse_loss(at_least_float32(student_feat), at_least_float32(teacher_feat))
