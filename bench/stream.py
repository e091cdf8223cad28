"""The streaming data path (image_folder, `data.stream`) against the usual alternatives, measured in one run on one
machine: every ratio compares numbers taken minutes apart on the same CPUs (never a wall-time assertion).

1. Decode + augment throughput per loader process: raykd's `StreamLoader` (uint8 samples, normalised in the training
   process) vs torchvision `ImageFolder` + `DataLoader` (PIL, ToTensor + Normalize in the worker), the train view
   (random-resized crop 224 + flip) and the eval view (resize 256 + centre crop 224), 1 and 2 worker processes,
   batch 64, on generated photo-like JPEGs of ImageNet's sizes. Target: raykd / torchvision >= 1.0.
   Plus where one sample's time goes, in one process on one thread.
2. Ray Data as the engine instead: the same files and the same transforms (raykd's functions, seeded per
   sample) through `from_items(...).map(...).iter_torch_batches(64)`; start-up and first-batch latency, images/s.
3. Peak RSS of one training epoch (`raykd run --executor local`, resnet8 at 32 px from 64-96 px JPEGs, 2 loader
   processes) on a 2k and a 20k JPEG folder, summed over the process tree. Target: 20k / 2k ~ 1.0 (memory bounded
   by the batches in flight, not the split).
4. Listing a 20k-file folder.

Writes bench/STREAM_RESULTS.md.   .venv/bin/python bench/stream.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from timing import measured_on

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
BATCH = 64
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RSS_SIZE = 32  # the memory runs' crop: 64 would spend 4x the CPU on the model, which memory does not depend on


# ---------------------------------------------------------------------------------------------- generated folders


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """uint8 [h, w, 3] that compresses like a photo: smooth colour gradients, blotches at three scales and fine
    noise (a plain noise field would compress far worse than photos, a flat one far better)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.empty((h, w, 3), np.float32)
    for c in range(3):
        f, ph = rng.uniform(0.005, 0.03, 2), rng.uniform(0, 2 * math.pi, 2)
        a[..., c] = 128 + 60 * np.sin(xx * f[0] + ph[0]) + 50 * np.cos(yy * f[1] + ph[1])
    for s in (4, 16, 64):
        t = rng.normal(0, 14, (h // s + 1, w // s + 1, 3)).astype(np.float32)
        a += np.kron(t, np.ones((s, s, 1), np.float32))[:h, :w]
    a += rng.normal(0, 14, (h, w, 3)).astype(np.float32)
    return np.clip(a, 0, 255).astype(np.uint8)


def small_image(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """A small noisy gradient tinted by class `c` (cheap enough to write 20k of)."""
    base = np.array([(c * 97) % 256, (c * 53 + 80) % 256, (c * 29 + 160) % 256], np.float32)
    ramp = np.linspace(-40, 40, w, dtype=np.float32)[None, :, None]
    a = base + ramp + rng.normal(0, 20, (h, w, 3)).astype(np.float32)
    return np.clip(a, 0, 255).astype(np.uint8)


def write_tree(root: Path, classes: int, per_class: dict[str, int], sizes: tuple[int, int], kind: str,
               seed: int = 0) -> dict:
    """`root/<split>/<class>/<n>.JPEG` at quality 90, both sides drawn from `sizes`; returns counts and bytes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    count, nbytes = 0, 0
    for split, n in per_class.items():
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
                a = photo(rng, h, w) if kind == "photo" else small_image(rng, h, w, c)
                p = d / f"{split}_{c}_{i}.JPEG"
                Image.fromarray(a).save(p, quality=90)
                count, nbytes = count + 1, nbytes + p.stat().st_size
    return {"files": count, "mean_kb": nbytes / count / 1e3}


# ---------------------------------------------------------------------------------------- 1. loader throughput


def data_cfg(root: Path, workers: int, **extra):
    from raykd.config.schema import DataConfig

    return DataConfig(name="image_folder", root=str(root), stream=True, image_size=224, loader_workers=workers,
                      val_fraction=0, batch_size=BATCH, **extra)


def raykd_loaders(root: Path, workers: int) -> dict:
    """The train and eval loaders the trainer builds, on the whole train split (val_fraction 0), device cpu."""
    from raykd.data import load_data, make_loader

    cfg = data_cfg(root, workers)
    data = load_data(cfg)
    common = dict(device="cpu", mean=data.mean, std=data.std, seed=0)
    return {"train": make_loader(data.train, cfg, BATCH, train=True, **common),
            "eval": make_loader(data.train, cfg, BATCH, train=False, **common)}


def torchvision_loaders(root: Path, workers: int) -> dict:
    """The reference ImageNet recipe: PIL decode, RandomResizedCrop/flip or Resize/CenterCrop, ToTensor, Normalize,
    all in the worker. Workers persist across epochs for train, not for eval, as in raykd's loaders."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms as T

    tail = [T.ToTensor(), T.Normalize(MEAN, STD)]
    views = {"train": T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), *tail]),
             "eval": T.Compose([T.Resize(256), T.CenterCrop(224), *tail])}
    return {k: DataLoader(datasets.ImageFolder(str(root / "train"), v), batch_size=BATCH, shuffle=k == "train",
                          num_workers=workers, persistent_workers=k == "train", prefetch_factor=2)
            for k, v in views.items()}


