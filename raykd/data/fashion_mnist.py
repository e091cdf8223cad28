"""Fashion-MNIST from its four gzip'd idx files, padded to 32x32 and repeated to 3 channels."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raykd.data.image_set import ImageSet
from raykd.errors import DataError

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _idx(path: Path, kind: str) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    expected = 2051 if kind == "images" else 2049
    if magic != expected:
        raise DataError(f"'{path}' is not an idx {kind} file (magic {magic}, expected {expected}).")
    if kind == "images":
        n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, h, w)
    return np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)


def _find(root: Path, stem: str) -> Path:
    for folder in (root, root / "FashionMNIST" / "raw", root / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"Fashion-MNIST file '{stem}(.gz)' not found under data.root '{root}'.")


def load_fashion_mnist(root: str) -> tuple[ImageSet, ImageSet, list[str]]:
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise DataError(f"data.root '{root_path}' does not exist (dataset fashion_mnist).")
    out = []
    for split in ("train", "t10k"):
        x = torch.from_numpy(_idx(_find(root_path, f"{split}-images-idx3-ubyte"), "images").copy())
        y = torch.from_numpy(_idx(_find(root_path, f"{split}-labels-idx1-ubyte"), "labels").copy())
        x = F.pad(x.unsqueeze(1), (2, 2, 2, 2)).repeat(1, 3, 1, 1)
        out.append(ImageSet(x.contiguous(), y))
    return out[0], out[1], list(NAMES)
