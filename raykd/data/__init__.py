"""Datasets, split deterministically: small ones as in-memory uint8 tensors fed by a device-side loader,
large ones (`image_folder`, `ucf101` past the memory budget, or `data.stream: true`) as file lists
streamed by loader worker processes. `make_loader` picks the loader a split needs."""

from __future__ import annotations

import os
from pathlib import Path

from raykd.data.file_set import FileSet
from raykd.data.image_set import DataBundle, ImageSet, channel_stats, stratified_split
from raykd.data.loader import DeviceLoader
from raykd.errors import DataError

__all__ = ["DataBundle", "DeviceLoader", "FileSet", "ImageSet", "check_data", "load_data", "load_packages_limited",
           "make_loader"]


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
        from raykd.data.ucf101 import load_ucf101, stream_ucf101

        streamed = stream_ucf101(cfg)
        if streamed is not None:
            train, test, names = streamed
        else:
            train, test, names = load_ucf101(cfg.root, cfg.fold, cfg.frames, cfg.image_size, cache_dir)
    elif cfg.name == "image_folder":
        from raykd.data.image_folder import load_image_folder, stream_image_folder

        streamed = stream_image_folder(cfg, cache_dir)
        if streamed is not None:
            train, val, test, names = streamed
        else:
            train, val, test, names = load_image_folder(cfg.root, cfg.image_size, cache_dir)
    else:  # the schema's Literal makes this unreachable for validated configs
        raise DataError(f"data.name: unknown dataset '{cfg.name}'.")
    if val is None:
        if cfg.val_fraction > 0:
            rest, held = stratified_split(train.labels, cfg.val_fraction, cfg.split_seed)
            train, val = train.subset(rest), train.subset(held)
        else:
            val = test
    if isinstance(train, FileSet):  # the standard ImageNet statistics: measuring them would mean decoding the split
        from raykd.data.stream_choice import IMAGENET_MEAN as mean, IMAGENET_STD as std
    else:
        mean, std = channel_stats(train.images[:: max(1, len(train) // 10000)])
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    return _limit(DataBundle(train, val, test, max(num_classes, len(names)), mean, std, names), cfg)


def make_loader(split, cfg, batch_size: int, *, train: bool, device, mean, std, seed: int = 0, rank: int = 0,
                world_size: int = 1, channels_last: bool = False, class_pairs: bool = False, cpus: float = 1.0,
                log=print):
    """The loader a split needs: the device-side one for an in-memory `ImageSet`, the streaming one for a
    `FileSet` (`cfg` is the node's DataConfig: augmentation, loader processes, what to do with bad files)."""
    common = dict(device=device, mean=mean, std=std, train=train, seed=seed, rank=rank, world_size=world_size,
                  channels_last=channels_last, class_pairs=class_pairs)
    if isinstance(split, ImageSet):
        return DeviceLoader(split, batch_size, crop_padding=cfg.augment.crop_padding, flip=cfg.augment.flip, **common)
    from raykd.data.stream_choice import default_size
    from raykd.data.stream_dataset import ViewSpec
    from raykd.data.stream_loader import StreamLoader
    from raykd.data.stream_transforms import default_eval_resize

    size = default_size(cfg)
    view = ViewSpec(size, tuple(cfg.crop_scale), cfg.augment.flip, cfg.eval_resize or default_eval_resize(size))
    workers = cfg.loader_workers if cfg.loader_workers != "auto" else max(1, min(int(cpus), os.cpu_count() or 1))
    return StreamLoader(split, batch_size, view=view, workers=workers, on_corrupt=cfg.on_corrupt, log=log, **common)


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
        from raykd.data.ucf101 import check_layout, require_av

        check_layout(root, cfg.fold, where)
        if cfg.stream is not False:  # a streamed run decodes clips all along; say so before it starts
            require_av()


def _limit(bundle: DataBundle, cfg) -> DataBundle:
    """`train_limit`: keep the first N training images of a fixed seeded shuffle (data-scarce runs)."""
    if cfg.train_limit is None or cfg.train_limit >= len(bundle.train):
        return bundle
    import torch

    g = torch.Generator().manual_seed(cfg.split_seed + 7)
    keep = torch.sort(torch.randperm(len(bundle.train), generator=g)[: cfg.train_limit]).values
    bundle.train = bundle.train.subset(keep)
    return bundle
