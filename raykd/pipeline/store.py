"""A node's folder on the storage path: its checkpoints, its result and its MLflow run id.

`result.json` is written last and atomically; its presence is what "finished" means, so an
interrupted node is resumed from `checkpoint.pt` and a finished one is never trained again. It records
the size and sha256 of the node's output (`final.pt` or `packages.pt`): a cached node whose output no
longer matches is not finished any more (`check`), and is trained again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from raykd.engine.trainer import FINAL

RESULT = "result.json"
PACKAGES = "packages.pt"  # what a packages node produces instead of a student
RUN = "run.json"


class NodeStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def final(self) -> Path:
        return self.path / FINAL

    def has_result(self) -> bool:
        return (self.path / RESULT).is_file()

    def done(self) -> bool:
        return self.has_result() and self.output.is_file()

    @property
    def output(self) -> Path:
        """What the node produced: a student (`final.pt`), or a package set."""
        return self.final if self.final.is_file() or not (self.path / PACKAGES).is_file() else self.path / PACKAGES

    def fingerprint(self) -> dict[str, Any]:
        """The output's name, size and sha256, for result.json."""
        p = self.output
        return {"file": p.name, "size": p.stat().st_size, "sha256": _sha256(p)}

    def check(self, deep: bool) -> str | None:
        """Why a finished node's output cannot be trusted, or None. The size is always compared (a stat);
        with `deep` the sha256 too (a read of the file), for outputs a node is about to load."""
        try:
            recorded = self.result().get("output")
        except (ValueError, AttributeError):  # not JSON, or not an object
            return f"{self.path / RESULT} is unreadable"
        if not recorded:  # finished before outputs were recorded: only whether there is one
            return None if self.done() else f"{self.output} is missing"
        p = self.path / recorded["file"]
        if not p.is_file():
            return f"{p} is missing"
        size = p.stat().st_size
        if size != recorded["size"]:
            return f"{p} has {size:,} bytes, not the {recorded['size']:,} it had when the node finished"
        if deep and _sha256(p) != recorded["sha256"]:
            return f"{p} has changed since the node finished (its sha256 differs)"
        return None

    def unfinish(self) -> None:
        """Mark the node unfinished (its result is kept beside, as result.json.stale), so it runs again."""
        os.replace(self.path / RESULT, self.path / f"{RESULT}.stale")

    def result(self) -> dict[str, Any]:
        return json.loads((self.path / RESULT).read_text())

    def write_result(self, result: dict[str, Any]) -> None:
        self.write_text(RESULT, json.dumps(result, indent=2, default=str))

    def run_id(self) -> str | None:
        p = self.path / RUN
        return json.loads(p.read_text()).get("run_id") if p.is_file() else None

    def write_run_id(self, run_id: str, tracking_uri: str) -> None:
        self.write_text(RUN, json.dumps({"run_id": run_id, "tracking_uri": tracking_uri}, indent=2))

    def write_text(self, name: str, text: str) -> Path:
        """Atomic: a reader sees the old file or the new one, never half of one."""
        self.path.mkdir(parents=True, exist_ok=True)
        p = self.path / name
        tmp = p.with_name(f".{name}.tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, p)
        return p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
