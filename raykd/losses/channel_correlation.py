"""Channel correlation structure (CCS; Li, Chen, Wang, Dai, Hu, Jiang, Xia, KSEM 2021, pp. 357-368).

Only the paper's abstract could be read (Springer chapter 10.1007/978-3-030-82136-4_29; no arXiv copy, no
code found). It says the knowledge is the channel correlation structure "in terms of intra-instance and
inter-instance relationship among a mini-batch", aligned between teacher and student "by their channel
correlation matrices". Our reading of the abstract, one matrix family each:

- intra-instance (feature-based): per sample, the C x C cosine similarity between its channels' flattened
  H x W maps;
- inter-instance (relation-based): per channel, the B x B cosine similarity between the samples' maps of
  that channel (how the mini-batch's instances relate, channel by channel).

Each is compared by the mean squared difference of the entries. `centered=True` subtracts each map's
spatial mean first (Pearson correlation instead of cosine similarity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32
from raykd.losses.pool import match_spatial


def _maps(feat: torch.Tensor, centered: bool) -> torch.Tensor:
    """[B, C, H*W] flattened maps, spatially centred when asked."""
    m = at_least_float32(feat).flatten(2)
    return m - m.mean(dim=2, keepdim=True) if centered else m


def channel_correlation(feat: torch.Tensor, centered: bool = False) -> torch.Tensor:
    """Intra-instance structure, [B, C, C]: per sample, cosine similarity between its channels' maps (an all-zero
    map, e.g. a channel a ReLU silenced, has similarity 0 to every channel, itself included)."""
    m = F.normalize(_maps(feat, centered), dim=2)
    return m @ m.transpose(1, 2)


def instance_correlation(feat: torch.Tensor, centered: bool = False) -> torch.Tensor:
    """Inter-instance structure, [C, B, B]: per channel, cosine similarity between the samples' maps of it."""
    m = F.normalize(_maps(feat, centered), dim=2).transpose(0, 1)  # [C, B, H*W]
    return m @ m.transpose(1, 2)


def _check(student_feat: torch.Tensor, teacher_feat: torch.Tensor, name: str) -> None:
    if student_feat.shape[:2] != teacher_feat.shape[:2]:
        raise ValueError(f"{name} needs equal batch and channel sizes (connect the student first), got "
                         f"{tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}")


def ccs_intra_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, centered: bool = False) -> torch.Tensor:
    """Mean over samples and channel pairs of the squared difference of the C x C channel correlations (the
    larger map pooled to the smaller first)."""
    _check(student_feat, teacher_feat, "ccs_intra_loss")
    s, t = match_spatial(student_feat, teacher_feat)
    return (channel_correlation(s, centered) - channel_correlation(t, centered)).pow(2).mean()


def ccs_inter_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, centered: bool = False) -> torch.Tensor:
    """Mean over channels and sample pairs of the squared difference of the per-channel B x B correlations
    (the larger map pooled to the smaller first)."""
    _check(student_feat, teacher_feat, "ccs_inter_loss")
    s, t = match_spatial(student_feat, teacher_feat)
    return (instance_correlation(s, centered) - instance_correlation(t, centered)).pow(2).mean()