def one_pass(loader, epoch: int) -> float:
    """Images/s of one full pass (batches as the training loop receives them)."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    n, t0 = 0, time.perf_counter()
    for b in loader:
        n += len(b["image"] if isinstance(b, dict) else b[0])
    return n / (time.perf_counter() - t0)


def loader_throughput(root: Path, workers: int, rounds: int) -> dict[str, float]:
    """Median images/s over `rounds` passes of each loader, one pass each per round (drift hits all alike),
    after a warm-up pass each (worker start-up, page cache)."""
    loaders = {}
    for k, v in raykd_loaders(root, workers).items():
        loaders[f"raykd {k}"] = v
    for k, v in torchvision_loaders(root, workers).items():
        loaders[f"torchvision {k}"] = v
    for ld in loaders.values():
        one_pass(ld, 0)
    rates: dict[str, list[float]] = {k: [] for k in loaders}
    for r in range(1, rounds + 1):
        for k, ld in loaders.items():
            rates[k].append(one_pass(ld, r))
    del loaders
    return {k: statistics.median(v) for k, v in rates.items()}


def per_sample_costs(files: list[str]) -> dict[str, float]:
    """Milliseconds per image of each stage, in this process on one thread: what a loader worker does."""
    from PIL import Image
    from torchvision import transforms as T

    from raykd.data.stream_dataset import collate
    from raykd.data.stream_transforms import decode_image_file, eval_view, train_view

    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def ms(fn, xs):
        t0 = time.perf_counter()
        out = [fn(x) for x in xs]
        return (time.perf_counter() - t0) / len(xs) * 1e3, out

    def pil_open(p):
        with open(p, "rb") as f:
            return Image.open(f).convert("RGB")

    g = torch.Generator().manual_seed(0)
    out = {}
    out["raykd decode (torchvision.io, libjpeg-turbo)"], imgs = ms(decode_image_file, files)
    out["raykd train crop+resize+flip (uint8 tensor)"], crops = ms(lambda x: train_view(x, 224, (0.08, 1.0), True, g), imgs)
    out["raykd eval resize+centre crop (uint8 tensor)"], _ = ms(lambda x: eval_view(x, 224, 256), imgs)
    batches = [crops[i:i + BATCH] for i in range(0, len(crops) - BATCH + 1, BATCH)] or [crops]
    t0 = time.perf_counter()
    for b in batches:
        collate([(x, i, None) for i, x in enumerate(b)])
    out["raykd collate (uint8, per image)"] = (time.perf_counter() - t0) / sum(map(len, batches)) * 1e3
    out["raykd normalise to float (training process, per image)"], _ = ms(
        lambda b: torch.stack(b).float().div_(255).sub_(torch.tensor(MEAN).view(1, 3, 1, 1))
        .div_(torch.tensor(STD).view(1, 3, 1, 1)), batches)
    out["raykd normalise to float (training process, per image)"] /= len(batches[0])
    out["torchvision decode (PIL)"], pims = ms(pil_open, files)
    out["torchvision RandomResizedCrop+flip (PIL)"], pcrops = ms(T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip()]), pims)
    out["torchvision Resize+CenterCrop (PIL)"], _ = ms(T.Compose([T.Resize(256), T.CenterCrop(224)]), pims)
    out["torchvision ToTensor+Normalize (worker)"], ft = ms(T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)]), pcrops)
    t0 = time.perf_counter()
    for i in range(0, len(ft) - BATCH + 1, BATCH):
        torch.stack(ft[i:i + BATCH])
    out["torchvision collate (float32, per image)"] = (time.perf_counter() - t0) / max(1, len(ft) // BATCH * BATCH) * 1e3
    torch.set_num_threads(threads)
    return out


# ---------------------------------------------------------------------------------------------------- 2. Ray Data


def ray_sample(row: dict, epoch: int, seed: int) -> dict:
    """raykd's decode and train view with raykd's per-sample generator: the same pixels as StreamLoader's."""
    from raykd.data.stream_dataset import sample_seed
    from raykd.data.stream_transforms import decode_image_file, train_view

    g = torch.Generator().manual_seed(sample_seed(seed, epoch, row["index"], 0))
    x = train_view(decode_image_file(row["path"]), 224, (0.08, 1.0), True, g)
    return {"image": x.numpy(), "index": row["index"], "label": row["label"]}


