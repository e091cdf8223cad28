"""Atomic checkpoints: write to a temp file beside the target, fsync, rename.

A crash mid-write leaves the previous checkpoint intact. Everything is loaded with
`weights_only=True`, so only tensors and plain containers go in.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from raykd.errors import CheckpointError


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike, map_location="cpu") -> Any:
    """A file raykd saved; CheckpointError naming the file when it is truncated, corrupt or foreign (torch's own
    message, with its advice to load untrusted files with weights_only=False, is not passed on)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - zip, pickle and storage errors all mean the same here
        raise CheckpointError(f"'{path}' is not a readable raykd file: it is truncated, corrupt or was not written "
                              f"by raykd ({type(e).__name__}).") from None


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        except (RuntimeError, IndexError):
            pass  # a different GPU count on resume: CUDA streams restart from their seed


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


class ShardedState:
    """Method state that each rank holds a different part of (DTSKD's per-sample history, sharded by
    sample), saved by every rank beside checkpoint.pt as `sharded/e<epoch>-r<rank>of<world>.pt`.
    checkpoint.pt records which generation it belongs to, so a crash between writing the shards and
    the checkpoint never pairs a checkpoint with another epoch's shards; older generations are
    removed once a newer checkpoint is written. A run may resume on a different number of ranks."""

    def __init__(self, out_dir: Path, rank: int, world: int):
        self.dir, self.rank, self.world = Path(out_dir) / "sharded", rank, world

    def path(self, epoch: int, rank: int, world: int) -> Path:
        return self.dir / f"e{epoch}-r{rank}of{world}.pt"

    def save(self, distiller, epoch: int) -> dict[str, int] | None:
        state = distiller.sharded_state_dict()
        if state is None:
            return None
        save_atomic(state, self.path(epoch, self.rank, self.world))
        if self.world > 1 and dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank's shard is on disk before rank 0's checkpoint refers to them
        return {"epoch": epoch, "world": self.world}

    def prune(self, epoch: int) -> None:
        for p in self.dir.glob("e*-r*of*.pt"):
            if int(p.name[1:].split("-", 1)[0]) < epoch:
                p.unlink(missing_ok=True)

    def load(self, distiller, info: dict[str, int]) -> None:
        def shard(k: int) -> dict[str, Any]:
            p = self.path(info["epoch"], k, info["world"])
            try:
                return load(p)
            except (FileNotFoundError, CheckpointError):
                raise CheckpointError(f"{p} is missing or unreadable: the checkpoint of epoch {info['epoch']} needs every "
                                      f"rank's shard of the method state. Delete {p.parent.parent / 'checkpoint.pt'} "
                                      f"to restart the node from scratch.") from None

        distiller.load_sharded_state(shard, info["world"])
