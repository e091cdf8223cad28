"""Which samples each rank reads in each step of an epoch: a pure function of (seed, epoch, rank).

Training shuffles with one permutation shared by all ranks, cuts it into global batches of
`batch_size * world_size`, and deals each global batch across the ranks. Every sample is read exactly
once an epoch and every rank takes the same number of steps (DDP needs that). A short tail that
would leave a rank fewer than two samples (BatchNorm cannot train on one) joins the last full batch
instead of being dropped. Evaluation reads the split in order, rank r every world_size-th sample.
"""

from __future__ import annotations

import torch

from raykd.data.sampling import epoch_seed


def train_bounds(n: int, batch_size: int, world_size: int = 1) -> list[int]:
    """Where each global batch starts in the epoch's permutation, and where the last one ends."""
    glob = batch_size * world_size
    full, tail = divmod(n, glob)
    bounds = [i * glob for i in range(full + 1)]
    if tail >= 2 * world_size or full == 0:
        bounds.append(n)
    else:
        bounds[-1] = n
    return [a for a, b in zip(bounds, bounds[1:]) if b > a] + [n]


def train_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
    bounds = train_bounds(n, batch_size, world_size)
    return [perm[a:b][rank::world_size] for a, b in zip(bounds[:-1], bounds[1:])]


def eval_batches(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    mine = torch.arange(n)[rank::world_size]
    return list(mine.split(batch_size)) if len(mine) else []
