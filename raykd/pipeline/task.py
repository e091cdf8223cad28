"""What a worker receives and runs for one node: the engine plus live metric logging.

A `NodeTask` is plain, picklable data; `run_task` is the same in-process and inside a Ray
Train worker (which passes its rank, world size and device).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from raykd.config import ResolvedNode
from raykd.engine import RunContext, fit, pick_device
from raykd.tracking import MetricLogger


@dataclass
class NodeTask:
    name: str
    hash: str
    node: ResolvedNode
    out_dir: str
    teacher_path: str | None
    data_cache: str
    tracking_uri: str | None
    run_id: str | None
    init_path: str | None = None
    member_paths: dict[str, str] | None = None  # an integration node's members' final.pt files
    dataset_path: str | None = None  # the packages.pt this node trains on


def run_task(task: NodeTask, rank: int = 0, world_size: int = 1, device: torch.device | None = None,
             log=print, on_epoch=None) -> dict[str, Any]:
    """`on_epoch(epoch, metrics)`: called on every rank after each epoch's checkpoint, after rank 0's MLflow
    logging (a sweep's trial reports to Tune there)."""
    if task.node.integrates:
        from raykd.integrate import run_integration

        return run_integration(task.node, task.member_paths or {}, Path(task.out_dir),
                               device or pick_device(task.node.train.device), Path(task.data_cache), log=log)
    if task.node.builds_packages:
        from raykd.data.package_node import run_packages

        return run_packages(task.node, Path(task.teacher_path), Path(task.out_dir),
                            device or pick_device(task.node.train.device), Path(task.data_cache), log=log)
    logger = MetricLogger(task.tracking_uri, task.run_id, task.out_dir, log) if task.run_id and rank == 0 else None
    ctx = RunContext(
        out_dir=Path(task.out_dir),
        device=device or pick_device(task.node.train.device),
        rank=rank,
        world_size=world_size,
        teacher_path=Path(task.teacher_path) if task.teacher_path else None,
        init_path=Path(task.init_path) if task.init_path else None,
        dataset_path=Path(task.dataset_path) if task.dataset_path else None,
        data_cache=Path(task.data_cache),
        cpus=task.node.resources.cpus_per_worker,
        on_epoch=_chain(logger.log_metrics if logger else None, on_epoch),
        on_resume=logger.replay if logger else None,
        log=log,
        tag=task.name,
        live=rank == 0 and sys.stdout.isatty(),
    )
    return fit(task.node, ctx)


def _chain(log_metrics, then):
    if log_metrics is None and then is None:
        return None

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if log_metrics is not None:
            log_metrics(metrics, epoch)
        if then is not None:
            then(epoch, metrics)
    return on_epoch