def ray_epoch(files, epoch: int, concurrency: int, rows_per_block: int | None, seed: int = 0):
    """One epoch as a Ray Dataset: rows in raykd's (seed, epoch) order, so order is ours, not Ray's."""
    import ray.data

    from raykd.data.stream_order import train_batches

    order = torch.cat(train_batches(len(files), BATCH, seed, epoch)).tolist()
    items = [{"path": files.path(i), "index": i, "label": int(files.labels[i])} for i in order]
    blocks = -(-len(items) // rows_per_block) if rows_per_block else None
    return (ray.data.from_items(items, override_num_blocks=blocks)
            .map(ray_sample, fn_kwargs={"epoch": epoch, "seed": seed},
                 compute=ray.data.TaskPoolStrategy(size=concurrency)))


def ray_pass(ds, mean: torch.Tensor, std: torch.Tensor) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """(images/s, seconds to the first batch, the first batch's index, its normalised images)."""
    n, first, first_batch = 0, None, None
    t0 = time.perf_counter()
    for b in ds.iter_torch_batches(batch_size=BATCH):
        x = b["image"].float().div_(255).sub_(mean).div_(std)  # as StreamLoader does on the device
        if first is None:
            first, first_batch = time.perf_counter() - t0, (b["index"], x)
        n += len(x)
    return n / (time.perf_counter() - t0), first, *first_batch


def ray_data_bench(root: Path, rounds: int) -> dict:
    """Ray start-up, then for each setting a cold pass (first in a fresh process pool only for the first setting)
    and `rounds` timed passes; checks that Ray's first batch equals StreamLoader's, pixel for pixel."""
    import ray

    from raykd.data import load_data
    from raykd.data.stream_dataset import StreamDataset, ViewSpec, collate

    files = load_data(data_cfg(root, 0)).train
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    out: dict = {"init_s": time.perf_counter() - t0, "rows": {}}
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    settings = [("preserve_order, 32 rows/block", 1, True, 32), ("preserve_order, 32 rows/block", 2, True, 32),
                ("no preserve_order, 32 rows/block", 2, False, 32), ("Ray's default blocks (200)", 2, True, None)]
    try:
        for name, conc, keep_order, rows in settings:
            ctx.execution_options.preserve_order = keep_order
            cold_rate, cold_first, index, x = ray_pass(ray_epoch(files, 0, conc, rows), mean, std)
            r = [ray_pass(ray_epoch(files, e, conc, rows), mean, std) for e in range(1, (rounds if rows else 1) + 1)]
            out["rows"][(name, conc)] = {"cold_first_s": cold_first, "cold_rate": cold_rate,
                                         "first_s": statistics.median(p[1] for p in r),
                                         "rate": statistics.median(p[0] for p in r)}
            if "same_pixels" not in out:  # raykd's own first batch of epoch 0, decoded here
                view = ViewSpec(224, (0.08, 1.0), True, 256)
                ds = StreamDataset(files, view, train=True, seed=0)
                ref = collate([ds[(i, 0, 0)] for i in index.tolist()])["image"]
                ref = ref.float().div_(255).sub_(mean).div_(std)
                from raykd.data.stream_order import train_batches

                out["same_order"] = torch.equal(index, train_batches(len(files), BATCH, 0, 0)[0])
                out["same_pixels"] = torch.equal(ref, x)
    finally:
        ray.shutdown()
    return out


def ray_contract_notes() -> list[str]:
    """What Ray Data's own code says about our contracts (order per (seed, epoch, rank), dataset indices), with the
    places in the installed package."""
    import ray

    base = Path(ray.__file__).parent / "data"

    def where(rel: str, needle: str) -> str:
        text = (base / rel).read_text().splitlines()
        line = next((i + 1 for i, t in enumerate(text) if needle in t), None)
        return f"`ray/data/{rel}:{line}`" if line else f"`ray/data/{rel}`"

    return [
        f"What Ray Data {ray.__version__} gives for raykd's contracts (read in the installed package):", "",
        f"- **Order.** Off by default: `ExecutionOptions.preserve_order=False` "
        f"({where('_internal/execution/interfaces/execution_options.py', 'preserve_order: bool = False')}); "
        f"blocks come out in completion order. With `preserve_order=True` the output follows the input blocks, so "
        f"an order computed by us (raykd's `train_batches`) survives `from_items(...).map(...)` - the bench checks "
        f"the first batch's indices and pixels against StreamLoader's.",
        f"- **Shuffle seed.** `random_shuffle(seed=int)` gives the *same* order every execution; "
        f"`RandomSeedConfig(seed, reseed_after_execution=True)` mixes in an execution counter "
        f"({where('_internal/random_config.py', 'class RandomSeedConfig')}), i.e. the count of executions in this "
        f"process, not our epoch: a resumed run (new process, counter at 0) would not replay epoch k's order. The "
        f"docstring itself warns order may still vary unless `preserve_order` is set. So the (seed, epoch) order has "
        f"to be ours; Ray's shuffle would also cost an all-to-all exchange each epoch.",
        f"- **Sharding across ranks.** `streaming_split(n, equal=...)` ({where('dataset.py', 'def streaming_split')}) "
        f"hands whole *blocks* to the split with the fewest rows so far "
        f"(`OutputSplitter._select_next_output_index`, {where('_internal/execution/operators/output_splitter.py', 'def _select_next_output_index')}; "
        f"the class says \"OutputSplitter does not provide any ordering guarantees\"). A rank's samples therefore depend "
        f"on block sizes and, with locality hints, on where blocks landed (preserve_order switches the hints off, "
        f"{where('_internal/execution/operators/output_splitter.py', 'If preserve_order is set')}). `equal=True` "
        f"evens the ranks by dropping rows; `equal=False` keeps every row but ranks may get different step counts "
        f"(a DDP hang). raykd's rule - one permutation, each global batch dealt across ranks, the tail kept - is "
        f"not expressible; each rank would have to build its own `from_items` of its indices (then Ray is only a "
        f"process pool). All iterators also start each epoch together (a barrier in the coordinator actor).",
        "- **Resume mid-epoch.** No skip-to-batch: an iterator restarts its epoch. With the order computed by us, "
        "the remaining indices can be fed to a fresh `from_items`.",
        "- **Per-sample indices.** Not a Ray notion: `read_images(include_paths=True)` gives paths; with "
        "`from_items` the index is just a column we add (as here), carried through `map`.",
        "- **Per-sample augmentation seeds.** Ours: the map function seeds a generator from (seed, epoch, index), "
        "so it does not matter which Ray worker decodes a row (as in StreamLoader).",
        f"- **Bad files.** A raising map function fails its task and the execution aborts; with "
        f"`DataContext.max_errored_blocks` the failed *block* is dropped whole, every row in it, with a logged "
        f"error ({where('context.py', 'max_errored_blocks: Max number')}, "
        f"{where('_internal/execution/streaming_executor_state.py', 'def _record_errored_block')}). Skipping one file "
        f"and counting it needs the same catch-and-return-None as StreamDataset.",
    ]


# ------------------------------------------------------------------------------------------------ 3. peak RSS


def tree_pids(root: int) -> list[int]:
    """`root` and its descendants, from /proc (Linux; no psutil in the venv)."""
    parent: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parent.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += parent.get(pid, [])
    return out


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))


