"""Speed targets of the training step, as ratios measured in one run on one machine (never wall times in tests).

1. KD step cost: a `kd` training step vs (a plain student step + one teacher forward), and vs a plain
   `vanilla` step, on the same batch. Target: KD <= 1.05x (student step + teacher forward).
2. The engine's step vs a bare loop: seconds per step of `raykd.engine.fit` (its loader, method, loss-term
   book-keeping, finite check, lr schedule) vs a plain PyTorch loop over the same batches with the same model,
   loss and optimiser. A small model, so host work shows. Target: <= 1.10x (CPU; on a GPU when there is one).

Writes its sections of bench/RESULTS.md.   python bench/step_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from raykd import models
from raykd.engine import pick_device
from raykd.methods import build_distiller, validate_method_config
from timing import measured_on, round_robin, sgd_step, sync, write_section

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


def engine_vs_bare(method: str, rounds: int, device: torch.device) -> dict[str, float]:
    """Median seconds per step over `rounds` one-epoch runs of each, alternating: the engine (`fit`) and a bare
    loop over the same batches (digits at 8x8, resnet8, batch 64, no augmentation, SGD as configured)."""
    from raykd.config import build_experiment
    from raykd.data import load_data
    from raykd.engine import RunContext, fit, load_student
    from raykd.engine.optim import build_optimizer

    with tempfile.TemporaryDirectory() as tmp:
        raw = {"name": "bench", "storage": tmp,
               "data": {"name": "digits", "image_size": 8, "batch_size": 64, "augment": {"crop_padding": 0, "flip": False}},
               "train": {"epochs": 1, "device": device.type},
               "nodes": {"teacher": {"model": "resnet8"},
                         "student": {"model": "resnet8", "method": {"name": method},
                                     **({"teacher": "teacher"} if method != "vanilla" else {})}}}
        exp = build_experiment(raw)
        node, tnode = exp.nodes["student"], exp.nodes["teacher"]
        quiet = lambda *_: None  # noqa: E731
        teacher_path = None
        if method != "vanilla":
            fit(tnode, RunContext(out_dir=Path(tmp) / "teacher", device=device, log=quiet, data_cache=Path(tmp)))
            teacher_path = Path(tmp) / "teacher" / "final.pt"
        data = load_data(node.data, Path(tmp))
        images, labels = data.train.images.to(device), data.train.labels.to(device)
        mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
        bs = node.data.batch_size
        steps = len(images) // bs
        teacher = load_student(teacher_path, device)[0].eval() if teacher_path else None
        cfg = node.method

        def bare(seed: int) -> float:
            torch.manual_seed(seed)
            student = models.create("resnet8", data.num_classes).to(device).train()
            opt = build_optimizer(student.parameters(), node.train.optimizer)
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed)).to(device)
            sync(device)
            t0 = time.perf_counter()
            for i in range(steps):
                idx = order[i * bs:(i + 1) * bs]
                x = images.index_select(0, idx).float().div_(255).sub_(mean).div_(std)
                y = labels.index_select(0, idx)
                logits = student(x).logits
                loss = F.cross_entropy(logits, y)
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(x).logits
                    t = cfg.temperature
                    kd = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(t_logits / t, 1), reduction="batchmean")
                    loss = cfg.ce_weight * loss + cfg.alpha * t * t * kd
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sync(device)
            return (time.perf_counter() - t0) / steps

        def engine(seed: int) -> float:
            out = Path(tmp) / f"run{seed}"
            result = fit(node, RunContext(out_dir=out, device=device, teacher_path=teacher_path, log=quiet,
                                          data_cache=Path(tmp)))
            return bs / result["history"][-1]["images_per_s"]

        bare(0), engine(0)  # warm-up: first-call costs (allocator, kernels) out of the timings
        times: dict[str, list[float]] = {"bare loop": [], "engine": []}
        for r in range(1, rounds + 1):
            times["bare loop"].append(bare(r))
            times["engine"].append(engine(r))
    med = {k: statistics.median(v) for k, v in times.items()}
    med["steps"] = steps
    return med


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    ap.add_argument("--out", default=str(ROOT / "RESULTS.md"))
    args = ap.parse_args()
    device = pick_device()
    iters = 5 if args.quick else 20
    where = measured_on("bench/step_overhead.py", device)
    lines = [
        f"## KD training step vs its parts (`{device.type}`)", "",
        where + " Median of round-robin steps, CIFAR-size input, 100 classes.", "",
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
    write_section(args.out, f"kd-step-{device.type}", lines)
    lines = [
        f"## The engine's training step vs a bare PyTorch loop (`{device.type}`)", "",
        where + " Median seconds per step over alternating one-epoch runs: `raykd.engine.fit` (its loader, "
        "method, loss-term book-keeping, finite check, lr schedule) vs a plain loop over the same batches (same "
        "model, loss, optimiser). resnet8 on digits at 8x8, batch 64, no augmentation: a small model, so host "
        "work shows.", "",
        "| method | steps/epoch | bare loop | engine | engine / bare |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method in ("vanilla", "kd"):
        m = engine_vs_bare(method, 3 if args.quick else 9, device)
        lines.append(f"| {method} | {m['steps']} | {m['bare loop'] * 1e3:.2f} ms | {m['engine'] * 1e3:.2f} ms "
                     f"| **{m['engine'] / m['bare loop']:.3f}** (target <= 1.10) |")
        print(lines[-1], flush=True)
    write_section(args.out, f"engine-step-{device.type}", lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
