"""The embedded default: scikit-learn's bundled 8x8 digits, upsampled to 3x32x32.

Real handwritten digits that ship with every install, so the quickstart and tests need no
download. Split into train/val/test, stratified and deterministic per `split_seed`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.data.image_set import DataBundle, ImageSet, channel_stats, stratified_split


def load_digits_bundle(val_fraction: float, test_fraction: float, split_seed: int, image_size: int | None = None) -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N,1,8,8] in [0,1]
    size = image_size or 32
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    labels = torch.tensor(d.target, dtype=torch.int64)
    full = ImageSet(images, labels)
    rest, test_idx = stratified_split(labels, test_fraction, split_seed)
    rest_set = full.subset(rest)
    train_idx, val_idx = stratified_split(rest_set.labels, val_fraction, split_seed + 1)
    train = rest_set.subset(train_idx)
    mean, std = channel_stats(train.images)
    return DataBundle(train, rest_set.subset(val_idx), full.subset(test_idx), 10, mean, std,
                      [str(i) for i in range(10)])
