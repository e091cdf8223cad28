"""CIFAR-10/100 from a local torchvision-format folder (the python pickles), no torchvision needed.

`root` may be the folder holding `cifar-10-batches-py/` (as torchvision lays it out) or that
folder itself. Downloading happens only when the config says `download: true`.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from raykd.data.image_set import ImageSet
from raykd.data.safe_pickle import load_data_pickle
from raykd.errors import DataError

_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", "batches.meta", b"label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", "meta", b"fine_label_names"),
}


def _find_dir(name: str, root: Path) -> Path:
    folder = _LAYOUT[name][0]
    for cand in (root / folder, root):
        if (cand / _LAYOUT[name][1][0]).is_file():
            return cand
    raise DataError(
        f"data.root '{root}' does not hold {name} in torchvision format: expected '{root / folder}/"
        f"{_LAYOUT[name][1][0]}'. Point data.root at the folder containing '{folder}', or set "
        f"data.download=true to fetch it."
    )


def load_cifar(name: str, root: str, download: bool = False) -> tuple[ImageSet, ImageSet, list[str]]:
    root_path = Path(root).expanduser()
    if download:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        cls(str(root_path), train=True, download=True)
        cls(str(root_path), train=False, download=True)
    if not root_path.exists():
        raise DataError(f"data.root '{root_path}' does not exist (dataset {name}).")
    folder = _find_dir(name, root_path)
    _, train_files, test_files, label_key, meta_file, names_key = _LAYOUT[name]
    train = _read(folder, train_files, label_key)
    test = _read(folder, test_files, label_key)
    names: list[str] = []
    if (folder / meta_file).is_file():
        meta = _unpickle(folder / meta_file)
        names = [n.decode() for n in meta.get(names_key, [])] if isinstance(meta, dict) else []
    return train, test, names


def _unpickle(path: Path):
    try:
        with open(path, "rb") as f:
            return load_data_pickle(f)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"CIFAR file '{path}' is not a valid CIFAR pickle ({type(e).__name__}: {e}).") from None


def _read(folder: Path, files: list[str], label_key: bytes) -> ImageSet:
    xs, ys = [], []
    for fname in files:
        path = folder / fname
        if not path.is_file():
            raise DataError(f"CIFAR file missing: '{path}'.")
        entry = _unpickle(path)
        try:
            xs.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry[label_key], dtype=np.int64))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"CIFAR file '{path}' is not a valid CIFAR pickle ({type(e).__name__}: {e}).") from None
    return ImageSet(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))
