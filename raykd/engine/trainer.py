"""One training run: data, model, method, optimiser, epochs, checkpoints, metrics.

It knows nothing of Ray or MLflow: the caller passes a `RunContext` (output folder, device,
rank, callbacks) and gets a dict of final metrics back. Under torch.distributed (as Ray Train
sets it up) it wraps the distiller in DDP and shards the data by rank.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from raykd import models
from raykd.config import ResolvedNode
from raykd.data import load_data, load_packages_limited, make_loader
from raykd.data.stream_loader import StreamLoader
from raykd.models.ensemble import Ensemble
from raykd.engine import checkpoint as ckpt
from raykd.engine.evaluate import evaluate, topk_correct
from raykd.engine.optim import build_optimizer, lr_at, set_lr
from raykd.engine.latency import latency_ms
from raykd.engine.memory import peak_rss_mb, reset_peak_rss
from raykd.engine.step_stats import StepStats
from raykd.engine.student_file import load_student, plain_backbone, save_student, weights_fingerprint
from raykd.errors import CheckpointError, ConfigError
from raykd.methods import build_distiller
from raykd.methods.base import MethodContext

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
FINAL = "final.pt"


@dataclass
class RunContext:
    out_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    teacher_path: Path | None = None
    init_path: Path | None = None  # start the student from this final.pt (an init-stage node's output)
    dataset_path: Path | None = None  # train on this package set (a packages node's output) instead of data.name
    data_cache: Path | None = None
    cpus: float = 1.0  # CPUs this worker holds: the streaming loader's default process count
    on_start: Callable[[dict[str, Any]], None] | None = None
    on_epoch: Callable[[int, dict[str, float]], None] | None = None  # on every rank, after rank 0's checkpoint
    on_resume: Callable[[list[dict[str, Any]]], None] | None = None  # the resumed history (epochs already done)
    log: Callable[[str], None] = print
    tag: str = ""
    live: bool = False  # redraw an in-epoch progress line (only when a terminal is attached)


def pick_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def fit(node: ResolvedNode, ctx: RunContext) -> dict[str, Any]:
    """Train `node` to completion (resuming from `out_dir/checkpoint.pt` if present)."""
    tcfg, dcfg = node.train, node.data
    out = Path(ctx.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    is_main = ctx.rank == 0
    log = ctx.log if is_main else (lambda *_: None)
    tag = ctx.tag or node.name
    device = ctx.device

    if dcfg.batch_size % ctx.world_size:
        raise ConfigError(f"nodes.{node.name}.data.batch_size ({dcfg.batch_size}) must be divisible by the "
                          f"number of workers ({ctx.world_size}); it is the global batch size.")
    data = load_packages_limited(ctx.dataset_path, dcfg) if ctx.dataset_path else load_data(dcfg, ctx.data_cache)
    torch.manual_seed(tcfg.seed)
    student = models.create(node.model, data.num_classes, **node.model_kwargs)
    teacher = None
    if ctx.teacher_path is not None:
        teacher, meta = load_student(ctx.teacher_path, device)
        if meta["num_classes"] != data.num_classes:
            raise ConfigError(f"nodes.{node.name}: teacher '{ctx.teacher_path}' predicts {meta['num_classes']} "
                              f"classes but the data has {data.num_classes}.")
        if data.is_video and not isinstance(teacher, (models.VideoClassifier, Ensemble)):
            teacher = models.VideoClassifier(teacher)  # an image teacher scores clips frame by frame
    if ctx.init_path is not None:
        init_model, _ = load_student(ctx.init_path, "cpu")
        student.load_state_dict(plain_backbone(init_model).state_dict())
    init_fingerprint = weights_fingerprint(student)
    if data.is_video:
        student = models.VideoClassifier(student)  # clips [B, F, C, H, W]: frames through the 2D model
    distiller = build_distiller(node.method, student, teacher)
    local_bs = dcfg.batch_size // ctx.world_size
    common = dict(cfg=dcfg, device=device, mean=data.mean, std=data.std, rank=ctx.rank, world_size=ctx.world_size,
                  channels_last=tcfg.channels_last, cpus=ctx.cpus, log=log)
    train_loader = make_loader(data.train, batch_size=local_bs, train=True, seed=tcfg.seed,
                               class_pairs=distiller.needs_class_pairs, **common)
    val_loader = make_loader(data.val, batch_size=dcfg.eval_batch_size, train=False, **common)
    test_loader = make_loader(data.test, batch_size=dcfg.eval_batch_size, train=False, **common)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ConfigError(f"nodes.{node.name}.data.batch_size ({dcfg.batch_size}) is larger than the training "
                          f"split ({len(data.train)} images): no full batch to train on.")
    distiller.setup(MethodContext(num_classes=data.num_classes, train_labels=data.train.labels.clone(),
                                  image_shape=data.sample_shape, epochs=tcfg.epochs,
                                  steps_per_epoch=steps_per_epoch))
    distiller = distiller.to(device)
    if tcfg.channels_last:
        distiller = distiller.to(memory_format=torch.channels_last)

    optimizer = build_optimizer(distiller.parameters(), tcfg.optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=tcfg.amp == "fp16")
    autocast = _autocast(device, tcfg.amp)

    start_epoch, step, history, best = 0, 0, [], {"val_top1": -1.0, "epoch": 0}
    sharded = ckpt.ShardedState(out, ctx.rank, ctx.world_size)
    ckpt_path = out / CHECKPOINT
    state = _resume_state(ckpt_path, device, ctx.rank, log, tag) if ckpt_path.is_file() else None
    resumed_after = state["epoch"] if state is not None else 0
    if state is not None:
        distiller.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        distiller.load_extra_state_dict(state["method_state"])
        if "sharded_state" in state:
            sharded.load(distiller, state["sharded_state"])
        ckpt.set_rng_state(state["rng"])
        start_epoch, step, history, best = state["epoch"], state["step"], state["history"], state["best"]
        log(f"[{tag}] resuming from {ckpt_path} after epoch {start_epoch}/{tcfg.epochs}")
        if ctx.on_resume and is_main:
            ctx.on_resume(history)  # epochs whose metrics a stop between checkpoint and logging lost

    n_params = models.count_parameters(student)
    if ctx.on_start and is_main:
        ctx.on_start({"params": n_params, "train_images": len(data.train), "val_images": len(data.val),
                      "test_images": len(data.test), "num_classes": data.num_classes,
                      "steps_per_epoch": steps_per_epoch, "device": str(device), "world_size": ctx.world_size})
    if start_epoch == 0:
        log(f"[{tag}] {node.model} ({n_params / 1e6:.3f}M params) <- {node.method.name}"
            f"{' from ' + str(node.teacher) if node.teacher else ''}; data {data.summary()}; "
            f"{tcfg.epochs} epochs x {steps_per_epoch} steps on {device}"
            f"{f' x{ctx.world_size} workers' if ctx.world_size > 1 else ''}")

    model = distiller
    if ctx.world_size > 1 and dist.is_initialized():
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(distiller, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=distiller.unused_parameters)

    run_start = time.perf_counter()
    reset_peak_rss()  # data/peak_rss_mb: this run's peak, not the reused worker process's earlier ones
    for epoch in range(start_epoch, tcfg.epochs):
        train_loader.set_epoch(epoch)
        distiller.start_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        stats = StepStats(device)  # the step never reads a number back: they come back every few steps
        live = _LiveLine(f"[{tag}] epoch {epoch + 1}/{tcfg.epochs}", steps_per_epoch) if ctx.live and is_main else None
        for batch in train_loader:
            if live is not None:
                live.update(step - epoch * steps_per_epoch, stats.last_loss)
            set_lr(optimizer, lr_at(step, steps_per_epoch, tcfg.epochs, tcfg.optimizer.lr, tcfg.schedule))
            with autocast():
                logits, losses = model(batch)
            total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if tcfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(distiller.parameters(), tcfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            stats.add(step, total.detach(), {k: v.detach() for k, v in losses.items()},
                      topk_correct(logits.detach(), batch["label"], ks=(1,))[0], batch["label"].shape[0],
                      epoch=epoch, tag=tag)
            step += 1
        stats.flush(epoch=epoch, tag=tag)
        if live is not None:
            live.clear()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        metrics = stats.metrics()
        val = evaluate(distiller.student, val_loader, autocast, heads=distiller)
        metrics.update({f"val/{k}": v for k, v in val.items()})
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["images_per_s"] = stats.seen * ctx.world_size / train_seconds
        metrics.update(_stream_metrics(train_loader, train_seconds, ctx.world_size))
        metrics["epoch_seconds"] = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, **metrics})
        shards = sharded.save(distiller, epoch + 1)  # every rank's part, before checkpoint.pt points at them
        if is_main:
            if val["top1"] > best["val_top1"]:
                best = {"val_top1": val["top1"], "epoch": epoch + 1}
                ckpt.save_atomic({k: v.detach().cpu() for k, v in distiller.student.state_dict().items()}, out / BEST)
            ckpt.save_atomic(
                {
                    "epoch": epoch + 1, "step": step, "model": distiller.state_dict(),
                    "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "method_state": distiller.extra_state_dict(), "rng": ckpt.rng_state(),
                    "history": history, "best": best, **({"sharded_state": shards} if shards else {}),
                },
                ckpt_path,
            )
            if shards:
                sharded.prune(epoch + 1)
        if ctx.on_epoch:  # every rank (a DDP sweep trial reports from each); MLflow logs from rank 0 only
            ctx.on_epoch(epoch + 1, metrics)
        elapsed = time.perf_counter() - run_start
        done = epoch + 1 - start_epoch
        eta = elapsed / done * (tcfg.epochs - epoch - 1)
        terms = ", ".join(f"{k} {metrics[f'train/{k}']:.3f}" for k in stats.term_names())
        heads = " ".join(f"{k[:-5]} {v:.1f}" for k, v in val.items() if k.endswith("_top1"))
        log(f"[{tag}] epoch {epoch + 1}/{tcfg.epochs}  loss {metrics['train/loss']:.4f} ({terms})  "
            f"train {metrics['train/top1']:.1f}%  val {val['top1']:.2f}%{f' ({heads})' if heads else ''}  "
            f"{metrics['images_per_s']:.0f} img/s  {metrics['epoch_seconds']:.1f}s  ETA {_fmt_seconds(eta)}")

    if ctx.world_size > 1 and dist.is_initialized():
        dist.barrier()  # rank 0's best.pt is complete before anyone reads it
    last_test = evaluate(distiller.student, test_loader, autocast, heads=distiller)
    last_val = history[-1] if history else {}
    best_student = copy.deepcopy(distiller.student)
    try:
        best_student.load_state_dict(ckpt.load(out / BEST, map_location=device))
    except (CheckpointError, FileNotFoundError) as e:
        log(f"[{tag}] {e if isinstance(e, CheckpointError) else f'{out / BEST} is missing.'} The best-validation "
            f"weights are lost: the last epoch's stand in for them.")
        best = {"val_top1": history[-1]["val/top1"] if history else float("nan"), "epoch": tcfg.epochs}
    best_test = evaluate(best_student, test_loader, autocast)
    result = {
        "params": n_params,
        "epochs": tcfg.epochs,
        "world_size": ctx.world_size,
        "steps_per_epoch": steps_per_epoch,
        "val/top1": last_val.get("val/top1", float("nan")),
        "test/top1": last_test["top1"],
        "test/top5": last_test["top5"],
        "best/val_top1": best["val_top1"],
        "best/epoch": best["epoch"],
        "best/test_top1": best_test["top1"],
        "best/test_top5": best_test["top5"],
        "train_seconds": sum(h["epoch_seconds"] for h in history),
        "resumed_after_epoch": resumed_after,  # 0: trained from the start in one go
        **{f"test/{k}": v for k, v in last_test.items() if k.endswith("_top1") and k != "top1"},
        **distiller.result_metrics(),
    }
    if is_main:
        result["latency_ms"] = latency_ms(distiller.student, data.sample_shape, device)
        save_student(out / FINAL, distiller.student, model_name=node.model, num_classes=data.num_classes,
                     model_kwargs=node.model_kwargs, mean=data.mean, std=data.std,
                     data=node.data.model_dump(mode="json"), metrics=result, init_fingerprint=init_fingerprint,
                     extras=distiller.export_extras())
        log(f"[{tag}] done: test top-1 {last_test['top1']:.2f}% (last), {best_test['top1']:.2f}% "
            f"(best val, epoch {best['epoch']})")
    result["history"] = history
    return result


def _stream_metrics(loader, train_seconds: float, world_size: int) -> dict[str, float]:
    """A streamed epoch's data health, over all ranks: samples read and how many distinct (both equal the split
    unless files were skipped), files skipped as unreadable; and rank 0's share of the epoch spent waiting for a
    batch (near 0 when the loader keeps up) and its process's peak RSS."""
    if not isinstance(loader, StreamLoader):
        return {}
    reads = loader.reads.to(loader.device)
    skipped = torch.tensor([float(len(loader.skipped))], device=loader.device)
    if world_size > 1 and dist.is_initialized():
        dist.all_reduce(reads)
        dist.all_reduce(skipped)
    return {"data/samples_read": float(reads.sum().item()), "data/samples_distinct": float((reads > 0).sum().item()),
            "data/skipped_files": skipped.item(), "data/wait_share": loader.wait_seconds / max(train_seconds, 1e-9),
            "data/peak_rss_mb": peak_rss_mb()}