def status_kb(pid: int, *keys: str) -> list[int]:
    """Fields of /proc/<pid>/status in kB (RssAnon: the process's own anonymous memory; VmHWM: its peak RSS)."""
    got = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                got[k] = int(v.split()[0])
    return [got[k] for k in keys]


def cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def sample_tree(pid: int, stop: threading.Event, out: dict, every: float = 0.2) -> None:
    """Peaks of the training process plus its loader workers (forked: the same command line), summed RSS and
    (every 5th sample) summed PSS, which counts a page the workers still share with their parent once; the main
    process's RSS, anonymous RSS and kernel high-water mark; and the summed RSS of other children (MLflow's
    model-logging subprocess at the end)."""
    k = 0
    while not stop.is_set():
        rss = pss = other = n = 0
        try:
            me = cmdline(pid)
        except OSError:
            return
        for p in tree_pids(pid):
            try:
                if cmdline(p) != me:
                    other += rss_bytes(p)
                    continue
                rss += rss_bytes(p)
                n += 1
                if k % 5 == 0:
                    pss += pss_bytes(p)
            except (OSError, StopIteration):
                pass
        try:
            main = rss_bytes(pid)
            anon, hwm = (v * 1024 for v in status_kb(pid, "RssAnon", "VmHWM"))
        except (OSError, KeyError):  # exited (a zombie's status has no memory fields)
            return
        for key, v in (("tree_rss", rss), ("main_rss", main), ("main_anon", anon), ("main_hwm", hwm), ("procs", n),
                       ("other_rss", other)):
            out[key] = max(out.get(key, 0), v)
        if k % 5 == 0:
            out["tree_pss"] = max(out.get("tree_pss", 0), pss)
        k += 1
        stop.wait(every)


