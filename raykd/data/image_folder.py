"""`ImageFolder` trees (`<split>/<class>/<image>`): decoded once into memory and cached when the splits fit,
streamed from disk otherwise (`stream_image_folder`, see raykd/data/stream_choice.py).

The layout is the one torchvision and ImageNet use: `root/train/<class>/*.jpg`, `root/test/...`
and optionally `root/val/...`. Decoding tens of thousands of JPEGs takes a while, so the decoded
uint8 tensors are cached (keyed by the file list, sizes and mtimes) and every later run, and
every Ray worker, loads them in a second.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from raykd.data.image_set import ImageSet
from raykd.errors import DataError

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def list_split(split_dir: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, classes) of `split_dir/<class>/<image>`; classes sorted unless given (the train split's)."""
    if classes is None:
        classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    files, labels = scan_split(split_dir, classes)
    return [split_dir.parent / f for f in files], labels, classes


def scan_split(split_dir: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Paths `<split>/<class>/<name>` as plain strings (no Path per file: ImageNet has 1.28M) and labels."""
    if not classes:
        raise DataError(f"'{split_dir}' has no class folders: expected '{split_dir}/<class>/<image>'.")
    files, labels = [], []
    for i, c in enumerate(classes):
        cdir = split_dir / c
        if not cdir.is_dir():
            raise DataError(f"class folder '{cdir}' is missing (class '{c}' exists in the train split).")
        with os.scandir(cdir) as entries:  # scandir: names and types in one call per folder, even on NFS
            names = sorted(e.name for e in entries if os.path.splitext(e.name)[1].lower() in EXTENSIONS)
        files += [f"{split_dir.name}/{c}/{n}" for n in names]
        labels += [i] * len(names)
    if not files:
        raise DataError(f"no images ({', '.join(sorted(EXTENSIONS))}) under '{split_dir}'.")
    return files, labels


def decode_files(files: list[Path], image_size: int | None) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    out = None
    first_shape = None
    for i, path in enumerate(files):
        try:
            img = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        except RuntimeError as e:
            raise DataError(f"cannot decode image '{path}': {e}") from None
        if image_size is not None and tuple(img.shape[1:]) != (image_size, image_size):
            img = F.interpolate(img[None].float(), size=(image_size, image_size), mode="bilinear",
                                antialias=True, align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        if out is None:
            first_shape = tuple(img.shape)
            out = torch.empty((len(files), *first_shape), dtype=torch.uint8)
        elif tuple(img.shape) != first_shape:
            raise DataError(
                f"image '{path}' is {tuple(img.shape[1:])} but '{files[0]}' is {first_shape[1:]}; "
                f"set data.image_size to resize every image to one size."
            )
        out[i] = img
    return out


def _fingerprint(files: list[Path], image_size: int | None) -> str:
    h = hashlib.sha256(f"v1|{image_size}".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def load_split(split_dir: Path, classes: list[str] | None, image_size: int | None, cache_dir: Path | None):
    files, labels, classes = list_split(split_dir, classes)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"imagefolder-{split_dir.name}-{_fingerprint(files, image_size)}.pt"
        if cache.is_file():
            blob = torch.load(cache, weights_only=True)
            return ImageSet(blob["images"], blob["labels"]), classes
    images = decode_files(files, image_size)
    data = ImageSet(images, torch.tensor(labels, dtype=torch.int64))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save({"images": data.images, "labels": data.labels}, tmp)
        os.replace(tmp, cache)
    return data, classes


def check_layout(root_path: Path, where: str = "data") -> None:
    """`root/train/` and `root/test/` must exist; `val/` is optional, and stands in for a missing `test/`
    (ImageNet's layout: the papers report its validation set)."""
    if not root_path.is_dir():
        raise DataError(f"{where}.root '{root_path}' is not a folder (dataset image_folder).")
    for needed in ("train", "test"):
        if not (root_path / needed).is_dir() and not (needed == "test" and (root_path / "val").is_dir()):
            raise DataError(
                f"{where}.root '{root_path}' has no '{needed}/' folder: image_folder expects "
                f"'{root_path}/train/<class>/<image>' and '{root_path}/test/<class>/<image>' (or val/)."
            )


def split_dirs(root_path: Path) -> dict[str, Path]:
    """The folders of the train, test and (when separate from test) val splits: with no `test/`, `val/` is the
    test split and validation is held out of train (`data.val_fraction`) or is the test split too."""
    dirs = {"train": root_path / "train"}
    if (root_path / "test").is_dir():
        dirs["test"] = root_path / "test"
        if (root_path / "val").is_dir():
            dirs["val"] = root_path / "val"
    else:
        dirs["test"] = root_path / "val"
    return dirs


def load_image_folder(root: str, image_size: int | None, cache_dir: Path | None):
    """Returns (train, val or None, test, class names)."""
    root_path = Path(root).expanduser()
    check_layout(root_path)
    dirs = split_dirs(root_path)
    train, classes = load_split(dirs["train"], None, image_size, cache_dir)
    test, _ = load_split(dirs["test"], classes, image_size, cache_dir)
    val = load_split(dirs["val"], classes, image_size, cache_dir)[0] if "val" in dirs else None
    return train, val, test, classes


def index_split(split_dir: Path, classes: list[str] | None, cache_dir: Path | None):
    """(paths relative to the split's parent as a bytes array, labels, classes) of a split, listed once and
    cached: listing ImageNet's 1.28M files takes a while on a shared filesystem, and every rank of every node
    would repeat it. The cache key holds each class folder's mtime, which adding or removing a file changes."""
    import numpy as np

    names = classes if classes is not None else sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    h = hashlib.sha256(f"index-v1|{split_dir.resolve()}".encode())
    for c in names:
        st = (split_dir / c).stat() if (split_dir / c).is_dir() else None
        h.update(f"{c}|{st.st_mtime_ns if st else -1}\n".encode())
    cache = Path(cache_dir) / f"imagefolder-index-{split_dir.name}-{h.hexdigest()[:20]}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        with np.load(cache) as blob:
            return blob["paths"], blob["labels"], names
    t0 = time.perf_counter()
    files, labels = scan_split(split_dir, names)
    if time.perf_counter() - t0 > 2:  # a big tree on a network filesystem: say where the time went
        print(f"image_folder: listed {len(files):,} files of '{split_dir}' in {time.perf_counter() - t0:.0f}s"
              f"{' (cached for later runs)' if cache_dir else ''}", file=sys.stderr)
    paths = np.array([f.encode() for f in files], dtype=np.bytes_)
    labels = np.asarray(labels, dtype=np.int64)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, paths=paths, labels=labels)
        os.replace(tmp, cache)
    return paths, labels, names


def stream_image_folder(cfg, cache_dir: Path | None = None):
    """(train, val or None, test, class names) as `FileSet`s when `cfg` streams, else None (load into memory)."""
    from raykd.data.file_set import FileSet
    from raykd.data.stream_choice import default_size, first_image_shape, should_stream

    if cfg.stream is False:
        return None
    root = Path(cfg.root).expanduser()
    check_layout(root)
    dirs = split_dirs(root)
    listed = {"train": index_split(dirs["train"], None, cache_dir)}
    classes = listed["train"][2]
    for split in ("val", "test"):
        if split in dirs:
            listed[split] = index_split(dirs[split], classes, cache_dir)
    limit = min(len(listed["train"][0]), cfg.train_limit or len(listed["train"][0]))
    n = limit + sum(len(paths) for k, (paths, _, _) in listed.items() if k != "train")
    first = root / listed["train"][0][0].decode()
    in_memory = (3, cfg.image_size, cfg.image_size) if cfg.image_size else first_image_shape(first)
    if not should_stream(cfg, n, in_memory):
        return None
    size = default_size(cfg)
    sets = {k: FileSet(str(root), paths, torch.from_numpy(labels), "image", (3, size, size))
            for k, (paths, labels, _) in listed.items()}
    return sets["train"], sets.get("val"), sets["test"], classes
