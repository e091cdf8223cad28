"""What Ray adds to a node, measured in one run on one machine (never wall times in tests).

1. Per-node overhead on the pipeline: one resnet8 node's wall time on the Ray executor minus the same node on
   the in-process executor, for the first node a worker process runs (it imports torch, MLflow and raykd)
   and for a later one. Target: <= 3 s a single-worker node.
2. The same node handed to Ray as each path runs it (no pipeline, no MLflow): in-process, as a Ray task in a
   reused worker (single-worker nodes today), and as a one-worker Ray Train run (every node before).
3. Where a Ray Train run's start-up goes: an empty training loop's run, and the imports of a fresh worker.

Writes its section of bench/RESULTS.md.   python bench/ray_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from timing import measured_on, write_section

ROOT = Path(__file__).resolve().parent
CPUS = 2


def _node_raw(storage: str, epochs: int) -> dict:
    return {"name": "bench", "storage": storage, "train": {"epochs": epochs},
            "data": {"name": "digits", "batch_size": 64, "augment": {"flip": False}},
            "resources": {"cpus_per_worker": 1}, "nodes": {"only": {"model": "resnet8"}}}


def pipeline_overhead(tmp: str, epochs: int) -> dict[str, float]:
    """Node wall seconds on each executor, a first and a second time (fresh stores, so both train)."""
    from raykd.config import build_experiment
    from raykd.pipeline import run_pipeline

    out = {}
    torch.set_num_threads(1)  # as the Ray node's one CPU gets
    for executor in ("local", "ray"):
        for i in ("first", "second"):
            t0 = time.perf_counter()
            res = run_pipeline(build_experiment(_node_raw(f"{tmp}/{executor}-{i}", epochs)), executor=executor,
                               log=lambda *_: None)
            out[f"{executor} {i} pipeline"] = time.perf_counter() - t0
            node = res.nodes["only"]
            out[f"{executor} {i}"] = node.seconds
            out[f"{executor} {i} train"] = node.result["train_seconds"]
            if executor == "ray":
                out[f"ray {i} startup"] = node.result["ray/startup_seconds"]
    return out


def task_paths(tmp: str, epochs: int, rounds: int) -> dict[str, float]:
    """Median wall seconds of the same node run in-process, as a Ray task (warm worker) and as a Train run."""
    import ray

    from raykd.config import build_experiment
    from raykd.pipeline import make_plan
    from raykd.pipeline.ray_node_task import run_node
    from raykd.pipeline.ray_train_run import launch
    from raykd.pipeline.task import NodeTask, run_task

    exp = build_experiment(_node_raw(f"{tmp}/paths", epochs))
    pn = make_plan(exp)["only"]
    single = ray.remote(max_calls=0)(run_node)
    train_run = ray.remote(num_cpus=0, max_retries=0)(launch)
    times: dict[str, list[float]] = {"in-process": [], "Ray task (reused worker)": [], "Ray Train run (1 worker)": []}
    for r in range(rounds):
        def task(kind: str) -> NodeTask:
            return NodeTask(name="only", hash=pn.hash, node=pn.node, out_dir=f"{tmp}/paths/{kind}{r}", teacher_path=None,
                            data_cache=f"{tmp}/paths/data_cache", tracking_uri=None, run_id=None)
        calls = {
            "in-process": lambda: run_task(task("local"), log=lambda *_: None),
            "Ray task (reused worker)": lambda: ray.get(single.options(num_cpus=1).remote(task("task"), 1)),
            "Ray Train run (1 worker)": lambda: ray.get(train_run.remote(task("train"), (1, 1.0, 0.0), f"{tmp}/ray", 0)),
        }
        for k, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _empty_loop(config):
    return {"loop_start": time.time()}


def train_run_anatomy(tmp: str, rounds: int) -> dict[str, float]:
    """An empty loop's Ray Train run (controller and worker actors start, process group, teardown), and what a
    fresh worker process spends importing what a node needs."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    @ray.remote(num_cpus=0)
    def run(i: int) -> tuple[float, float]:
        trainer = TorchTrainer(_empty_loop, scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                               run_config=RunConfig(name=f"empty{i}", storage_path=f"{tmp}/ray"))
        t0 = time.time()
        result = trainer.fit()
        return result.return_value["loop_start"] - t0, time.time() - result.return_value["loop_start"]

    @ray.remote(num_cpus=1, runtime_env={"env_vars": {"RAYKD_BENCH_FRESH": "1"}})  # a new runtime env: a new process
    def imports() -> dict[str, float]:
        out, t = {}, time.perf_counter()
        for name in ("torch", "ray.train.torch", "mlflow", "raykd.pipeline.task"):
            __import__(name)
            out[name], t = time.perf_counter() - t, time.perf_counter()
        return out

    starts, ends = zip(*(ray.get(run.remote(i)) for i in range(rounds)))
    out = {"Train run: fit() to the first line of the loop": statistics.median(starts),
           "Train run: end of the loop to fit() returning": statistics.median(ends)}
    out.update({f"fresh worker: import {k}": v for k, v in ray.get(imports.remote()).items()})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    ap.add_argument("--out", default=str(ROOT / "RESULTS.md"))
    args = ap.parse_args()
    import ray

    from raykd.pipeline.ray_executor import ensure_ray

    epochs, rounds = (2, 1) if args.quick else (3, 3)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ensure_ray(num_cpus=CPUS)
        init = time.perf_counter() - t0
        p = pipeline_overhead(tmp, epochs)
        paths = task_paths(tmp, epochs, rounds)
        anatomy = train_run_anatomy(tmp, rounds)
        ray.shutdown()
    first, second = p["ray first"] - p["local first"], p["ray second"] - p["local second"]
    first_p, second_p = (p[f"ray {i} pipeline"] - p[f"local {i} pipeline"] for i in ("first", "second"))
    base = paths["in-process"]
    lines = [
        "## Ray per-node overhead (`cpu`)", "",
        measured_on("bench/ray_overhead.py", torch.device("cpu")) + f" A local Ray of {CPUS} CPUs; one resnet8 node "
        f"on digits, {epochs} epochs, 1 CPU (1 torch thread) on both executors.", "",
        "| on the pipeline (`raykd run`) | node wall, local | node wall, Ray | Ray - local | of which Ray start-up "
        "| whole `run_pipeline`, Ray - local |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| first node (a fresh worker process) | {p['local first']:.1f} s | {p['ray first']:.1f} s | **{first:.1f} s** "
        f"(target <= 3 s) | {p['ray first startup']:.1f} s | {first_p:+.1f} s |",
        f"| a later node (a reused worker) | {p['local second']:.1f} s | {p['ray second']:.1f} s | **{second:.1f} s** "
        f"(target <= 3 s) | {p['ray second startup']:.1f} s | {second_p:+.1f} s |",
        "", f"`ray.init` (once per pipeline, not in the rows above): {init:.1f} s. The last column times the whole "
        "one-node pipeline, so it also counts the wait for the worker warm-ups before the first node (the driver "
        "waits for them rather than start a node in a cold process).", "",
        f"| the same node, as each path runs it (median of {rounds}) | wall | minus in-process |",
        "| --- | --- | --- |",
    ] + [f"| {k} | {v:.1f} s | {v - base:+.1f} s |" for k, v in paths.items()] + [
        "", "| where a Ray Train run's start-up goes | seconds |", "| --- | --- |",
    ] + [f"| {k} | {v:.2f} |" for k, v in anatomy.items()]
    write_section(args.out, "ray-node-cpu", lines)
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