def training_rss(root: Path, work: Path, val_fraction: float = 0.1) -> dict:
    """One epoch of a vanilla resnet8 at RSS_SIZE px streamed from `root`, `raykd run --executor local` in a child
    process, sampled every 0.2 s."""
    import yaml

    cfg = {"name": "stream_rss", "storage": str(work / "runs"),
           "data": {"name": "image_folder", "root": str(root), "stream": True, "image_size": RSS_SIZE, "batch_size": BATCH,
                    "eval_batch_size": 256, "loader_workers": 2, "val_fraction": val_fraction},
           "train": {"epochs": 1}, "nodes": {"student": {"model": "resnet8"}}}
    work.mkdir(parents=True, exist_ok=True)
    path = work / "stream_rss.yaml"
    path.write_text(yaml.safe_dump(cfg))
    raykd = Path(sys.executable).with_name("raykd")
    out: dict = {}
    stop = threading.Event()
    t0 = time.perf_counter()
    child = subprocess.Popen([str(raykd), "run", str(path), "--executor", "local"], cwd=work, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    sampler = threading.Thread(target=sample_tree, args=(child.pid, stop, out))
    sampler.start()
    text = child.communicate()[0]
    stop.set()
    sampler.join()
    out["seconds"] = time.perf_counter() - t0
    if child.returncode != 0:
        raise RuntimeError(f"raykd run failed on {root}:\n{text[-3000:]}")
    out["logged"] = logged_metrics(work / "runs")
    return out


def logged_metrics(storage: Path) -> dict[str, float]:
    """The epoch's data/* metrics and images/s as the trainer logged them to MLflow (the store's sqlite file)."""
    import sqlite3

    db = storage / "mlflow.db"
    if not db.is_file():
        return {}
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT key, value FROM metrics WHERE key LIKE 'data/%' OR key IN "
                           "('images_per_s', 'train_seconds') ORDER BY timestamp, step").fetchall()
    return dict(rows)


