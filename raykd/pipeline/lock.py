"""Who may train a node: one raykd run at a time per node folder, even when several runs share a store.

A run takes a node's lock (an `fcntl` lock on `<node folder>/.lock`) just before it starts the node and
drops it when the node is done or failed; the kernel drops it when the run dies, even by SIGKILL, so a
killed holder never leaves a node locked. A run that finds a node locked waits for it and then uses what
the other run trained (it checks the node's result first) or, if the other run stopped without
finishing it, trains it itself, resuming from its checkpoint. Locks are taken only for nodes about to
start, whose parents are all finished, so two runs never wait on each other. `store_lock` serialises the
short set-up of a store that two runs could otherwise race on (creating the MLflow database).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

LOCK = ".lock"


class NodeLock:
    def __init__(self, node_dir: Path):
        self.path = Path(node_dir) / LOCK
        self._fd: int | None = None

    def try_acquire(self, holder: dict[str, str]) -> bool:
        """Take the lock without waiting; on success record who holds it (for the waiting run's message)."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        info = {**holder, "pid": str(os.getpid()), "host": socket.gethostname(), "since": time.strftime("%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """Who holds it, in words (from what the holder wrote)."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "another raykd run"
        return (f"raykd run '{info.get('pipeline', '?')}' (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
                f"since {info.get('since', '?')})")

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def store_lock(storage: Path) -> Iterator[None]:
    """Held for a store's short set-up steps (a blocking lock: the holder is done in seconds)."""
    storage.mkdir(parents=True, exist_ok=True)
    fd = os.open(storage / ".raykd-setup.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
