"""SKD's costs as ratios measured in one run on one machine:

1. Training-step cost of each SKD substage and of RSKD relative to a plain KD step (same batch,
   same student and teacher): what the feature (AT + DF) and relation (FSP) terms add.
2. Wall time of the digits SKD pipeline (three branches, each a 2-link cascade, then the
   ensemble) on the Ray executor vs the in-process executor running its nodes one after another,
   from the same cached teacher.

Writes bench/SKD_RESULTS.md (quoted by the README).   python bench/skd.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from raykd import models
from raykd.engine import pick_device
from raykd.methods import build_distiller, validate_method_config
from raykd.methods.base import MethodContext
from timing import measured_on, round_robin, sgd_step

ROOT = Path(__file__).resolve().parent
VARIANTS = {
    "kd": {"name": "kd"},
    "skd response": {"name": "skd", "substage": "response"},
    "skd feature (AT + DF)": {"name": "skd", "substage": "feature"},
    "skd relation (FSP)": {"name": "skd", "substage": "relation"},
    "rskd": {"name": "rskd"},
    "rskd-dagger": {"name": "rskd", "dagger": True},
}


def step_costs(student_name: str, teacher_name: str, batch: int, iters: int, device) -> dict[str, float]:
    torch.manual_seed(0)
    b = {"image": torch.randn(batch, 3, 32, 32, device=device), "label": torch.randint(0, 100, (batch,), device=device)}
    teacher = models.create(teacher_name, 100).to(device).eval().requires_grad_(False)
    steps = {}
    for name, method in VARIANTS.items():
        d = build_distiller(validate_method_config(method), models.create(student_name, 100), teacher)
        d.setup(MethodContext(100, b["label"].cpu(), (3, 32, 32), 1, 1))
        steps[name] = sgd_step(d.to(device).train(), b)
    return round_robin(steps, iters, device)


def pipeline_walls(epochs: int) -> dict[str, float]:
    """The branch phase of the digits SKD pipeline, sequential in-process vs concurrent on Ray."""
    import ray

    from raykd.config import load_experiment
    from raykd.pipeline import run_pipeline
    from raykd.pipeline.ray_executor import ensure_ray

    conf = ROOT.parent / "conf" / "digits" / "skd.yaml"
    keep = ["nodes.skd_avg=null", "nodes.skd_distill=null", "final=skd", f"train.epochs={epochs}"]
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        teacher_only = load_experiment(conf, [f"storage={tmp}/local", f"train.epochs={epochs}", "final=teacher"]
                                       + [f"nodes.{n}=null" for n in ("response", "feature", "relation", "skd",
                                                                      "skd_avg", "skd_distill")])
        run_pipeline(teacher_only, executor="local", log=lambda *_: None)
        shutil.copytree(f"{tmp}/local/nodes", f"{tmp}/ray/nodes")  # the same finished teacher for both
        for executor in ("local", "ray"):
            if executor == "ray":
                t0 = time.perf_counter()
                ensure_ray(num_cpus=os.cpu_count())
                out["ray.init seconds"] = time.perf_counter() - t0
            exp = load_experiment(conf, [f"storage={tmp}/{executor}"] + keep)
            t0 = time.perf_counter()
            res = run_pipeline(exp, executor=executor, log=lambda *_: None)
            assert res.ok, {n: o.error for n, o in res.nodes.items()}
            out[f"pipeline wall seconds ({executor})"] = time.perf_counter() - t0
            out[f"sum of node seconds ({executor})"] = sum(o.seconds for o in res.nodes.values() if o.status == "trained")
        ray.shutdown()
    out["ray / local"] = out["pipeline wall seconds (ray)"] / out["pipeline wall seconds (local)"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations and epochs (smoke run)")
    ap.add_argument("--out", default=str(ROOT / "SKD_RESULTS.md"))
    args = ap.parse_args()
    device = pick_device()
    iters = 5 if args.quick else 15
    lines = [
        "# SKD benchmark results",
        "",
        measured_on("bench/skd.py", device),
        "",
        "## Training step of each substage relative to plain KD (median of round-robin steps, 100 classes)",
        "",
        "| student <- teacher | batch | KD step | " + " | ".join(k for k in VARIANTS if k != "kd") + " |",
        "| --- | --- | --- |" + " --- |" * (len(VARIANTS) - 1),
    ]
    for student, teacher, batch in (("resnet8", "resnet20", 64), ("resnet8x4", "resnet32x4", 64)):
        m = step_costs(student, teacher, batch, iters, device)
        lines.append(f"| {student} <- {teacher} | {batch} | {m['kd'] * 1e3:.1f} ms | "
                     + " | ".join(f"{m[k] / m['kd']:.2f}x" for k in VARIANTS if k != "kd") + " |")
        print(lines[-1], flush=True)
    w = pipeline_walls(epochs=2 if args.quick else 5)
    lines += [
        "",
        "## The digits SKD pipeline: concurrent branches on Ray vs one node after another",
        "",
        "`conf/digits/skd.yaml` without the weight-average and distill finals: three branches "
        "(teacher -> resnet14 -> resnet8), then the ensemble, from one cached resnet20 teacher; "
        "`resources.cpus_per_worker: 1`, Ray started with every CPU of the machine.",
        "",
        "| measure | value |",
        "| --- | --- |",
    ] + [f"| {k} | {v:.2f} |" for k, v in w.items()] + [
        "",
        f"Ray / in-process wall time: **{w['ray / local']:.2f}** (lower is better). Concurrency only pays "
        "where the machine has room for the branches: the Ray nodes that run at once share its cores (see the sum "
        "of node seconds: one-thread nodes side by side train no faster than one node on every thread), and "
        "Ray's own start is paid once (a node in a reused worker costs no start-up: bench/RESULTS.md). With a "
        "core or GPU per branch, the branch phase takes one branch's time instead of three.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-12:]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