# ------------------------------------------------------------------------------------------------- the report


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def throughput_section(photos: Path, gen: dict, rounds: int) -> tuple[dict, list[str]]:
    """Section 1: (images/s per loader and process count, the section's lines)."""
    train_files = sorted(str(p) for p in (photos / "train").rglob("*.JPEG"))
    n_train = len(train_files)
    lines: list[str] = []
    costs = per_sample_costs(train_files[:: max(1, n_train // 120)])
    through = {w: loader_throughput(photos, w, rounds) for w in (1, 2)}
    print(through, flush=True)
    lines += [
        "## 1. Decode + augment throughput: raykd StreamLoader vs torchvision ImageFolder + DataLoader", "",
        f"{n_train} generated photo-like JPEGs (10 classes, both sides uniform in 300-500 px, quality 90, mean "
        f"{gen['mean_kb']:.0f} KB: ImageNet's range), batch {BATCH}, output 3x224x224. Median images/s of "
        f"{rounds} full passes per loader after a warm-up pass, the loaders taking turns. raykd: "
        "`make_loader(load_data(DataConfig(name=image_folder, stream=true, image_size=224, loader_workers=W)))` "
        "on device cpu, batches normalised float as training gets them (uint8 crops in the workers, "
        "normalised in the training process). torchvision: `ImageFolder` + `RandomResizedCrop(224), "
        "RandomHorizontalFlip(), ToTensor(), Normalize(ImageNet)` (eval: `Resize(256), CenterCrop(224)`, ...), "
        "`DataLoader(batch_size=64, num_workers=W)`. Train loaders keep their workers across passes; eval loaders "
        "start them each pass (both libraries' choice here, as in raykd's trainer), so the eval rows include "
        "worker start-up.", "",
        "| view | loader processes | raykd img/s | per process | torchvision img/s | per process | raykd / torchvision |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for view in ("train", "eval"):
        for w in (1, 2):
            a, b = through[w][f"raykd {view}"], through[w][f"torchvision {view}"]
            target = " (target >= 1.0)" if view == "train" else ""
            lines.append(f"| {view} | {w} | {a:.0f} | {a / w:.0f} | {b:.0f} | {b / w:.0f} | **{a / b:.2f}x**{target} |")
    lines += [
        "", "Where one image's time goes (milliseconds, one process, one thread, 120 of the same files; the raykd "
        "rows are what a StreamLoader worker does, except the normalisation, which runs in the training "
        "process):", "",
        "| stage | ms / image |", "| --- | --- |",
        *[f"| {k} | {v:.2f} |" for k, v in costs.items()],
    ]
    rk = sum(v for k, v in costs.items() if k.startswith("raykd") and "eval" not in k)
    tv = sum(v for k, v in costs.items() if k.startswith("torchvision") and "Resize+" not in k)
    norm = costs["raykd normalise to float (training process, per image)"]
    lines += ["", f"Train view, whole sample: raykd {rk:.2f} ms (of which {norm:.2f} ms in the training process) vs "
              f"torchvision {tv:.2f} ms: {tv / rk:.2f}x in raykd's favour in one thread. "
              f"The loader measurements above add process hand-off (raykd ships uint8, a quarter of float32's "
              f"bytes) and, on 2 cores, compete with the training process for the CPUs.", ""]
    return through, lines


def ray_section(photos: Path, rounds: int, through: dict) -> list[str]:
    """Section 2, compared with section 1's StreamLoader rates."""
    n_train = sum(1 for _ in (photos / "train").rglob("*.JPEG"))
    lines: list[str] = []
    rd = ray_data_bench(photos, rounds)
    print(rd, flush=True)
    best = through[2]["raykd train"]
    lines += [
        "## 2. Ray Data as the engine", "",
        f"The same {n_train} files, the same train view: a `ray.data.from_items` of (path, index, label) rows in raykd's "
        f"(seed, epoch) order, `.map()` with raykd's `decode_image_file` + `train_view` seeded per sample as "
        f"StreamLoader seeds it, `iter_torch_batches(batch_size={BATCH})`, normalised in the driver as StreamLoader "
        f"does. Local `ray.init(num_cpus=2)`; map tasks capped at the given concurrency (`TaskPoolStrategy`). A "
        f"fresh Dataset per epoch (the augmentation depends on the epoch). Images/s: median of {rounds} passes "
        f"after a cold one (one pass for Ray's default blocks).", "",
        f"`ray.init` took **{rd['init_s']:.1f} s**. Ray's first batch of epoch 0 equals StreamLoader's: indices "
        f"{'yes' if rd['same_order'] else 'NO'}, pixels {'yes' if rd['same_pixels'] else 'NO'}.", "",
        "| setting | map tasks | first batch, first pass | first batch, later | img/s | per task | vs raykd StreamLoader (same process count) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (name, conc), r in rd["rows"].items():
        ref = through[conc]["raykd train"]
        lines.append(f"| {name} | {conc} | {r['cold_first_s']:.2f} s | {r['first_s']:.2f} s | {r['rate']:.0f} "
                     f"| {r['rate'] / conc:.0f} | {r['rate'] / ref:.2f}x |")
    lines += ["", f"(raykd's StreamLoader with 2 workers: {best:.0f} img/s; its first batch comes after worker start-up "
              "only, with no cluster to start.)", "", *ray_contract_notes(), ""]
    return lines


def anon_mib() -> int:
    return status_kb(os.getpid(), "RssAnon")[0] // 1024


def eval_pass_memory(root: Path) -> tuple[list[str], dict]:
    """This process's anonymous memory every 10 batches of two eval passes (batch 256, 2 workers, resnet8 at
    RSS_SIZE) over the big folder's training split: does it keep growing, or level off? Also the bytes per file the
    training process holds for a streamed split."""
    from raykd import models
    from raykd.data import load_data, make_loader

    cfg = data_cfg(root, 2).model_copy(update={"image_size": RSS_SIZE, "val_fraction": 0.1})
    data = load_data(cfg)
    loader = make_loader(data.train, cfg, 256, train=False, device="cpu", mean=data.mean, std=data.std)
    model = models.create("resnet8", data.num_classes).eval()
    marks, peak = [f"before {anon_mib()}"], {1: 0, 2: 0}
    with torch.no_grad():
        for p in (1, 2):
            for i, b in enumerate(loader):
                model(b["image"])
                peak[p] = max(peak[p], anon_mib())
                if i % 10 == 0 or i == len(loader) - 1:
                    marks.append(f"{p}.{i}: {anon_mib()}")
    fs = data.train
    state = {"files": len(fs), "path_bytes": fs.paths.itemsize, "per_file": (fs.paths.nbytes + fs.labels.nbytes) / len(fs),
             "batches": len(loader), "peak1": peak[1], "peak2": peak[2]}
    return marks, state


def memory_section(tmp: Path, rss_sizes: tuple[int, int]) -> list[str]:
    """Section 3: the same one-epoch run on a small and a 10x larger folder."""
    rss = {}
    for n in rss_sizes:
        root = tmp / f"small{n}"
        rss[n] = {"gen": write_tree(root, 10, {"train": n // 10, "test": 20}, (64, 96), "small", seed=n)}
        rss[n].update(training_rss(root, tmp / f"work{n}"))
        print(n, rss[n], flush=True)
    big = rss_sizes[1]
    same_val = {"gen": rss[big]["gen"], **training_rss(tmp / f"small{big}", tmp / "work-same-val", val_fraction=0)}
    print("same val", same_val, flush=True)
    a, b = rss_sizes
    lines = [
        f"## 3. Peak memory of a streamed training epoch: {a:,} vs {b:,} JPEGs", "",
        "`raykd run <config> --executor local` in a child process: image_folder streamed (`stream: true`, "
        f"image_size {RSS_SIZE}, batch {BATCH}, eval batch 256, `loader_workers: 2`), one epoch of a vanilla "
        f"resnet8 (at {RSS_SIZE} px, not 64: the model's CPU time would quadruple and the memory question does not "
        "depend on it), 10 classes, 64-96 px JPEGs (about 4 KB), 20 test images a class, 10% of train held out for "
        "val (the last row: no hold-out, val is the test split, so both runs evaluate the same 200 images). "
        "Sampled every 0.2 s from /proc: the training process and its loader workers (forked, so the same "
        "command line) as summed RSS (a page the workers still share with their parent counts once per process) "
        "and summed PSS (shares it out: closer to the memory actually used; every 1 s); the main process's RSS, its "
        "anonymous part (what it allocated itself, not library pages) and the kernel's high-water mark (VmHWM); "
        "other children (MLflow's model-logging subprocess at the end) apart. The decoded splits are what the "
        f"in-memory path would hold (uint8, all splits) at {RSS_SIZE} px and at 64 px.", "",
        f"| JPEGs in train/ | decoded splits, {RSS_SIZE} / 64 px | tree peak RSS | tree peak PSS | main peak RSS | "
        "main peak anon | main VmHWM | trainer's `data/peak_rss_mb` | processes | other children | wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = [(f"{a:,}", rss[a]), (f"{b:,}", rss[b]), (f"{b:,}, val = test", same_val)]
    for label, r in rows:
        px = r["gen"]["files"] * 3
        logged = r["logged"].get("data/peak_rss_mb")
        lines.append(f"| {label} | {mib(px * RSS_SIZE**2)} / {mib(px * 64**2)} | {mib(r['tree_rss'])} | "
                     f"{mib(r['tree_pss'])} | {mib(r['main_rss'])} | {mib(r['main_anon'])} | {mib(r['main_hwm'])} | "
                     f"{f'{logged:,.0f} MiB' if logged else '-'} | {r['procs']} | {mib(r['other_rss'])} | "
                     f"{r['seconds']:.0f} s |")
    keys = ("tree_rss", "tree_pss", "main_rss", "main_anon", "main_hwm")
    names = ("tree RSS", "tree PSS", "main RSS", "main anon", "main VmHWM")

    def ratios(r: dict) -> str:
        return ", ".join(f"{name} **{r[k] / rss[a][k]:.2f}x**" for name, k in zip(names, keys))

    lines += ["", f"{b:,} / {a:,} ({rss[b]['gen']['files'] / rss[a]['gen']['files']:.1f}x the files): {ratios(rss[b])}; "
              f"with the same 200-image val split: {ratios(same_val)} (target ~1.0). So the extra on the big folder "
              f"comes from its larger val pass (eval batches of 256: {math.ceil(a * 0.1 / 256)} on the small folder, "
              f"{math.ceil(b * 0.1 / 256)} on the big one), not from holding more files; and more eval batches do not "
              f"keep adding to it (below).", "",
              "`data/peak_rss_mb` is the training process's `VmHWM`, reset when its training loop starts (a reused "
              "Ray worker process would otherwise report earlier nodes' peaks). The trainer's epoch as it logged it:", "",
              "| JPEGs in train/ | samples read | distinct | skipped | wait share | images/s | train seconds |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for n in rss_sizes:
        m = rss[n]["logged"]
        lines.append(f"| {n:,} | {m.get('data/samples_read', 0):,.0f} | {m.get('data/samples_distinct', 0):,.0f} | "
                     f"{m.get('data/skipped_files', 0):.0f} | {m.get('data/wait_share', 0):.3f} | "
                     f"{m.get('images_per_s', 0):.0f} | {m.get('train_seconds', 0):.1f} |")
    marks, state = eval_pass_memory(tmp / f"small{b}")
    lines += ["", f"This (bench) process's anonymous MiB every 10 batches of two eval passes (pass.batch) over the {state['files']:,}-image split ({state['batches']} batches of "
              f"256, 2 workers, resnet8 forward): " + ", ".join(marks) + f"; peak {state['peak1']} MiB in the first "
              f"pass, {state['peak2']} MiB in the second (checked every batch). The split itself costs the training "
              f"process {state['per_file']:.0f} bytes a file (paths in one fixed-width byte array, padded to the "
              f"longest path: {state['path_bytes']} bytes here, plus the int64 label), "
              f"{state['per_file'] * 1.28e6 / 2**20:.0f} MiB for ImageNet's 1.28M files at this path length.", ""]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small folders and one round (smoke run)")
    ap.add_argument("--out", default=str(ROOT / "STREAM_RESULTS.md"))
    args = ap.parse_args()
    rounds = 1 if args.quick else 3
    per_class = 12 if args.quick else 60
    rss_sizes = (200, 2000) if args.quick else (2000, 20000)
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    head = [
        "# Streaming data path: benchmark results", "",
        "Re-run with `.venv/bin/python bench/stream.py` (about 4 minutes on 2 cores; `--quick` for a smoke run).",
        measured_on("bench/stream.py", torch.device("cpu")) + " No GPU: the \"device\" is the CPU, so StreamLoader's "
        "normalisation to float runs in the training process on the same two cores.", "",
    ]
    with tempfile.TemporaryDirectory(prefix="raykd-stream-bench-") as tmp:
        tmp = Path(tmp)
        memory = memory_section(tmp, rss_sizes)
        photos = tmp / "photos"
        gen = write_tree(photos, 10, {"train": per_class, "test": 2}, (300, 500), "photo")
        print(f"photos: {gen}", flush=True)
        through, loaders = throughput_section(photos, gen, rounds)
        ray_lines = ray_section(photos, rounds, through)
        listing = listing_times(tmp / f"small{rss_sizes[1]}", tmp / "index_cache")
    load_end = os.getloadavg()
    tail = ["## Conditions", "",
            f"Whole bench {time.perf_counter() - t_start:.0f} s. Load average (1 min) {load_start[0]:.1f} at the start, "
            f"{load_end[0]:.1f} at the end, on {os.cpu_count()} cores (the bench's own loaders and trainers count "
            "in it): absolute rates move with the load, the side-by-side ratios less (loaders take turns within each "
            "round).", ""]
    lines = [*head, *loaders, *ray_lines, *memory, *listing, *tail]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


def listing_times(root: Path, cache: Path) -> list[str]:
    """Listing the folder raykd's way (`stream_image_folder`: scandir per class, paths as one byte array; with a
    cache directory the index is kept and read back) and torchvision's `ImageFolder`, page cache warm."""
    import inspect
    import shutil

    from torchvision import datasets

    from raykd.config.schema import DataConfig
    from raykd.data.image_folder import list_split, stream_image_folder

    cfg = DataConfig(name="image_folder", root=str(root), stream=True, image_size=RSS_SIZE)
    cached = "cache_dir" in inspect.signature(stream_image_folder).parameters

    def first_time():
        shutil.rmtree(cache, ignore_errors=True)
        stream_image_folder(cfg, cache)

    cases = {"raykd `list_split(train)` (scandir per class)": lambda: list_split(root / "train"),
             "raykd `stream_image_folder` (train + test FileSets), no cache": lambda: stream_image_folder(cfg)}
    if cached:
        cases["raykd `stream_image_folder`, index cache written"] = first_time
        cases["raykd `stream_image_folder`, index cache read"] = lambda: stream_image_folder(cfg, cache)
    cases["torchvision `ImageFolder(train)`"] = lambda: datasets.ImageFolder(str(root / "train"))
    times = {}
    for name, fn in cases.items():
        t = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        times[name] = statistics.median(t)
    n = sum(1 for _ in (root / "train").rglob("*.JPEG"))
    return [f"## 4. Listing a {n:,}-file folder", "",
            "Median of 3, page cache warm (the files were just written; a cold or network filesystem is slower, "
            "which is what the index cache is for).", "",
            "| what | seconds | per 1M files (linear) |", "| --- | --- | --- |",
            *[f"| {k} | {v:.3f} | {v / n * 1e6:.0f} s |" for k, v in times.items()], ""]


if __name__ == "__main__":
    sys.exit(main())
