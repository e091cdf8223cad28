"""1 vs 4 concurrent nodes on one GPU: what `resources.gpus_per_worker: 0.25` buys (aggregate img/s).

Each node is a KD run (resnet32x4 -> resnet8x4, the CRD recipe's pair, batch 64) in a process of its own, as four
quarter-GPU Ray tasks would be; Ray itself is not needed (the lent GPU machines have none), only the engine.
Small CIFAR-size models at batch 64 are bound by kernel launches, not by the GPU's arithmetic, so several
processes fill it better than one.

Writes its section of bench/RESULTS.md.   python bench/gpu_packing.py [--data DIR] [--device cpu]
(`--device cpu` only checks the script runs; the numbers mean nothing there.)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import torch

from timing import measured_on, write_section

ROOT = Path(__file__).resolve().parent


def _raw(tmp: str, data_root: str | None, epochs: int, device: str) -> dict:
    data = ({"name": "cifar10", "root": data_root} if data_root else {"name": "digits"})
    return {"name": "packing", "storage": tmp, "data": {**data, "batch_size": 64},
            "train": {"epochs": epochs, "device": device},
            "nodes": {"teacher": {"model": "resnet32x4"},
                      "kd": {"model": "resnet8x4", "teacher": "teacher", "method": {"name": "kd"}}}}


def _one(args) -> dict:
    raw, rank, teacher = args
    from raykd.config import build_experiment
    from raykd.engine import RunContext, fit

    torch.set_num_threads(1)
    node = build_experiment(raw).nodes["kd"]
    result = fit(node, RunContext(out_dir=Path(raw["storage"]) / f"kd{rank}-{time.time_ns()}", device=torch.device(
        raw["train"]["device"]), teacher_path=Path(teacher), data_cache=Path(raw["storage"]), log=lambda *_: None))
    return {"img_s": sorted(h["images_per_s"] for h in result["history"])[len(result["history"]) // 2]}


def run(n: int, raw: dict, teacher: str) -> dict[str, float]:
    with mp.get_context("spawn").Pool(n) as pool:
        out = pool.map(_one, [(raw, i, teacher) for i in range(n)])
    return {"per node img/s": sum(o["img_s"] for o in out) / n, "aggregate img/s": sum(o["img_s"] for o in out)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", help="a CIFAR-10 folder (python pickles); the bundled digits otherwise")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "RESULTS.md"))
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing measured (run it on a GPU machine)")
        return 0
    from raykd.config import build_experiment
    from raykd.engine import RunContext, fit

    with tempfile.TemporaryDirectory() as tmp:
        raw = _raw(tmp, args.data, args.epochs, args.device)
        exp = build_experiment(dict(raw, train={**raw["train"], "epochs": 1}))
        fit(exp.nodes["teacher"], RunContext(out_dir=Path(tmp) / "teacher", device=torch.device(args.device),
                                             data_cache=Path(tmp), log=lambda *_: None))
        teacher = str(Path(tmp) / "teacher" / "final.pt")
        results = {n: run(n, raw, teacher) for n in (1, 4)}
    one = results[1]["aggregate img/s"]
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device(args.device)
    lines = [f"## 1 vs 4 concurrent KD nodes on one device (`{args.device}`)", "",
             measured_on("bench/gpu_packing.py", device) + f" resnet32x4 -> resnet8x4, batch 64, {args.epochs} epochs "
             f"each on {args.data or 'digits'}; each node a process of its own (as four 0.25-GPU Ray tasks are).", "",
             "| nodes at once | img/s per node (median epoch) | aggregate img/s | vs one node |", "| --- | --- | --- | --- |"]
    for n, r in results.items():
        lines.append(f"| {n} | {r['per node img/s']:.0f} | {r['aggregate img/s']:.0f} | **{r['aggregate img/s'] / one:.2f}x** |")
    write_section(args.out, f"gpu-packing-{args.device}", lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
