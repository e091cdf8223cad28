"""The streaming path's loader: torch `DataLoader` worker processes decode and augment each sample from
disk, and batches arrive on the training device as the in-memory `DeviceLoader`'s do (normalised
`image`, `label`, the samples' dataset `index`, and CS-KD's `pair_image` when asked).

Memory is bounded by the batches in flight (`workers` x 2), not by the split. Order and augmentation
come from (seed, epoch, rank) and (seed, epoch, index), so a resumed run reads the batches the
uninterrupted run would have, whichever worker decodes what.
"""

from __future__ import annotations

import time
import weakref

import torch
from torch.utils.data import DataLoader

from raykd.data.file_set import FileSet
from raykd.data.stream_dataset import StreamDataset, ViewSpec, collate
from raykd.data.loader import normalise
from raykd.data.sampling import ClassPartners, rank_seed
from raykd.data.stream_order import eval_batches, train_batches, train_bounds
from raykd.errors import DataError


class _Keys:
    """DataLoader's batch sampler: the epoch's batches as (index, epoch, role) keys, role 1 = class partner."""

    def __init__(self, loader: "StreamLoader"):
        # a weak reference: with a cycle StreamLoader -> DataLoader -> _Keys -> StreamLoader, a dropped loader
        # waits for the garbage collector, which closes the workers' queues before DataLoader's shutdown can
        # send them the stop message, and each persistent worker then stalls its 5 s join timeout
        self.loader = weakref.proxy(loader)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        ld = self.loader
        g = torch.Generator().manual_seed(rank_seed(ld.seed, ld.epoch, ld.rank))
        for idx in ld._batches():
            keys = [(i, ld.epoch, 0) for i in idx.tolist()]
            if ld.partners is not None:
                keys += [(i, ld.epoch, 1) for i in ld.partners(idx, g).tolist()]
            yield keys


class StreamLoader:
    def __init__(
        self,
        files: FileSet,
        batch_size: int,
        device: torch.device | str,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        train: bool,
        view: ViewSpec,
        workers: int = 2,
        on_corrupt: str = "error",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        class_pairs: bool = False,
        log=print,
    ):
        self.files, self.batch_size, self.device = files, batch_size, torch.device(device)
        self.train, self.on_corrupt, self.log = train, on_corrupt, log
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.channels_last = channels_last
        self.labels = files.labels.to(self.device)
        self.partners = ClassPartners(files.labels) if class_pairs and train else None
        shape = (1, 1, -1, 1, 1) if files.is_video else (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=self.device).view(shape)
        self.std = torch.tensor(std, device=self.device).view(shape)
        self.skipped: list[str] = []  # files skipped this epoch (on_corrupt: skip)
        self._reported: set[str] = set()  # each skipped file is logged once a run
        self.wait_seconds = 0.0  # this epoch's time the training loop spent waiting for a batch
        self.reads = torch.zeros(0, dtype=torch.int32)  # this epoch's reads of each sample by this rank
        pin = self.device.type == "cuda"
        self.loader = DataLoader(
            StreamDataset(files, view, train, seed), batch_sampler=_Keys(self), num_workers=workers,
            collate_fn=collate, pin_memory=pin, persistent_workers=train and workers > 0,
            prefetch_factor=2 if workers > 0 else None,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[torch.Tensor]:
        n = len(self.files)
        if self.train:
            return train_batches(n, self.batch_size, self.seed, self.epoch, self.rank, self.world_size)
        return eval_batches(n, self.batch_size, self.rank, self.world_size)

    def __len__(self) -> int:
        n = len(self.files)
        if self.train:
            return len(train_bounds(n, self.batch_size, self.world_size)) - 1
        return -(-len(range(self.rank, n, self.world_size)) // self.batch_size)

    def __iter__(self):
        self.skipped, self.wait_seconds = [], 0.0
        self.reads = torch.zeros(len(self.files), dtype=torch.int32)
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                raw = next(it)
            except StopIteration:
                return
            self.wait_seconds += time.perf_counter() - t0
            yield self._to_device(raw)

    def _to_device(self, raw: dict) -> dict:
        index, keep = raw["index"], raw["position"]
        b = len(index) // 2 if self.partners is not None else len(index)
        if raw["bad"]:
            self._bad(raw["bad"])
            ok = torch.zeros(len(index), dtype=torch.bool)
            ok[keep] = True
            pair_ok = ok[:b] & ok[b:] if self.partners is not None else ok
            if not pair_ok.any():
                raise DataError(f"every sample of a batch of {self.files.root} is unreadable (e.g. "
                                f"'{self.skipped[-1]}'): the split looks damaged.")
            # rows of `image` hold the readable samples in order; keep those whose pair is readable too
            row = torch.cumsum(ok.long(), 0) - 1
            sel = torch.nonzero(pair_ok).flatten()
            rows = row[sel] if self.partners is None else torch.cat([row[sel], row[sel + b]])
            image, own = raw["image"][rows], index[sel]
        else:
            image, own = raw["image"], index[:b]
        self.reads.index_add_(0, own, torch.ones(len(own), dtype=torch.int32))
        x = image.to(self.device, non_blocking=True)
        own = own.to(self.device, non_blocking=True)
        x = normalise(x, self.mean, self.std, self.channels_last)
        out = {"label": self.labels.index_select(0, own), "index": own}
        if self.partners is not None:
            out["image"], out["pair_image"] = x.chunk(2)
        else:
            out["image"] = x
        return out

    def _bad(self, bad: list) -> None:
        _, index, error = bad[0]
        path = self.files.path(index)
        if self.on_corrupt != "skip":
            raise DataError(f"cannot read '{path}' ({error}). Fix or remove the file, or set data.on_corrupt: skip "
                            f"to skip unreadable files (they are counted and logged to MLflow).")
        for _, index, error in bad:
            path = self.files.path(index)
            self.skipped.append(path)
            if path not in self._reported:
                self._reported.add(path)
                self.log(f"skipping unreadable '{path}' ({error})")
