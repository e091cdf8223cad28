"""Speed targets as ratios measured in one run on one machine (never wall times in tests).

1. KD step cost: a `kd` training step vs (a plain student step + one teacher forward), and vs a
   plain `vanilla` step, on the same batch. Target: KD <= 1.05x (student step + teacher forward).
2. Ray per-node overhead: one node's wall time on the Ray executor vs the in-process executor.
   Target: <= 5 s a node.

Writes bench/RESULTS.md (quoted by the README).   python bench/step_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from raykd import models
from raykd.engine import pick_device
from raykd.methods import build_distiller, validate_method_config
from timing import round_robin, sgd_step

ROOT = Path(__file__).resolve().parent


def step_costs(student_name: str, teacher_name: str, batch: int, iters: int, device: torch.device) -> dict:
    """Median seconds per step for each variant, measured round-robin so drift hits all equally."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 100, (batch,), device=device)
    b = {"image": x, "label": y}
    teacher = models.create(teacher_name, 100).to(device).eval().requires_grad_(False)

    def make(method, with_teacher):
        student = models.create(student_name, 100)
        d = build_distiller(validate_method_config({"name": method}), student, teacher if with_teacher else None)
        return sgd_step(d.to(device).train(), b)

    def teacher_fwd():
        with torch.no_grad():
            teacher(x)

    variants = {"vanilla step": make("vanilla", False), "teacher forward": teacher_fwd, "kd step": make("kd", True)}
    med = round_robin(variants, iters, device, warmup=3)
    med["student step + teacher forward"] = med["vanilla step"] + med["teacher forward"]
    return med


def ray_overhead(epochs: int) -> dict:
    """Wall time of one identical node on each executor (Ray start-up measured separately)."""
    import ray

    from raykd.config import build_experiment
    from raykd.pipeline import run_pipeline
    from raykd.pipeline.ray_executor import ensure_ray

    out = {}
    raw = {"name": "bench", "data": {"name": "digits", "batch_size": 64, "augment": {"flip": False}},
           "train": {"epochs": epochs}, "nodes": {"only": {"model": "resnet8"}}}
    with tempfile.TemporaryDirectory() as tmp:
        for executor in ("local", "ray"):
            if executor == "ray":
                t0 = time.perf_counter()
                ensure_ray(num_cpus=1)
                out["ray.init seconds"] = time.perf_counter() - t0
            exp = build_experiment(dict(raw, storage=f"{tmp}/{executor}"))
            torch.set_num_threads(1)
            res = run_pipeline(exp, executor=executor, log=lambda *_: None)
            node = res.nodes["only"].result
            out[f"node wall seconds ({executor})"] = res.nodes["only"].seconds
            out[f"node train seconds ({executor})"] = node["train_seconds"]
            if executor == "ray":
                out["of which: launch to training loop (Ray Train controller + worker start)"] = node["ray/startup_seconds"]
                out["of which: training loop end to run returned (teardown)"] = node["ray/teardown_seconds"]
        ray.shutdown()
    out["ray overhead seconds per node"] = out["node wall seconds (ray)"] - out["node wall seconds (local)"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    ap.add_argument("--out", default=str(ROOT / "RESULTS.md"))
    args = ap.parse_args()
    device = pick_device()
    torch.set_num_threads(torch.get_num_threads())
    iters = 5 if args.quick else 20
    lines = [
        "# raykd benchmark results",
        "",
        f"Measured by `bench/step_overhead.py` on {platform.machine()} with {torch.get_num_threads()} torch threads, "
        f"device `{device}`{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
        f"torch {torch.__version__}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. "
        "Ratios are what matter: every number in a table comes from the same run on the same machine.",
        "",
        "## KD training step vs its parts (median of round-robin steps, CIFAR-size input, 100 classes)",
        "",
        "| student <- teacher | batch | vanilla step | teacher fwd | KD step | KD / (student step + teacher fwd) | KD / vanilla |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    pairs = [("resnet8", "resnet20", 64), ("resnet8x4", "resnet32x4", 64)]
    for student, teacher, batch in pairs:
        m = step_costs(student, teacher, batch, iters, device)
        ratio = m["kd step"] / m["student step + teacher forward"]
        lines.append(
            f"| {student} <- {teacher} | {batch} | {m['vanilla step'] * 1e3:.1f} ms | {m['teacher forward'] * 1e3:.1f} ms "
            f"| {m['kd step'] * 1e3:.1f} ms | **{ratio:.3f}** (target <= 1.05) | {m['kd step'] / m['vanilla step']:.2f} |")
        print(lines[-1], flush=True)
    r = ray_overhead(epochs=2 if args.quick else 3)
    lines += [
        "",
        "## Ray per-node overhead (one resnet8 node on digits, 1 CPU, same config on both executors)",
        "",
        "| measure | seconds |",
        "| --- | --- |",
    ] + [f"| {k} | {v:.1f} |" for k, v in r.items()] + [
        "",
        f"Overhead per node: **{r['ray overhead seconds per node']:.1f} s** (target <= 5 s). Nearly all of it is "
        "the fixed cost of a Ray Train run: starting the launcher task's worker (cold only for the first node), "
        "the Train controller and worker processes (each imports torch and ray.train), the process group, and "
        "shutdown. It is paid once per node and overlaps when nodes run concurrently; `ray.init` is paid once "
        "per pipeline. Every node logs its own `ray/startup_seconds` and `ray/teardown_seconds` to MLflow.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-8:]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
