"""A node's folder on the storage path: its checkpoints, its result and its MLflow run id.

`result.json` is written last and atomically; its presence is what "finished" means, so an
interrupted node is resumed from `checkpoint.pt` and a finished one is never trained again.
"""

from __future__ import annotations

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

    def done(self) -> bool:
        return (self.path / RESULT).is_file() and (self.final.is_file() or (self.path / PACKAGES).is_file())

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

