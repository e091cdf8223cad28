"""DTSKD's costs and results, measured in one run on one machine:

1. Training-step cost of DTSKD relative to a plain (vanilla) step on the same backbone and batch
   (ResNet-18 and resnet8x4 at 100 classes). Target: <= 1.05x (the paper: 23 s vs 22 s an epoch).
2. The per-sample history's bytes (fp32, fp16, top-k) for CIFAR-100 and ImageNet, and per rank.
3. Every variant of conf/digits/dtskd_ablation.yaml (three seeds each, in-process): test top-1 as
   mean +/- std per variant, each branch's own accuracy, and the history's bytes.

Writes bench/DTSKD_RESULTS.md (quoted by the README).   python bench/dtskd.py [--quick] [--storage DIR]
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
from raykd.methods.history import HistoryMemory
from timing import measured_on, round_robin, sgd_step

ROOT = Path(__file__).resolve().parent
VARIANTS = {
    "dtskd": {"name": "dtskd"},
    "dtskd, history off (official)": {"name": "dtskd", "history_update": False},
    "dtskd, history top-10": {"name": "dtskd", "history_topk": 10},
}


def step_costs(student: str, batch: int, iters: int, device) -> dict[str, float]:
    torch.manual_seed(0)
    n = 50_000
    labels = torch.randint(0, 100, (n,))
    b = {"image": torch.randn(batch, 3, 32, 32, device=device), "label": labels[:batch].to(device),
         "index": torch.randperm(n)[:batch].to(device)}
    steps = {}
    for name, method in {"vanilla": {"name": "vanilla"}, **VARIANTS}.items():
        d = build_distiller(validate_method_config(method), models.create(student, 100), None)
        d.setup(MethodContext(100, labels, (3, 32, 32), 300, 390))
        d.start_epoch(5)  # past the first epoch: targets read from a filled history
        if getattr(d, "history", None) is not None:
            d.history.seen.fill_(True)
        steps[name] = sgd_step(d.to(device).train(), b)
    return round_robin(steps, iters, device)


def memory_table() -> list[str]:
    rows = ["| data | heads x classes | storage | bytes / sample | whole set | per rank (8 ranks) |",
            "| --- | --- | --- | --- | --- | --- |"]
    for data, n, heads, classes in (("CIFAR-100 (ResNet-18)", 50_000, 4, 100), ("ImageNet (ResNet-18)", 1_281_167, 4, 1000)):
        for label, dtype, k in (("fp32", torch.float32, None), ("fp16 (default)", torch.float16, None),
                                ("fp16 top-10", torch.float16, 10)):
            per = HistoryMemory(1, heads, classes, dtype, k, rank=0, world=1).bytes_per_sample
            rows.append(f"| {data} | {heads} x {classes} | {label} | {per:,} | {_size(per * n)} | {_size(per * n / 8)} |")
    return rows


def _size(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def digits_ablation(storage: Path, quick: bool) -> dict[str, list[dict]]:
    from raykd.config import load_experiment
    from raykd.pipeline import run_pipeline

    overrides = [f"storage={storage}"] + (["train.epochs=3"] if quick else [])
    exp = load_experiment(ROOT.parent / "conf" / "digits" / "dtskd_ablation.yaml", overrides)
    torch.set_num_threads(os.cpu_count() or 1)
    return by_variant(run_pipeline(exp, executor="local", log=lambda *_: None))


def short_schedule(storage: Path, epochs: int) -> dict[str, list[dict]]:
    """vanilla and DTSKD (both weightings) at the quickstart's schedule, where the history is not yet good."""
    from raykd.config import load_experiment
    from raykd.pipeline import run_pipeline

    conf = ROOT.parent / "conf" / "digits" / "dtskd_ablation.yaml"
    keep = ("vanilla_", "dtskd_", "official_", "hd8_sd2_s")
    drop = [f"nodes.{n}=null" for n in load_experiment(conf).nodes if not n.startswith(keep)]
    exp = load_experiment(conf, [f"storage={storage}", f"train.epochs={epochs}", "final=dtskd_s0", *drop])
    return by_variant(run_pipeline(exp, executor="local", log=lambda *_: None))


