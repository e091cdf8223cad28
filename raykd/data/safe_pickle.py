"""Unpickling the CIFAR python batches without running code: a dataset file is input, and `pickle.load`
on a crafted file executes whatever it names. Only what the format needs may be built: plain containers
(dicts, lists, bytes, ints) and numpy arrays, as the official release (Python 2, protocol 2) and numpy
(any protocol, including 5's buffers) pickle them."""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

import numpy as np

_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocols < 3
}

_NUMPY_2 = int(np.__version__.split(".")[0]) >= 2


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it asks to build '{module}.{name}', which a CIFAR batch never contains "
                                         f"(refused: unpickling it could run code)")
        if module.startswith("numpy.core.") and _NUMPY_2:  # numpy 2 moved these to numpy._core
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def load_data_pickle(f: BinaryIO | bytes) -> Any:
    """`pickle.load(f, encoding="bytes")` restricted to containers and numpy arrays."""
    if isinstance(f, bytes):
        f = io.BytesIO(f)
    return _NumpyOnly(f, encoding="bytes").load()
