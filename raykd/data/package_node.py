"""Runs a packages node: the source images and the teacher in, `packages.pt` and its label
statistics out (logged to the node's MLflow run like any metrics)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from raykd.errors import ConfigError


def run_packages(node, teacher_path: Path, out_dir: Path, device: torch.device, data_cache: Path | None,
                 log=print) -> dict[str, Any]:
    from raykd.data import load_data
    from raykd.data.packages import build_packages, save_packages
    from raykd.engine.student_file import load_student
    from raykd.models.video import VideoClassifier

    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(node.data, data_cache)
    if data.streamed:
        raise ConfigError(f"nodes.{node.name}.data: packages are generated from images held in memory, but "
                          f"'{node.data.root}' streams from disk (too large for memory, or data.stream: true); "
                          f"set data.stream: false with data.image_size and data.train_limit to package a subset.")
    if data.is_video:
        raise ConfigError(f"nodes.{node.name}.data: packages are built from an image dataset, but "
                          f"'{node.data.name}' holds clips.")
    teacher, meta = load_student(teacher_path, device)
    if isinstance(teacher, VideoClassifier):
        teacher = teacher.backbone
    if meta["num_classes"] != data.num_classes:
        raise ConfigError(f"nodes.{node.name}: teacher '{node.teacher}' predicts {meta['num_classes']} classes but "
                          f"the data has {data.num_classes}.")
    tag = lambda m: log(f"[{node.name}] {m}")  # noqa: E731
    bundle, stats = build_packages(data, teacher, meta["mean"], meta["std"], node.method, device, log=tag)
    save_packages(out_dir / "packages.pt", bundle, stats)
    (out_dir / "package_stats.json").write_text(json.dumps(stats, indent=2))
    return {**stats, "epochs": 0}
