"""A multi-worker (DDP) node as a Ray Train run: `TorchTrainer` over `resources.workers` workers, owned by a
zero-CPU launcher task, named by the node's hash. Ray Train sets up the process group and device per rank and
restarts the worker group from the last epoch checkpoint on a failure (`resources.max_failures`).

Single-worker nodes do not come here: they run as plain tasks in reused worker processes (ray_node_task.py),
since a Train run costs seconds of process starts that one worker does not need.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from raykd.errors import RaykdError
from raykd.pipeline.store import NodeStore
from raykd.pipeline.task import NodeTask


def _train_loop(config: dict[str, Any]) -> dict[str, Any]:
    """Runs inside each Ray Train worker."""
    import ray.train
    import ray.train.torch
    import torch

    from raykd.pipeline.task import run_task

    started = time.time()
    torch.set_num_threads(config["threads"])
    ctx = ray.train.get_context()
    on_epoch = None
    if config.get("report"):  # a sweep's DDP trial: every rank reports each epoch (TuneReportCallback takes rank 0's)
        last = config["task"].node.train.epochs

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            if epoch < last:  # the trial reports the last epoch itself, once the node is recorded
                ray.train.report({**metrics, "epoch": epoch, **config.get("report_extra", {})})
    error = _rank_error(config["task"], config["launch_id"])
    if error is not None:  # a retry of a group that a rank's error failed: every rank stops at once, alike
        return error
    try:
        result = run_task(config["task"], ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(),
                          on_epoch=on_epoch)
    except RaykdError as e:  # a user-facing error: carry the message, do not retry
        error = {"__error__": str(e), "__type__": type(e).__name__}
        if ctx.get_world_size() == 1:
            return error
        # Only this rank may have hit it (a bad file in its share of the data) while its peers wait in a
        # collective that would never return: failing the worker group is what stops them. The message goes
        # to a file the driver (and any retry of the group) reads.
        record = json.dumps({**error, "launch": config["launch_id"]})
        NodeStore(Path(config["task"].out_dir)).write_text(RANK_ERROR, record)
        raise
    return {**result, "_loop_start": started, "_loop_end": time.time()}


RANK_ERROR = "rank_error.json"


def _rank_error(task: NodeTask, launch_id: str) -> dict[str, Any] | None:
    """The user-facing error a rank of this launch recorded, if any (a file from an earlier launch is ignored)."""
    try:
        error = json.loads((Path(task.out_dir) / RANK_ERROR).read_text())
    except (OSError, ValueError):
        return None
    return error if isinstance(error, dict) and error.get("launch") == launch_id else None


def launch(task: NodeTask, request: tuple[int, float, float], storage_path: str, max_failures: int,
           report: dict[str, Any] | None = None) -> dict[str, Any]:
    """The zero-CPU task that owns one Train run. With `report` (a sweep's DDP trial, called inside Tune) every
    rank reports each epoch, plus `report`'s entries, and TuneReportCallback hands rank 0's to Tune."""
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    workers, cpus, gpus = request
    per_worker = {"CPU": cpus, "GPU": gpus} if gpus else {"CPU": cpus}
    launch_id = uuid.uuid4().hex
    config: dict[str, Any] = {"task": task, "threads": max(1, int(cpus)), "launch_id": launch_id}
    callbacks = []
    if report is not None:
        from ray.tune.integration.ray_train import TuneReportCallback

        config.update(report=True, report_extra=report)
        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=per_worker),
        run_config=RunConfig(name=f"{task.name}-{task.hash[:12]}", storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=max_failures),
                             logging_config=LoggingConfig(log_level="WARNING"), callbacks=callbacks),
    )
    try:
        result = trainer.fit()
    except Exception as e:  # TrainingFailedError wraps the worker's exception
        error = _rank_error(task, launch_id)
        if error is not None:
            raise RaykdError(error["__error__"]) from None
        raise RuntimeError(f"node '{task.name}' failed in its Ray Train run: {_root_cause(e)}") from None
    value = result.return_value
    if isinstance(value, dict) and "__error__" in value:
        raise RaykdError(value["__error__"])
    return value


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"
