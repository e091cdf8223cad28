"""SKD's DF loss: the distribution of feature dimensions over the teacher's top-K channels
(Wang et al., SKD eq. 7, as specified in DESIGN.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32
from raykd.losses.pool import match_spatial


def channel_energy(feat: torch.Tensor) -> torch.Tensor:
    """[B, C]: mean of A^2 over H x W, the score by which DF ranks the teacher's channels."""
    return at_least_float32(feat).pow(2).mean(dim=(2, 3))


def df_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, k: int) -> torch.Tensor:
    """Per sample, the teacher's K most energetic channels; the same channel indices are gathered
    from the student (already mapped to the teacher's channels by a connector), each channel's
    flattened A^2 map is L2-normalised, and the channel's distance is that of `at_loss` (mean
    squared difference over the H x W positions); summed over the K channels (eq. 7), averaged
    over the batch. The larger map is pooled to the smaller first.

    Measuring each channel exactly as AT measures the channel-summed map keeps the paper's
    alpha : beta = 200 : 300 meaningful; an unsquared L2 per channel (eq. 7 read literally) is
    ~10^3 times larger than our AT and, at beta 300, drowned CE (digits: 82% vs 95% for response).
    """
    if student_feat.shape[:2] != teacher_feat.shape[:2]:
        raise ValueError(f"df_loss needs equal batch and channel sizes (connect the student first), got "
                         f"{tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}")
    channels = teacher_feat.shape[1]
    if not 1 <= k <= channels:
        raise ValueError(f"df_loss: k must be in 1..{channels} (the teacher's channels), got {k}")
    s, t = match_spatial(at_least_float32(student_feat), at_least_float32(teacher_feat))
    top = channel_energy(t).topk(k, dim=1).indices  # [B, K]
    idx = top[:, :, None].expand(-1, -1, s.shape[-1] * s.shape[-2])
    s_maps = F.normalize(s.pow(2).flatten(2).gather(1, idx), dim=2)
    t_maps = F.normalize(t.pow(2).flatten(2).gather(1, idx), dim=2)
    return (s_maps - t_maps).pow(2).mean(dim=2).sum(dim=1).mean()
