"""A split that stays on disk: file paths and labels, decoded one sample at a time by the streaming loader.

Paths are kept in one numpy byte array, not a list of Python strings: loader worker processes fork
from the training process, and touching a million `str` objects would copy every page that holds
them into every worker (reference counts are writes). A byte array is never written to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class FileSet:
    """Images (`kind` "image") or video clips ("clip") under `root`, with int64 labels and the shape
    one decoded, augmented sample has ([C, H, W], or [F, C, H, W] for clips)."""

    root: str
    paths: np.ndarray  # bytes, relative to root
    labels: torch.Tensor  # int64 [N]
    kind: str
    sample_shape: tuple[int, ...]
    targets: torch.Tensor | None = None  # streamed splits have hard labels only

    def __post_init__(self):
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} files but {len(self.labels)} labels")
        if self.kind not in ("image", "clip"):
            raise ValueError(f"kind must be 'image' or 'clip', got {self.kind!r}")

    @classmethod
    def from_relative(cls, root: Path, rel: list[str], labels: list[int], kind: str,
                      sample_shape: tuple[int, ...]) -> "FileSet":
        paths = np.array([p.encode() for p in rel], dtype=np.bytes_)
        return cls(str(root), paths, torch.tensor(labels, dtype=torch.int64), kind, tuple(sample_shape))

    @property
    def is_video(self) -> bool:
        return self.kind == "clip"

    def path(self, i: int) -> str:
        return str(Path(self.root) / self.paths[i].decode())

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "FileSet":
        idx = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        return FileSet(self.root, self.paths[idx], self.labels[torch.as_tensor(idx)].contiguous(), self.kind,
                       self.sample_shape)
