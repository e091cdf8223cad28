"""ReviewKD's hierarchical context loss (Chen et al., CVPR 2021, sec. 3.3; official `hcl` in
dvlab-research/ReviewKD CIFAR-100/model/reviewkd.py)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32

HCL_LEVELS = (4, 2, 1)  # pyramid sizes of the official hcl


def hcl_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over stages of a pyramid MSE between same-shaped [B, C, H, W] maps.

    Per stage: the MSE (mean over every element) of the full maps, plus the MSE of both maps
    adaptive-average-pooled to 4x4, 2x2 and 1x1, skipping each size l >= H (the map's height, as
    the official code tests). The full map weighs 1 and each kept level half the previous kept one
    (1/2, 1/4, 1/8); the stage's loss is the weighted sum divided by the sum of its weights.
    """
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"hcl_loss: {len(student_feats)} student maps but {len(teacher_feats)} teacher maps")
    total = None
    for fs, ft in zip(student_feats, teacher_feats):
        if fs.shape != ft.shape:
            raise ValueError(f"hcl_loss: student map {tuple(fs.shape)} and teacher map {tuple(ft.shape)} differ")
        fs, ft = at_least_float32(fs), at_least_float32(ft)
        h = fs.shape[2]
        loss, weight, total_weight = F.mse_loss(fs, ft), 1.0, 1.0
        for size in HCL_LEVELS:
            if size >= h:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size))
            total_weight += weight
        loss = loss / total_weight
        total = loss if total is None else total + loss
    if total is None:
        raise ValueError("hcl_loss: no feature maps given")
    return total
