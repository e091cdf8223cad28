"""DTSKD's historical teacher: per sample and per head (backbone and branches), the softmax that head
gave the sample when it was last seen, i.e. in the previous epoch.

Sized for ImageNet, where the paper names this matrix as its own limitation (1.28M samples x 1000
classes x 4 heads is 20 GB in fp32): rows are stored in fp16 by default, or as their k largest
probabilities (renormalised when read), and under DDP each rank holds only its share of the rows:
sample i lives on rank i % world. Every step then exchanges what the ranks need: the batch's indices
and new predictions are all-gathered (each owner keeps its rows) and the owners' old rows are summed
into place with one all-reduce. Each sample's target is therefore its own last prediction whichever
rank saw it then and whichever sees it now.

A row is "unseen" until its sample is first written; its target is then the plain label, as the
official code seeds its matrix with one-hot labels in epoch 0.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from raykd.methods.memory import all_gather_cat


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class HistoryMemory:
    def __init__(self, size: int, heads: int, classes: int, dtype: torch.dtype = torch.float16,
                 topk: int | None = None, rank: int | None = None, world: int | None = None):
        self.size, self.heads, self.classes, self.topk = size, heads, classes, topk
        self.rank, self.world = (rank, world) if world is not None else _dist()
        rows = len(range(self.rank, size, self.world))
        width = topk or classes
        self.values = torch.zeros(heads, rows, width, dtype=dtype)
        self.indices = torch.zeros(heads, rows, topk, dtype=torch.int16 if classes <= 2**15 - 1 else torch.int32) \
            if topk else None
        self.seen = torch.zeros(rows, dtype=torch.bool)

    @property
    def nbytes(self) -> int:
        """Bytes this rank holds."""
        return sum(t.numel() * t.element_size() for t in (self.values, self.indices, self.seen) if t is not None)

    @property
    def bytes_per_sample(self) -> int:
        """Bytes of one sample's rows (all heads) and its seen flag; times the dataset size, all ranks."""
        row = self.values.shape[-1] * self.values.element_size()
        if self.indices is not None:
            row += self.indices.shape[-1] * self.indices.element_size()
        return self.heads * row + self.seen.element_size()

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Follow the distiller's device moves (the rows live where the model trains)."""
        self.values, self.seen = fn(self.values), fn(self.seen)
        if self.indices is not None:
            self.indices = fn(self.indices)

    # -- one training step -----------------------------------------------------------------------------

    @torch.no_grad()
    def exchange(self, index: torch.Tensor, probs: torch.Tensor, write: bool = True):
        """Return the stored rows of `index` ([heads, b, classes] float32) and whether each sample was
        seen before ([b] bool), then store `probs` ([heads, b, classes]) as their new rows."""
        if self.world == 1:
            slots = index
            past, seen = self._dense(slots), self.seen.index_select(0, slots)
            if write:
                self._store(slots, probs)
            return past, seen
        b = index.shape[0]
        every = all_gather_cat(index)  # [world * b], rank r's batch at r*b
        mine = (every % self.world) == self.rank
        slots = every[mine] // self.world
        rows = torch.zeros(self.heads, every.shape[0], self.classes + 1, device=probs.device)
        rows[:, mine, : self.classes] = self._dense(slots)
        rows[:, mine, self.classes] = self.seen.index_select(0, slots).float()
        dist.all_reduce(rows)  # each row has exactly one owner: the sum puts every row in place
        local = rows[:, self.rank * b:(self.rank + 1) * b]
        if write:
            # gather the stored form (top-k rows are smaller than dense ones), batch-major: [world * b, heads, k]
            gathered = [all_gather_cat(p.transpose(0, 1).contiguous()) for p in self._encode(probs)]
            self._put(slots, [g.transpose(0, 1)[:, mine] for g in gathered])
        return local[..., : self.classes], local[0, :, self.classes] > 0.5

    def _encode(self, probs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        probs = probs.float()
        if self.topk is None:
            return (probs.to(self.values.dtype),)
        top = probs.topk(self.topk, dim=-1)
        return top.values.to(self.values.dtype), top.indices.to(self.indices.dtype)

    def _store(self, slots: torch.Tensor, probs: torch.Tensor) -> None:
        self._put(slots, list(self._encode(probs)))

    def _put(self, slots: torch.Tensor, payload: list[torch.Tensor]) -> None:
        self.values[:, slots] = payload[0]
        if self.indices is not None:
            self.indices[:, slots] = payload[1]
        self.seen[slots] = True

    def _dense(self, slots: torch.Tensor) -> torch.Tensor:
        """Stored rows as float32 distributions [heads, len(slots), classes]."""
        values = self.values[:, slots].float()
        if self.indices is None:
            return values
        dense = torch.zeros(self.heads, slots.shape[0], self.classes, device=values.device)
        dense.scatter_(-1, self.indices[:, slots].long(), values)
        return dense / dense.sum(-1, keepdim=True).clamp_min(1e-12)

    # -- checkpoints: each rank saves its own rows ---------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        state = {"values": self.values.cpu(), "seen": self.seen.cpu(), "rank": self.rank, "world": self.world}
        if self.indices is not None:
            state["indices"] = self.indices.cpu()
        return state

    def load_shards(self, shards: Callable[[int], dict], old_world: int) -> None:
        """Take this rank's rows from the shards of a run with `old_world` ranks (shard k held the rows
        of samples k, k + old_world, ...), so a run may resume on another number of workers."""
        ks = [self.rank] if old_world == self.world else range(old_world)
        device = self.values.device
        for k in ks:
            shard = shards(k)
            samples = torch.arange(k, self.size, old_world)
            keep = (samples % self.world) == self.rank
            slots = (samples[keep] // self.world).to(device)
            src = keep.nonzero().flatten().to(device)
            self.values[:, slots] = shard["values"].to(device, self.values.dtype)[:, src]
            if self.indices is not None:
                self.indices[:, slots] = shard["indices"].to(device, self.indices.dtype)[:, src]
            self.seen[slots] = shard["seen"].to(device)[src]
