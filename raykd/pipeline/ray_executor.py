"""Runs the DAG on Ray: every node is launched as soon as its parents finish, so independent branches run
concurrently across the cluster. A single-worker node is a Ray task in a reused worker process
(ray_node_task.py: no process start per node); a multi-worker node is a Ray Train DDP run
(ray_train_run.py). Every request is checked against the cluster before anything starts: a node that can
never be scheduled is an error up front, not a run that waits forever.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from raykd.config import ResolvedNode
from raykd.errors import RaykdError, ResourceError
from raykd.pipeline.events import Events, blocked_by_failure
from raykd.pipeline.ray_node_task import GPU_RUNTIME_ENV, run_node, warm_up
from raykd.pipeline.ray_train_run import launch
from raykd.pipeline.task import NodeTask

POLL_SECONDS = 1.0  # how often a node another run is training is looked at again

# Quieter, faster Ray Train on small machines (see RAY_MLFLOW_NOTES.md); users can override.
RAY_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_DEDUP_LOGS": "0",
}


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to `address` (or $RAY_ADDRESS), else start a local Ray. True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    import sys

    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no ANSI codes in log files and pipes
    kwargs: dict[str, Any] = {"logging_level": "WARNING", "configure_logging": True}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), **kwargs)
        _watch_local_ray()
    return True


def _watch_local_ray() -> None:
    """A local Ray this process started goes away with it even if it is killed (pipeline/ray_reaper.py)."""
    import ray

    from raykd.pipeline import ray_reaper

    try:
        node = ray._private.worker._global_node  # noqa: SLF001 - the only handle on the processes Ray started
        pids = [p.process.pid for procs in node.all_processes.values() for p in procs]
        ray_reaper.start(Path(node.get_session_dir_path()), pids)
    except Exception:  # noqa: BLE001 - a Ray without these internals: no watcher, as before
        pass


def worker_request(node: ResolvedNode, cluster_gpus: float) -> tuple[int, float, float]:
    """(workers, CPUs per worker, GPUs per worker); `auto` GPUs means one each if the cluster has any."""
    r = node.resources
    gpus = r.gpus_per_worker
    if gpus == "auto":
        gpus = 1.0 if cluster_gpus >= 1 and node.train.device in ("auto", "cuda") else 0.0
    if node.train.device == "cpu":
        gpus = 0.0
    return (r.workers if node.trains else 1), r.cpus_per_worker, float(gpus)


def check_feasible(nodes: dict[str, ResolvedNode]) -> None:
    import ray

    total = ray.cluster_resources()
    machines = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    problems = []
    for name, node in nodes.items():
        w, c, g = worker_request(node, total.get("GPU", 0))
        if w * c > total.get("CPU", 0) or w * g > total.get("GPU", 0):
            problems.append(
                f"node '{name}' asks for {w} worker(s) x ({c:g} CPU, {g:g} GPU) = {w * c:g} CPU, {w * g:g} GPU, "
                f"but the whole cluster has {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU"
            )
        elif not any(m.get("CPU", 0) >= c and m.get("GPU", 0) >= g for m in machines):
            problems.append(f"node '{name}': no single machine in the cluster has {c:g} CPU and {g:g} GPU for one worker")
    if problems:
        raise ResourceError(
            "resources can never be satisfied, so nothing was started:\n  " + "\n  ".join(problems)
            + "\nLower nodes.<name>.resources (workers, cpus_per_worker, gpus_per_worker) or add machines."
        )


MAX_WARM = 8  # worker processes warmed up ahead of the nodes, at most
WARM_WAIT_SECONDS = 30.0  # the nodes wait this long at most for the warm-ups (a cluster still starting workers)


def warm_workers(nodes: dict[str, ResolvedNode]) -> list[Any]:
    """Start importing torch, the engine and MLflow in as many worker processes as single-worker nodes can
    run at once (per runtime env: CPU and GPU nodes' workers differ), without reserving anything: the driver
    is still opening its MLflow runs. Returns the tasks' refs: `execute` waits for them before its first node."""
    import ray

    total = ray.cluster_resources()
    slots: dict[bool, list[tuple[float, float]]] = {}
    for node in nodes.values():
        workers, c, g = worker_request(node, total.get("GPU", 0))
        if workers == 1:
            slots.setdefault(g > 0, []).append((c, g))
    warm = ray.remote(num_cpus=0, max_retries=0)(warm_up)
    refs = []
    for gpu, requests in slots.items():
        at_once = min(total.get("CPU", 0) / min(c for c, _ in requests),
                      total.get("GPU", 0) / min(g for _, g in requests) if gpu else float("inf"))
        options: dict[str, Any] = {"name": "raykd:warm-up", **({"runtime_env": GPU_RUNTIME_ENV} if gpu else {})}
        refs += [warm.options(**options).remote() for _ in range(int(min(len(requests), at_once, MAX_WARM)))]
    return refs


def critical_path(parents: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Length of the longest chain of descendants below each node (0 for a leaf)."""
    children: dict[str, list[str]] = {n: [] for n in parents}
    for n, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(n)
    memo: dict[str, int] = {}

    def depth(n: str) -> int:
        if n not in memo:
            memo[n] = max((1 + depth(c) for c in children.get(n, ())), default=0)
        return memo[n]

    return {n: depth(n) for n in parents}


class RayExecutor:
    """Launches ready nodes critical-path first. It keeps its own count of the CPUs/GPUs its runs
    hold and does not let a shorter chain jump ahead of a longer one that is waiting for room
    (otherwise a 1-CPU leaf can grab the core a teacher needs and the pipeline serialises)."""

    name = "ray"

    def __init__(self, storage_path: str, address: str | None = None, num_cpus: int | None = None, log=print):
        self.storage_path = storage_path
        self.address, self.num_cpus, self.log = address, num_cpus, log
        self._warming: list[Any] = []  # warm-up tasks' refs, kept so that they are not cancelled

    def check(self, nodes: dict[str, ResolvedNode]) -> None:
        ensure_ray(self.address, self.num_cpus)
        check_feasible(nodes)
        self._warming = warm_workers(nodes)

    def execute(self, tasks: dict[str, NodeTask], parents: dict[str, tuple[str, ...]], events: Events) -> None:
        import ray

        ensure_ray(self.address, self.num_cpus)
        if self._warming and tasks:  # a node launched now would find the workers busy warming and start a cold one
            ray.wait(self._warming, num_returns=len(self._warming), timeout=WARM_WAIT_SECONDS)
        self._warming = []
        total = ray.cluster_resources()
        capacity = {"CPU": total.get("CPU", 0.0), "GPU": total.get("GPU", 0.0)}
        requests = {n: worker_request(t.node, capacity["GPU"]) for n, t in tasks.items()}
        need = {n: {"CPU": w * c, "GPU": w * g} for n, (w, c, g) in requests.items()}
        order = {n: i for i, n in enumerate(tasks)}
        priority = critical_path({n: tuple(p for p in parents.get(n, ()) if p in tasks) for n in tasks})
        in_use = {"CPU": 0.0, "GPU": 0.0}
        ddp = ray.remote(num_cpus=0, max_retries=0)(launch)
        single = ray.remote(max_calls=0)(run_node)  # max_calls=0: the worker process is kept for the next node
        waiting = dict(tasks)
        running: dict[Any, str] = {}
        finished: set[str] = set()
        failed: set[str] = set()
        launched: dict[str, float] = {}
        while waiting or running:
            for name in list(waiting):
                blocker = blocked_by_failure(name, parents, failed)
                if blocker:
                    del waiting[name]
                    failed.add(name)
                    events.on_fail(name, RaykdError(f"skipped: its ancestor '{blocker}' failed"))
            ready = [n for n in waiting if all(p in finished or p not in tasks for p in parents.get(n, ()))]
            elsewhere = False  # a ready node another run is training
            for name in sorted(ready, key=lambda n: (-priority[n], order[n])):
                fits = all(in_use[r] + need[name][r] <= capacity[r] + 1e-9 for r in in_use)
                if not fits and running:
                    break  # wait for room rather than let a shorter chain overtake
                claim = events.claim(name)
                if claim == "wait":
                    elsewhere = True
                    continue
                if claim == "done":
                    del waiting[name]
                    finished.add(name)
                    continue
                task = waiting.pop(name)
                for r in in_use:
                    in_use[r] += need[name][r]
                events.on_start(name)
                launched[name] = time.time()
                workers, c, g = requests[name]
                if workers == 1:
                    options = dict(name=f"raykd:{name}", num_cpus=c, num_gpus=g,
                                   max_retries=task.node.resources.max_failures)
                    if g:
                        options["runtime_env"] = GPU_RUNTIME_ENV
                    ref = single.options(**options).remote(task, max(1, int(c)))
                else:
                    ref = ddp.options(name=f"raykd:{name}").remote(
                        task, requests[name], self.storage_path, task.node.resources.max_failures)
                running[ref] = name
            if not running:
                if elsewhere:
                    time.sleep(POLL_SECONDS)
                continue
            done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS if elsewhere else None)
            for ref in done:
                name = running.pop(ref)
                for r in in_use:
                    in_use[r] -= need[name][r]
                try:
                    result = ray.get(ref)
                except Exception as e:
                    failed.add(name)
                    events.on_fail(name, _unwrap(e))
                    continue
                finished.add(name)
                returned = time.time()
                loop_start, loop_end = result.pop("_loop_start", None), result.pop("_loop_end", None)
                if loop_start is not None:
                    # What Ray adds around the training itself (process starts, process group, teardown).
                    result["ray/startup_seconds"] = loop_start - launched[name]
                    result["ray/teardown_seconds"] = returned - loop_end
                events.on_done(name, result)


def _unwrap(e: BaseException) -> BaseException:
    """Ray wraps task errors in RayTaskError; surface the original (ours carry clear messages)."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e