def _resume_state(path: Path, device, rank: int, log, tag: str) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None when it is unreadable: the node then restarts from scratch
    (a truncated checkpoint must not stop a pipeline for good), and the bad file is kept beside it."""
    try:
        return ckpt.load(path, map_location=device)
    except CheckpointError as e:
        if rank == 0:
            bad = path.with_name(path.name + ".corrupt")
            os.replace(path, bad)
            log(f"[{tag}] {e} Restarting the node from epoch 1; the unreadable file is kept as {bad.name}.")
        return None


class _LiveLine:
    """A single terminal line redrawn at most twice a second: steps done, loss, rate."""

    def __init__(self, prefix: str, steps: int):
        self.prefix, self.steps = prefix, steps
        self.start = self.last = time.perf_counter()

    def update(self, done: int, loss: float | None) -> None:
        now = time.perf_counter()
        if now - self.last < 0.5:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.steps - done) / max(rate, 1e-9)
        width = 24
        bar = "#" * int(width * done / self.steps)
        sys.stdout.write(f"\r{self.prefix} [{bar:<{width}}] {done}/{self.steps}  loss {_fmt_loss(loss)}  "
                         f"{rate:.1f} it/s  {_fmt_seconds(eta)} left\033[K")
        sys.stdout.flush()

    def clear(self) -> None:
        sys.stdout.write("\r\033[K")
        sys.stdout.flush()


def _fmt_loss(loss: float | None) -> str:
    return "..." if loss is None else f"{loss:.4f}"


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
