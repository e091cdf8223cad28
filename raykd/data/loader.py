"""The in-memory fast path: the whole split lives on the training device as uint8, and each
batch is cropped, flipped and normalised there in a few tensor ops — no per-sample PIL work,
no worker processes.

Randomness comes from (seed, epoch, rank) alone, so a resumed run sees exactly the batches the
uninterrupted run would have seen. Under DDP every rank shuffles with the same permutation and
takes its own slice of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.data.image_set import ImageSet


class DeviceLoader:
    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        device: torch.device | str,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        train: bool,
        crop_padding: int = 0,
        flip: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        class_pairs: bool = False,
    ):
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.targets = data.targets.to(self.device) if train and data.targets is not None else None
        self.batch_size = batch_size
        self.train = train
        self.crop_padding = crop_padding if train else 0
        self.flip = flip and train
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last = channels_last
        c = self.images.shape[-3]
        shape = (1, 1, c, 1, 1) if data.is_video else (1, c, 1, 1)
        self.mean = torch.tensor(mean, device=self.device).view(shape)
        self.std = torch.tensor(std, device=self.device).view(shape)
        self.epoch = 0
        self.class_pairs = class_pairs and train
        if self.class_pairs:  # images grouped by class, for drawing a same-class partner per sample
            self._labels_cpu = data.labels.cpu()
            self._by_class = torch.argsort(self._labels_cpu, stable=True)
            self._count = torch.bincount(self._labels_cpu)
            self._start = torch.cumsum(self._count, 0) - self._count

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(n)[self.rank :: self.world_size]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(n, generator=g)
        per_rank = n // self.world_size
        return perm[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __len__(self) -> int:
        n = len(self._order())
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self):
        order = self._order()
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 131 + self.rank + 1)
        steps = len(self)
        for i in range(steps):
            idx_cpu = order[i * self.batch_size : (i + 1) * self.batch_size]
            idx = idx_cpu.to(self.device, non_blocking=True)
            batch = {"image": self._augment(idx, g), "label": self.labels.index_select(0, idx), "index": idx}
            if self.targets is not None:
                batch["target"] = self.targets.index_select(0, idx)
            if self.class_pairs:
                batch["pair_image"] = self._augment(self._partners(idx_cpu, g).to(self.device), g)
            yield batch

    def _augment(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = self.images.index_select(0, idx)
        clip_shape = x.shape if x.dim() == 5 else None
        if clip_shape is not None:  # one crop and flip per clip: frames folded into channels
            x = x.flatten(1, 2)
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, g)
        if self.flip:
            x = random_flip(x, g)
        if clip_shape is not None:
            x = x.view(clip_shape)
        x = x.float().div_(255).sub_(self.mean).div_(self.std)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _partners(self, idx_cpu: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A uniformly drawn training image of the same class for each index (CS-KD's pairs)."""
        labels = self._labels_cpu[idx_cpu]
        offset = (torch.rand(len(idx_cpu), generator=g) * self._count[labels]).long()
        return self._by_class[self._start[labels] + offset]


def random_crop(x: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to size at a random offset per sample (batched)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=g).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=g).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Horizontal flip of a random half of the batch."""
    mask = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(mask, x.flip(3), x)
