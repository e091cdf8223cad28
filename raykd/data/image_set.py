"""An in-memory image dataset: uint8 NCHW images, int64 labels, and the split's name."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageSet:
    """Images [N, C, H, W] or clips [N, F, C, H, W] (uint8), int64 labels, and optionally soft
    `targets` [N, classes] (video packages' pseudo-labels) that training uses instead of labels."""

    images: torch.Tensor
    labels: torch.Tensor  # int64 [N]
    targets: torch.Tensor | None = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() not in (4, 5):
            raise ValueError(f"images must be uint8 [N, C, H, W] or clips [N, F, C, H, W], got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.targets is not None and len(self.targets) != len(self.labels):
            raise ValueError(f"{len(self.targets)} soft targets but {len(self.labels)} labels")

    @property
    def is_video(self) -> bool:
        return self.images.dim() == 5

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        targets = None if self.targets is None else self.targets[index].contiguous()
        return ImageSet(self.images[index].contiguous(), self.labels[index].contiguous(), targets)


@dataclass
class DataBundle:
    """Train/val/test splits (in memory, or `FileSet`s the streaming loader reads from disk) plus what the
    model and normaliser need to know."""

    train: ImageSet  # or FileSet: both have labels, sample_shape, is_video, subset
    val: ImageSet
    test: ImageSet
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.train.sample_shape

    @property
    def in_channels(self) -> int:
        return self.sample_shape[-3]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.sample_shape[-2:])

    @property
    def is_video(self) -> bool:
        return self.train.is_video

    @property
    def streamed(self) -> bool:
        return not isinstance(self.train, ImageSet)

    def summary(self) -> str:
        frames = f"clips of {self.sample_shape[0]} frames of " if self.is_video else ""
        how = ", streamed from disk" if self.streamed else ""
        return (f"{len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
                f"{self.num_classes} classes, {frames}{self.in_channels}x{self.image_size[0]}x{self.image_size[1]}{how}")


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (rest, held_out) with `fraction` of every class held out, by seed."""
    g = torch.Generator().manual_seed(seed)
    rest, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * fraction))
        held.append(idx[:k])
        rest.append(idx[k:])
    return torch.sort(torch.cat(rest)).values, torch.sort(torch.cat(held)).values


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] units, from the training split only."""
    x = images.flatten(0, images.dim() - 4).float().div_(255)  # clips: frames are samples too
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
