"""The streamed split as a torch `Dataset`: one key (index, epoch, role) in, one decoded and augmented
uint8 sample out, in whichever loader worker process draws it.

A file that cannot be read does not raise inside the worker (the traceback would arrive wrapped in
DataLoader's text, or a dying worker would hang a DDP peer): the sample comes back as `None` with the
error, and the loader in the training process decides — stop naming the file, or skip and count it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from raykd.data.file_set import FileSet
from raykd.data.sampling import epoch_seed
from raykd.data.stream_transforms import decode_clip_frames, decode_image_file, eval_view, train_view


@dataclass(frozen=True)
class ViewSpec:
    """How a sample is cut: crop `size`, train's area range `scale` and `flip`, eval's short side `resize`."""

    size: int
    scale: tuple[float, float]
    flip: bool
    resize: int


def sample_seed(seed: int, epoch: int, index: int, role: int) -> int:
    return (epoch_seed(seed, epoch) * 4_294_967_311 + index * 2 + role) % (2**63 - 1)


class StreamDataset(Dataset):
    def __init__(self, files: FileSet, view: ViewSpec, train: bool, seed: int):
        self.files, self.view, self.train, self.seed = files, view, train, seed
        self.frames = files.sample_shape[0] if files.is_video else 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int, int]):
        index, epoch, role = key
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index, role)) if self.train else None
        path = self.files.path(index)
        try:
            if self.files.is_video:
                x = decode_clip_frames(path, self.frames, self.train, g)
            else:
                x = decode_image_file(path)
            v = self.view
            x = train_view(x, v.size, v.scale, v.flip, g) if self.train else eval_view(x, v.size, v.resize)
        except Exception as e:  # noqa: BLE001 - any failure to read a file is reported by name
            return None, index, reason(e)
        return x, index, None


def reason(e: Exception) -> str:
    """One line saying why a file could not be read, without the decoder's source location (torchvision's
    messages start "decode_jpeg, /path/to/decode_jpeg.cpp:171, ")."""
    text = str(e).splitlines()[0] if str(e) else ""
    text = re.sub(r"^\w+, \S+:\d+, ", "", text)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def collate(samples: list) -> dict:
    """Stacks the readable samples; `bad` lists (position, index, error) of the others."""
    good = [(i, s[0]) for i, s in enumerate(samples) if s[0] is not None]
    return {
        "image": torch.stack([x for _, x in good]) if good else None,
        "position": torch.tensor([i for i, _ in good], dtype=torch.int64),
        "index": torch.tensor([s[1] for s in samples], dtype=torch.int64),
        "bad": [(i, s[1], s[2]) for i, s in enumerate(samples) if s[0] is None],
    }