def by_variant(res) -> dict[str, list[dict]]:
    """Results of nodes <variant>_s<seed>, grouped by variant."""
    assert res.ok, {n: o.error for n, o in res.nodes.items() if o.error}
    out: dict[str, list[dict]] = defaultdict(list)
    for name, o in res.nodes.items():
        out[name.rsplit("_s", 1)[0]].append(o.result)
    return out


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} +/- {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations and epochs (smoke run)")
    ap.add_argument("--storage", help="reuse this store for the digits runs (finished nodes are cached)")
    ap.add_argument("--out", default=str(ROOT / "DTSKD_RESULTS.md"))
    args = ap.parse_args()
    device = pick_device()
    iters = 5 if args.quick else 20
    lines = [
        "# DTSKD benchmark results",
        "",
        measured_on("bench/dtskd.py", device),
        "",
        "## Training step relative to a plain step on the same backbone (median of round-robin steps, 100 classes)",
        "",
        "| backbone | batch | vanilla step | " + " | ".join(VARIANTS) + " |",
        "| --- | --- | --- |" + " --- |" * len(VARIANTS),
    ]
    for student, batch in (("cifar_resnet18", 64), ("resnet8x4", 64)):
        m = step_costs(student, batch, iters, device)
        lines.append(f"| {student} | {batch} | {m['vanilla'] * 1e3:.1f} ms | "
                     + " | ".join(f"{m[k] / m['vanilla']:.3f}x" for k in VARIANTS) + " |")
        print(lines[-1], flush=True)
    lines += ["", "Target: DTSKD <= 1.05x vanilla (the paper measures 23 s vs 22 s an epoch on a 2080Ti).", "",
              "## The history's size", "", *memory_table(), "",
              "Each rank holds the rows of the samples i with i % world == rank; the flag byte marks samples "
              "not yet seen (their target is the label).", ""]
    with tempfile.TemporaryDirectory() as tmp:
        runs = digits_ablation(Path(args.storage or tmp), args.quick)
        short_epochs = 2 if args.quick else 15
        short = short_schedule(Path(args.storage or tmp), short_epochs)
    lines += [
        "## Every variant on digits, three seeds (conf/digits/dtskd_ablation.yaml)",
        "",
        "resnet8, 300 labelled images, 60 epochs, in-process. Top-1 as mean +/- std over seeds 0, 1, 2: on the "
        "validation split (90 images: what a choice may be made on) and the test split (899 images: one image is "
        "0.11%); branches are the auxiliary classifiers' own test top-1 at the last epoch. `official` and `sd_only` "
        "are the same computation (every historical target is the label), hence the same numbers.",
        "",
        "| variant | val top-1 (last) | test top-1 (last) | test top-1 (best val) | branch 1 | branch 2 | history bytes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant, results in runs.items():
        branches = [mean_std([r[f"test/branch{b}_top1"] for r in results]) if f"test/branch{b}_top1" in results[0] else "-"
                    for b in (1, 2)]
        memory = results[0].get("history/bytes")
        top1 = [mean_std([r[k] for r in results]) for k in ("val/top1", "test/top1", "best/test_top1")]
        lines.append(f"| {variant} | {' | '.join(top1)} | {branches[0]} | {branches[1]} | "
                     f"{'-' if memory is None else f'{memory:,.0f}'} |")
    lines += ["", "The same students at the quickstart's 15 epochs (135 steps). With the paper's ResNet-18 weights "
              "(0.2 / 0.8) the backbone's label signal (alpha1 x lambda_0 = 0.6) is small next to the T^2-scaled "
              "structural term that ties it to branches which are still learning, and the history then holds its "
              "errors in place: DTSKD has not learnt by then. With 0.8 / 0.2 it is well ahead of vanilla:",
              "", "| variant | test top-1 (last) | test top-1 (best val) |", "| --- | --- | --- |"]
    lines += [f"| {v} ({short_epochs} epochs) | {mean_std([r['test/top1'] for r in rs])} | "
              f"{mean_std([r['best/test_top1'] for r in rs])} |" for v, rs in short.items()]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
