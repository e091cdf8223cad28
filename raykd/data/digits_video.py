"""The embedded video default: short clips made from scikit-learn's digits.

Each clip watches one digit for F frames under a moving camera (a drift of a few pixels), a
lighting ramp and, in half the clips, a grey occluder sliding across. A clip depends only on
(seed, index), so any process rebuilds exactly the same data. `label_noise` flips that share of
the training clips' labels to another class (the weak supervision SKD is about).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.data.image_set import DataBundle, ImageSet, channel_stats


def _shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate a [C, H, W] image by whole pixels, filling with zeros."""
    c, h, w = img.shape
    p = max(abs(dy), abs(dx))
    if p == 0:
        return img
    padded = F.pad(img, (p, p, p, p))
    return padded[:, p - dy: p - dy + h, p - dx: p - dx + w]


def make_clip(image: torch.Tensor, frames: int, seed: int, index: int) -> torch.Tensor:
    """uint8 [F, C, H, W] clip of one uint8 [C, H, W] image, a pure function of (seed, index)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    u = lambda lo, hi, n=1: lo + (hi - lo) * torch.rand(n, generator=g)  # noqa: E731
    start, velocity = u(-3, 3, 2), u(-1, 1, 2)
    gain0, gain1 = u(0.6, 1.0).item(), u(0.8, 1.25).item()
    occlude = torch.rand(1, generator=g).item() < 0.5
    c, h, w = image.shape
    size = int(u(h * 0.2, h * 0.35).item())
    box0, box_v = u(0, h - size, 2), u(-2, 2, 2)
    x = image.float()
    out = []
    for t in range(frames):
        dy, dx = (start + velocity * t).round().int().tolist()
        frame = _shift(x, dy, dx) * (gain0 + (gain1 - gain0) * t / max(1, frames - 1))
        if occlude:
            by, bx = (box0 + box_v * t).clamp(0, h - size).round().int().tolist()
            frame = frame.clone()
            frame[:, by: by + size, bx: bx + size] = 128.0
        out.append(frame)
    return torch.stack(out).clamp(0, 255).round().to(torch.uint8)


def noisy_labels(labels: torch.Tensor, fraction: float, num_classes: int, seed: int) -> torch.Tensor:
    """`fraction` of the labels moved to a different class, chosen by seed."""
    if fraction <= 0:
        return labels
    g = torch.Generator().manual_seed(seed * 7919 + 1)
    flip = torch.rand(len(labels), generator=g) < fraction
    other = (labels + torch.randint(1, num_classes, (len(labels),), generator=g)) % num_classes
    return torch.where(flip, other, labels)


def to_clips(images: ImageSet, frames: int, seed: int, offset: int = 0) -> ImageSet:
    clips = torch.stack([make_clip(img, frames, seed, offset + i) for i, img in enumerate(images.images)])
    return ImageSet(clips, images.labels)


def load_digits_video_bundle(cfg) -> DataBundle:
    """The digits splits, each image turned into a clip; label noise on the training split only."""
    from raykd.data.digits import load_digits_bundle

    images = load_digits_bundle(cfg.val_fraction, cfg.test_fraction, cfg.split_seed, cfg.image_size)
    seed = cfg.split_seed
    train = to_clips(images.train, cfg.frames, seed, 0)
    val = to_clips(images.val, cfg.frames, seed, 100_000)
    test = to_clips(images.test, cfg.frames, seed, 200_000)
    train.labels = noisy_labels(train.labels, cfg.label_noise, 10, seed)
    mean, std = channel_stats(train.images)
    return DataBundle(train, val, test, 10, mean, std, [str(i) for i in range(10)])
