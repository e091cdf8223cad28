"""A single-worker node on Ray: a plain Ray task, run by a worker process Ray keeps and reuses.

A Ray Train run costs seconds per node in process starts (its controller and worker actors, each importing
torch and Ray Train) plus a process group and a teardown poll, none of which one worker needs. A task
instead runs in one of Ray's pooled worker processes: the first node a worker runs imports torch, MLflow
and raykd (about 2 s); every later node it runs starts at once. What the Train run gave is kept:
- the node holds its CPUs and (fractional) GPUs while it runs (`num_cpus`, `num_gpus` on the task);
- a worker process that dies (SIGKILL, the OOM killer, a lost machine) is retried `resources.max_failures`
  times, and the retry resumes from the node's last epoch checkpoint (the engine always does);
- an exception raised by the node (a user error, a bug) is not retried: it reaches the driver once;
- the Ray dashboard lists each node as the task `raykd:<node>`.

GPUs: Ray normally narrows CUDA_VISIBLE_DEVICES for each GPU task, which a reused process cannot honour
once CUDA is initialised (so Ray retires GPU task workers after one call). GPU nodes instead run with
Ray's RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES, see every GPU of their machine, and select the one Ray
assigned them (`assigned_device`); several fractional-GPU nodes on one GPU each select that GPU.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from raykd.errors import RaykdError
from raykd.pipeline.task import NodeTask, run_task

NOSET_CUDA = "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"
GPU_RUNTIME_ENV = {"env_vars": {NOSET_CUDA: "1"}}  # the runtime env of GPU nodes' worker processes


def run_node(task: NodeTask, threads: int) -> dict[str, Any]:
    """The task body: the node on the device Ray assigned, with `threads` intra-op threads."""
    started = time.time()
    torch.set_num_threads(threads)
    gpu_ids = _gpu_ids()
    device = assigned_device(task.node.train.device, gpu_ids)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        result = run_task(task, device=device)
    except RaykdError as e:  # the message alone, without the chained traceback of the worker
        raise type(e)(str(e)) from None
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()  # this process lives on: give the next node (or another process) the memory
    # Strings: facts for the store's result, not MLflow metrics.
    where = {"ray/worker_pid": str(os.getpid()), "ray/gpu_ids": ",".join(gpu_ids), "device": str(device)}
    return {**result, **where, "_loop_start": started, "_loop_end": time.time()}


def warm_up() -> str:
    """Import what a node needs (torch, the engine, methods, models, data, MLflow) in a worker process that
    will run nodes, while the driver is still setting up: the first node it runs starts at once."""
    import mlflow  # noqa: F401
    import mlflow.tracking  # noqa: F401

    import raykd.data  # noqa: F401
    import raykd.methods  # noqa: F401
    import raykd.models  # noqa: F401
    import raykd.tracking  # noqa: F401

    return str(os.getpid())


def _gpu_ids() -> list[str]:
    import ray

    return [str(i) for i in ray.get_gpu_ids()]


def assigned_device(requested: str, gpu_ids: list[str]) -> torch.device:
    """The torch device for a task Ray gave `gpu_ids`: the first of them. A task given no GPU does not take
    one it did not reserve: CPU (or Apple's MPS) for `auto`."""
    from raykd.engine import pick_device

    if requested in ("cpu", "mps"):
        return torch.device(requested)
    if not gpu_ids:
        if requested == "cuda":
            return torch.device("cuda")  # asked for CUDA without reserving a GPU: torch says what it finds
        device = pick_device("auto")
        return torch.device("cpu") if device.type == "cuda" else device
    if not torch.cuda.is_available():
        return torch.device("cpu")  # a cluster that declares GPUs torch cannot see (tests, misconfigured nodes)
    return torch.device("cuda", cuda_index(gpu_ids[0], os.environ.get("CUDA_VISIBLE_DEVICES")))


def cuda_index(gpu_id: str, visible: str | None) -> int:
    """Ray's GPU id as torch numbers it in this process: its position in CUDA_VISIBLE_DEVICES as the worker
    started (Ray's ids name entries of that list, indices or UUIDs), else the id itself."""
    order = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return order.index(gpu_id) if gpu_id in order else int(gpu_id)
