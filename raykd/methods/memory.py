"""Per-sample memories (CRD's embedding banks, PS-KD's last-epoch predictions, DTSKD's history).

A plain tensor kept outside the module tree: DDP would otherwise broadcast the whole bank from
rank 0 on every forward. Instead each update is all-gathered, so every rank holds the same bank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank (identity without an initialised process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class SampleMemory:
    def __init__(self, size: int, dim: int, init: torch.Tensor | None = None):
        self.data = init.clone() if init is not None else torch.zeros(size, dim)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.data.index_select(0, index)

    @torch.no_grad()
    def write(self, index: torch.Tensor, values: torch.Tensor) -> None:
        """Store `values` at `index` on every rank (each rank passes its own batch)."""
        index, values = all_gather_cat(index), all_gather_cat(values.detach().to(self.data.dtype))
        self.data.index_copy_(0, index, values)
