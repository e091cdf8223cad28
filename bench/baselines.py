"""The comparison baselines of the MTKD-SSR and DTSKD tables (ReviewKD, H-AT, CCS, TOFD; DKS, FRSKD, MixSKD),
measured in one run on one machine:

1. Training-step cost: each teacher method relative to a KD step on the same pair and batch, each self-KD
   method relative to a plain (vanilla) step of the same backbone; median of round-robin steps, 100 classes.
2. Parameters of the training-only modules (what the method adds and export drops) on the same pairs.
3. conf/digits/baselines.yaml: every method at its defaults, three seeds, test top-1 mean +/- std.

Writes bench/BASELINES_RESULTS.md (quoted by the README).   python bench/baselines.py [--quick] [--storage DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from raykd import models
from raykd.engine import pick_device
from raykd.methods import build_distiller, validate_method_config
from raykd.methods.base import MethodContext
from dtskd import mean_std
from timing import measured_on, round_robin, sgd_step

ROOT = Path(__file__).resolve().parent
TEACHER_METHODS = ("reviewkd", "hat", "ccs", "tofd")
SELF_METHODS = ("byot", "dks", "frskd", "mixskd")
TEACHER_PAIRS = (("resnet32x4", "resnet8x4"), ("cifar_resnet34", "cifar_resnet18"))  # CRD/DKD's, MTKD-SSR's
SELF_MODELS = ("cifar_resnet18", "resnet8")  # DTSKD's Table 1 ResNet-18, the digits student


def distiller(method: str, student: str, teacher: str | None, batch: int, device):
    torch.manual_seed(0)
    t = models.create(teacher, 100) if teacher else None
    d = build_distiller(validate_method_config({"name": method}), models.create(student, 100), t)
    d.setup(MethodContext(100, torch.arange(batch) % 100, (3, 32, 32), 240, 390))
    return d.to(device).train()


def extra_params(d) -> int:
    """Trainable parameters the method adds beside the student (dropped at export)."""
    return sum(p.numel() for p in d.parameters()) - sum(p.numel() for p in d.student.parameters())


def step_costs(variants: dict[str, tuple[str, str, str | None]], batch: int, iters: int, device):
    """Median seconds per step and the distiller of each variant (method, student, teacher)."""
    b = {"image": torch.randn(batch, 3, 32, 32, device=device), "label": torch.randint(0, 100, (batch,), device=device),
         "index": torch.arange(batch, device=device)}
    ds = {k: distiller(m, s, t, batch, device) for k, (m, s, t) in variants.items()}
    return round_robin({k: sgd_step(d, b) for k, d in ds.items()}, iters, device), ds


def cost_tables(label: str, rows, ref: str, methods, batch: int, iters: int, device) -> list[str]:
    """Each method's step relative to `ref`'s and its training-only parameters, a row per (name, student,
    teacher or None): two markdown tables."""
    head = " | ".join(methods)
    steps = [f"| {label} | {ref} step | {head} |", "| --- | --- |" + " --- |" * len(methods)]
    params = [f"| {label} | student | {head} |", "| --- | --- |" + " --- |" * len(methods)]
    for name, student, teacher in rows:
        med, ds = step_costs({m: (m, student, teacher) for m in (ref, *methods)}, batch, iters, device)
        steps.append(f"| {name} | {med[ref] * 1e3:.0f} ms | " + " | ".join(f"{med[m] / med[ref]:.2f}x" for m in methods) + " |")
        params.append(f"| {name} | {sum(p.numel() for p in ds[ref].student.parameters()):,} | "
                      + " | ".join(f"{extra_params(ds[m]):,}" for m in methods) + " |")
        print(steps[-1], params[-1], flush=True)
    return [*steps, "", "Extra (training-only) parameters:", "", *params, ""]


def run_digits(storage: Path, quick: bool) -> dict[str, list[dict]]:
    from raykd.config import load_experiment
    from raykd.pipeline import run_pipeline

    conf = ROOT.parent / "conf" / "digits" / "baselines.yaml"
    exp = load_experiment(conf, [f"storage={storage}"] + (["train.epochs=2"] if quick else []))
    torch.set_num_threads(os.cpu_count() or 1)
    res = run_pipeline(exp, executor="local", log=lambda *_: None)
    assert res.ok, {n: o.error for n, o in res.nodes.items() if o.error}
    out: dict[str, list[dict]] = defaultdict(list)
    for name, o in res.nodes.items():
        out[name.split(".seed")[0]].append(o.result)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations and epochs (smoke run)")
    ap.add_argument("--storage", help="reuse this store for the digits runs (finished nodes are cached)")
    ap.add_argument("--out", default=str(ROOT / "BASELINES_RESULTS.md"))
    args = ap.parse_args()
    device = pick_device()
    iters = 3 if args.quick else 15
    batch = 64
    lines = [
        "# Comparison baselines: benchmark results", "",
        measured_on("bench/baselines.py", device), "",
        f"## Teacher methods: training step relative to a KD step on the same pair (batch {batch}, 100 classes)", "",
        "Both include the frozen teacher's forward. Extra params: the training-only modules (ABF, connectors, "
        "auxiliary classifiers) that export drops.", "",
        *cost_tables("teacher -> student", [(f"{t} -> {s}", s, t) for t, s in TEACHER_PAIRS], "kd", TEACHER_METHODS,
                     batch, iters, device),
        f"## Self-KD methods: training step relative to a plain step of the same backbone (batch {batch}, 100 classes)", "",
        *cost_tables("backbone", [(m, m, None) for m in SELF_MODELS], "vanilla", SELF_METHODS, batch, iters, device),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_digits(Path(args.storage or tmp), args.quick)
    epochs = 2 if args.quick else 15
    lines += [
        "## Every method on digits, three seeds (conf/digits/baselines.yaml)", "",
        f"resnet20 teacher (all its training images), resnet8 students on 300 labelled images for {epochs} epochs "
        "(the quickstart's regime), in-process, every method at its defaults. Top-1 as mean +/- std over seeds 0, 1, 2 "
        "on the validation split (90 images) and the test split (899 images: one image is 0.11%).", "",
        "| node | val top-1 (last) | test top-1 (last) | test top-1 (best val) | vs its reference (test, last) |",
        "| --- | --- | --- | --- | --- |",
    ]
    ref = {m: "kd" for m in (*TEACHER_METHODS, "at", "hat_channel")} | {m: "vanilla" for m in SELF_METHODS}
    for name, results in runs.items():
        top1 = [mean_std([r[k] for r in results]) for k in ("val/top1", "test/top1", "best/test_top1")]
        diff = "-"
        if name in ref:
            d = statistics.mean(r["test/top1"] for r in results) - statistics.mean(r["test/top1"] for r in runs[ref[name]])
            diff = f"{d:+.2f} vs {ref[name]}"
        lines.append(f"| {name} | {' | '.join(top1)} | {diff} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
