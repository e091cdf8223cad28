"""What both loaders draw the same way: the seeds of an epoch's shuffle and of a rank's own draws, and
CS-KD's same-class partners. One definition, so the in-memory and the streamed path cannot drift apart."""

from __future__ import annotations

import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's shuffle, shared by all ranks."""
    return seed * 1_000_003 + epoch


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a rank's own draws in an epoch: augmentation, class partners."""
    return epoch_seed(seed, epoch) * 131 + rank + 1


class ClassPartners:
    """Draws a uniformly chosen sample of the same class for each index (CS-KD's pairs); the class index
    is built once, a draw costs O(batch)."""

    def __init__(self, labels: torch.Tensor):
        self.labels = labels
        self.by_class = torch.argsort(labels, stable=True)
        self.count = torch.bincount(labels)
        self.start = torch.cumsum(self.count, 0) - self.count

    def __call__(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        mine = self.labels[idx]
        offset = (torch.rand(len(idx), generator=g) * self.count[mine]).long()
        return self.by_class[self.start[mine] + offset]
