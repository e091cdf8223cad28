"""`data.stream: auto`: hold a split in memory when it fits, stream it from disk when it does not.

The in-memory path keeps every decoded split as uint8 in each training worker process (and on its
device), so it is used when all splits together take under a quarter of the memory available now;
CIFAR, digits and Fashion-MNIST never stream.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from raykd.config.schema import STREAMABLE

SHARE = 0.25
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_size(cfg) -> int:
    """The crop a streamed sample is cut to when data.image_size is unset: 224 images, 112 clips."""
    return cfg.image_size or (112 if cfg.name == "ucf101" else 224)


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def decoded_bytes(n_samples: int, sample_shape: tuple[int, ...]) -> int:
    return n_samples * math.prod(sample_shape)


def should_stream(cfg, n_samples: int, sample_shape: tuple[int, ...], memory: int | None = None) -> bool:
    if cfg.name not in STREAMABLE or cfg.stream is False:
        return False
    if cfg.stream is True:
        return True
    return decoded_bytes(n_samples, sample_shape) > SHARE * (available_bytes() if memory is None else memory)


def first_image_shape(path: Path) -> tuple[int, int, int]:
    """(3, H, W) from the file's header, without decoding it (the in-memory size when image_size is unset)."""
    from PIL import Image

    with Image.open(path) as im:
        return (3, im.height, im.width)
