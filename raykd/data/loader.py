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
from raykd.data.sampling import ClassPartners, epoch_seed, rank_seed


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 images or clips to the model's float input, on x's device (both loaders)."""
    x = x.float().div_(255).sub_(mean).div_(std)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


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
        self._partners = ClassPartners(data.labels.cpu()) if self.class_pairs else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(n)[self.rank :: self.world_size]
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        perm = torch.randperm(n, generator=g)
        per_rank = n // self.world_size
        return perm[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __len__(self) -> int:
        n = len(self._order())
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self):
        order = self._order()
        steps = len(self)
        order_dev = order[: steps * self.batch_size].to(self.device)  # one copy per epoch, sliced per batch
        draws = self._draws(order, steps)
        for i in range(steps):
            idx = order_dev[i * self.batch_size : (i + 1) * self.batch_size]
            batch = {"image": self._augment(idx, draws[0], i), "label": self.labels.index_select(0, idx), "index": idx}
            if self.targets is not None:
                batch["target"] = self.targets.index_select(0, idx)
            if self.class_pairs:
                batch["pair_image"] = self._augment(draws[2][i], draws[1], i)
            yield batch

    def _draws(self, order: torch.Tensor, steps: int):
        """The epoch's random numbers, drawn on the host in the per-batch order (so a seed gives the batches it
        always gave) and copied to the device once: the batches themselves need no host-to-device copy.
        (crop/flip draws of the images, crop/flip draws of their class partners, the partners' indices)."""
        g = torch.Generator().manual_seed(rank_seed(self.seed, self.epoch, self.rank))
        mine, theirs, partners = [], [], []
        for i in range(steps):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            mine.append(self._augment_draws(len(idx), g))
            if self.class_pairs:
                partners.append(self._partners(idx, g))
                theirs.append(self._augment_draws(len(idx), g))
        return self._to_device(mine), self._to_device(theirs), torch.stack(partners).to(self.device) if partners else None

    def _augment_draws(self, b: int, g: torch.Generator) -> list[torch.Tensor]:
        out = []
        if self.crop_padding:
            out += [torch.randint(0, 2 * self.crop_padding + 1, (b,), generator=g) for _ in range(2)]
        if self.flip:
            out.append(torch.rand(b, generator=g) < 0.5)
        return out

    def _to_device(self, per_step: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """Per kind of draw, a [steps, batch] tensor on the device (none when nothing is drawn)."""
        if not per_step or not per_step[0]:
            return []
        return [torch.stack([s[k] for s in per_step]).to(self.device) for k in range(len(per_step[0]))]

    def _augment(self, idx: torch.Tensor, draws: list[torch.Tensor], step: int) -> torch.Tensor:
        x = self.images.index_select(0, idx)
        clip_shape = x.shape if x.dim() == 5 else None
        if clip_shape is not None:  # one crop and flip per clip: frames folded into channels
            x = x.flatten(1, 2)
        if self.crop_padding:
            x = shifted_crop(x, self.crop_padding, draws[0][step], draws[1][step])
        if self.flip:
            x = masked_flip(x, draws[-1][step])
        if clip_shape is not None:
            x = x.view(clip_shape)
        return normalise(x, self.mean, self.std, self.channels_last)


def shifted_crop(x: torch.Tensor, padding: int, oy: torch.Tensor, ox: torch.Tensor) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to size at offsets (`oy`, `ox`) per sample, on x's device."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def masked_flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of the samples where `mask` is true."""
    return torch.where(mask[:, None, None, None], x.flip(3), x)
