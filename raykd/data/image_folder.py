"""`ImageFolder` trees (`<split>/<class>/<image>`), decoded once into memory and cached.

The layout is the one torchvision and ImageNet use: `root/train/<class>/*.jpg`, `root/test/...`
and optionally `root/val/...`. Decoding tens of thousands of JPEGs takes a while, so the decoded
uint8 tensors are cached (keyed by the file list, sizes and mtimes) and every later run, and
every Ray worker, loads them in a second.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from raykd.data.image_set import ImageSet
from raykd.errors import DataError

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def list_split(split_dir: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    if classes is None:
        classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"'{split_dir}' has no class folders: expected '{split_dir}/<class>/<image>'.")
    files, labels = [], []
    for i, c in enumerate(classes):
        cdir = split_dir / c
        if not cdir.is_dir():
            raise DataError(f"class folder '{cdir}' is missing (class '{c}' exists in the train split).")
        found = sorted(p for p in cdir.iterdir() if p.suffix.lower() in EXTENSIONS)
        files += found
        labels += [i] * len(found)
    if not files:
        raise DataError(f"no images ({', '.join(sorted(EXTENSIONS))}) under '{split_dir}'.")
    return files, labels, classes


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
    """`root/train/` and `root/test/` must exist (val/ is optional)."""
    if not root_path.is_dir():
        raise DataError(f"{where}.root '{root_path}' is not a folder (dataset image_folder).")
    for needed in ("train", "test"):
        if not (root_path / needed).is_dir():
            raise DataError(
                f"{where}.root '{root_path}' has no '{needed}/' folder: image_folder expects "
                f"'{root_path}/train/<class>/<image>' and '{root_path}/test/<class>/<image>'."
            )


def load_image_folder(root: str, image_size: int | None, cache_dir: Path | None):
    """Returns (train, val or None, test, class names)."""
    root_path = Path(root).expanduser()
    check_layout(root_path)
    train, classes = load_split(root_path / "train", None, image_size, cache_dir)
    test, _ = load_split(root_path / "test", classes, image_size, cache_dir)
    val = None
    if (root_path / "val").is_dir():
        val, _ = load_split(root_path / "val", classes, image_size, cache_dir)
    return train, val, test, classes
