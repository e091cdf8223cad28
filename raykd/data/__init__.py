"""Datasets as in-memory uint8 tensors, split deterministically, fed by a device-side loader."""

from __future__ import annotations

from pathlib import Path

from raykd.data.image_set import DataBundle, ImageSet, channel_stats, stratified_split
from raykd.data.loader import DeviceLoader
from raykd.errors import DataError

__all__ = ["DataBundle", "DeviceLoader", "ImageSet", "check_data", "load_data", "load_packages_limited"]


def load_data(cfg, cache_dir: Path | None = None) -> DataBundle:
    """Build the splits a DataConfig describes. Val is held out of train (stratified, by seed)
    unless the dataset ships its own."""
    if cfg.name == "digits":
        from raykd.data.digits import load_digits_bundle

        bundle = load_digits_bundle(cfg.val_fraction, cfg.test_fraction, cfg.split_seed, cfg.image_size)
        return _limit(bundle, cfg)
    if cfg.name == "digits_video":
        from raykd.data.digits_video import load_digits_video_bundle

        return _limit(load_digits_video_bundle(cfg), cfg)
    check_data(cfg)
    val = None
    if cfg.name in ("cifar10", "cifar100"):
        from raykd.data.cifar import load_cifar

        train, test, names = load_cifar(cfg.name, cfg.root, cfg.download)
    elif cfg.name == "fashion_mnist":
        from raykd.data.fashion_mnist import load_fashion_mnist

        train, test, names = load_fashion_mnist(cfg.root)
    elif cfg.name == "ucf101":
        from raykd.data.ucf101 import load_ucf101

        train, test, names = load_ucf101(cfg.root, cfg.fold, cfg.frames, cfg.image_size, cache_dir)
    elif cfg.name == "image_folder":
        from raykd.data.image_folder import load_image_folder

        train, val, test, names = load_image_folder(cfg.root, cfg.image_size, cache_dir)
    else:  # the schema's Literal makes this unreachable for validated configs
        raise DataError(f"data.name: unknown dataset '{cfg.name}'.")
    if val is None:
        if cfg.val_fraction > 0:
            rest, held = stratified_split(train.labels, cfg.val_fraction, cfg.split_seed)
            train, val = train.subset(rest), train.subset(held)
        else:
            val = test
    mean, std = channel_stats(train.images[:: max(1, len(train) // 10000)])
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    return _limit(DataBundle(train, val, test, max(num_classes, len(names)), mean, std, names), cfg)


def load_packages_limited(path: Path, cfg) -> DataBundle:
    """A packages node's clip dataset, with this node's `train_limit` applied."""
    from raykd.data.packages import load_packages

    return _limit(load_packages(path), cfg)


def check_data(cfg, where: str = "data") -> None:
    """Cheap checks a driver runs before launching anything: the folder exists and has the
    expected layout (no decoding). The loaders repeat them with the same messages."""
    if cfg.name in ("digits", "digits_video"):
        return
    if cfg.root is None:
        raise DataError(f"{where}.root is required for dataset '{cfg.name}' (a local folder).")
    root = Path(cfg.root).expanduser()
    if cfg.download and cfg.name in ("cifar10", "cifar100"):
        return
    if not root.exists():
        raise DataError(f"{where}.root '{root}' does not exist (dataset {cfg.name}).")
    if cfg.name in ("cifar10", "cifar100"):
        from raykd.data.cifar import _find_dir

        _find_dir(cfg.name, root)
    elif cfg.name == "fashion_mnist":
        from raykd.data.fashion_mnist import _find

        for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                     "t10k-labels-idx1-ubyte"):
            _find(root, stem)
    elif cfg.name == "image_folder":
        from raykd.data.image_folder import check_layout

        check_layout(root, where)
    elif cfg.name == "ucf101":
        from raykd.data.ucf101 import check_layout

        check_layout(root, cfg.fold, where)


def _limit(bundle: DataBundle, cfg) -> DataBundle:
    """`train_limit`: keep the first N training images of a fixed seeded shuffle (data-scarce runs)."""
    if cfg.train_limit is None or cfg.train_limit >= len(bundle.train):
        return bundle
    import torch

    g = torch.Generator().manual_seed(cfg.split_seed + 7)
    keep = torch.sort(torch.randperm(len(bundle.train), generator=g)[: cfg.train_limit]).values
    bundle.train = bundle.train.subset(keep)
    return bundle
