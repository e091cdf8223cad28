"""What a sweep costs and what ASHA saves, measured in one run on one machine:

1. ASHA against the full grid on conf/sweeps/digits_kd.yaml (KD temperature x student lr, 12 configs of 12
   epochs): the share of the grid's compute (epochs trained) ASHA used, and how far ASHA's best config is
   from the grid's best (validation top-1, which both select on; and the test top-1 of each choice).
   Target: within 0.5 point at <= 35% of the compute. Each runs on its own fresh store.
2. The per-trial fixed overhead: a serial sweep (one trial at a time) of N one-epoch trials on a local Ray,
   against the same N nodes trained in-process one after another: (sweep wall - in-process wall) / N, and
   the median time a trial spends before its first epoch (building its config, plan and MLflow run).
   Target: <= 3 s a trial (a Ray Train node pays 18-21 s).

Writes bench/SWEEP_RESULTS.md (quoted by the README).   python bench/sweep.py [--quick] [--storage DIR]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from timing import measured_on

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
CONFIG = REPO / "conf" / "sweeps" / "digits_kd.yaml"


def compare_asha(storage: Path, quick: bool, log, overrides=()) -> dict:
    from raykd.sweep.run import run_sweep

    extra = list(overrides) + ["train.epochs=4", "sweep.grace_period=1",
             "sweep.space={method.temperature: {grid: [1, 4, 8]}, train.optimizer.lr: {grid: [0.005, 0.2]}}"] \
        if quick else list(overrides)
    out = {}
    for scheduler in ("none", "asha"):
        started = time.time()
        result = run_sweep(str(CONFIG), [f"storage={storage / scheduler}", f"sweep.scheduler={scheduler}",
                                         "sweep.then.retrain=false", *extra], num_cpus=2, log=log)
        out[scheduler] = {"result": result, "wall": time.time() - started}
    return out


def overhead(storage: Path, n: int, log) -> dict:
    """Serial trials vs the same nodes in-process (fresh nodes both times: two stores sharing one teacher)."""
    from raykd.config import build_experiment
    from raykd.pipeline import run_pipeline
    from raykd.sweep.run import load_sweep, run_sweep

    lrs = [round(0.01 + 0.01 * i, 3) for i in range(n)]
    common = ["train.epochs=1", "sweep.scheduler=none", "sweep.max_concurrent_trials=1", "sweep.then.retrain=false",
              f"sweep.space={{train.optimizer.lr: {{grid: {lrs}}}}}"]
    tune_store = storage / "overhead-tune"
    exp, raw = load_sweep(CONFIG, [f"storage={tune_store}", *common])
    base = copy.deepcopy(raw)
    base.pop("sweep")
    run_pipeline(build_experiment(base), executor="local", log=log, only={"teacher"})  # not part of either wall

    import ray

    from raykd.pipeline.plan import make_plan
    from raykd.pipeline.ray_executor import ensure_ray
    from raykd.pipeline.task import NodeTask, run_task

    # in-process: the engine alone trains each node (fresh folders, no tracking): what a trial cannot avoid
    local_wall = 0.0
    for lr in lrs:
        raw_one = copy.deepcopy(base)
        raw_one["nodes"]["student"].setdefault("train", {}).setdefault("optimizer", {})["lr"] = lr
        plan = make_plan(build_experiment(raw_one))
        pn = plan["student"]
        task = NodeTask(name="student", hash=pn.hash, node=pn.node, out_dir=str(storage / "overhead-local" / pn.dir.name),
                        teacher_path=str(plan["teacher"].dir / "final.pt"), data_cache=str(tune_store / "data_cache"),
                        tracking_uri=None, run_id=None)
        t = time.time()
        run_task(task, log=log)
        local_wall += time.time() - t
    ensure_ray(None, 2)  # Ray's own start is once per sweep, not per trial: not counted
    started = time.time()
    result = run_sweep(str(CONFIG), [f"storage={tune_store}", *common], num_cpus=2, log=log)
    tune_wall = time.time() - started
    ray.shutdown()
    setups = [r.metrics.get("trial_setup_seconds") for r in result.rows if r.metrics.get("trial_setup_seconds")]
    return {"n": n, "tune_wall": tune_wall, "local_wall": local_wall, "per_trial": (tune_wall - local_wall) / n,
            "setup_median": statistics.median(setups) if setups else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--storage", default=None)
    ap.add_argument("--only-asha", action="store_true", help="skip the overhead part (while designing the sweep)")
    ap.add_argument("overrides", nargs="*", help="overrides of the digits sweep, e.g. train.epochs=8")
    args = ap.parse_args()
    storage = Path(args.storage or tempfile.mkdtemp(prefix="raykd-bench-sweep-"))
    quiet = lambda *a, **k: None
    torch.set_num_threads(1)
    cmp = compare_asha(storage, args.quick, quiet, args.overrides)
    grid, asha = cmp["none"]["result"], cmp["asha"]["result"]
    epochs_grid = sum(r.epochs for r in grid.rows)
    epochs_asha = sum(r.epochs for r in asha.rows)
    by_key = {r.key: r for r in grid.rows}
    best_grid, best_asha = by_key[grid.best_key], by_key[asha.best_key]
    ov = overhead(storage, 4 if args.quick else 8, quiet) if not args.only_asha else \
        {"n": 0, "tune_wall": float("nan"), "local_wall": float("nan"), "per_trial": float("nan"),
         "setup_median": float("nan")}

    lines = [
        "# Sweeps: ASHA against the full grid, and the per-trial overhead", "",
        measured_on("bench/sweep.py" + (" --quick" if args.quick else ""), torch.device("cpu")), "",
        f"## ASHA vs the grid ({CONFIG.relative_to(REPO)}: {len(grid.rows)} configs)", "",
        "| | configs run to the end | epochs trained | share of the grid | wall | best config (by val top-1) | "
        "its val top-1 | its test top-1 (full training) |",
        "|---|--:|--:|--:|--:|---|--:|--:|",
    ]
    for name, res, epochs, best in (("grid", grid, epochs_grid, best_grid), ("ASHA", asha, epochs_asha, best_asha)):
        full = sum(1 for r in res.rows if r.status in ("done", "cached"))
        lines.append(f"| {name} | {full} | {epochs} | {100 * epochs / epochs_grid:.0f}% | "
                     f"{cmp['none' if name == 'grid' else 'asha']['wall']:.0f} s | {best.key} | {best.metric:.2f} | "
                     f"{by_key[best.key].test_top1:.2f} |")
    gap_val = best_grid.metric - by_key[best_asha.key].metric
    gap_test = best_grid.test_top1 - by_key[best_asha.key].test_top1
    lines += [
        "",
        f"ASHA used **{100 * epochs_asha / epochs_grid:.0f}%** of the grid's epochs (target <= 35%). Its choice "
        f"scores {gap_val:.2f} point(s) of validation top-1 below the grid's best (target <= 0.5) and "
        f"{gap_test:+.2f} on test (the grid's full run of each config: {by_key[best_asha.key].test_top1:.2f} vs "
        f"{best_grid.test_top1:.2f}).", "",
        "Every config of the grid (validation top-1 after the last epoch; ASHA's epochs reached):", "",
        "| config | grid: val top-1 | grid: test top-1 | ASHA: epochs | ASHA: val top-1 at its last epoch |",
        "|---|--:|--:|--:|--:|",
    ]
    asha_by = {r.key: r for r in asha.rows}
    for r in sorted(grid.rows, key=lambda r: -(r.metric or 0)):
        a = asha_by.get(r.key)
        lines.append(f"| {r.key} | {r.metric:.2f} | {r.test_top1:.2f} | {a.epochs if a else '-'} | "
                     f"{a.metric:.2f} |" if a and a.metric is not None else f"| {r.key} | {r.metric:.2f} | "
                     f"{r.test_top1:.2f} | - | - |")
    lines += [
        "", f"## Per-trial overhead ({ov['n']} one-epoch trials, one at a time)", "",
        "| | wall |", "|---|--:|",
        f"| the sweep (Tune start, {ov['n']} trials, results) | {ov['tune_wall']:.1f} s |",
        f"| the same {ov['n']} nodes trained by the engine in-process (no tracking), one after another | "
        f"{ov['local_wall']:.1f} s |",
        f"| **overhead per trial** ((sweep - in-process) / {ov['n']}) | **{ov['per_trial']:.2f} s** |",
        f"| a trial's set-up before its first epoch (median) | {ov['setup_median']:.2f} s |",
        "", "Target: <= 3 s a trial. Trials train inside Tune's trial actors, which Tune reuses "
        "(`reuse_actors=True`): no process start, torch and MLflow import or Ray Train run per trial. The sweep's "
        "figure: `sweep.png` in each sweep folder.",
    ]
    out = ROOT / "SWEEP_RESULTS.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {out}; stores under {storage}")
    for name, res in (("grid", grid), ("asha", asha)):
        print(f"{name} figure: {res.files.get('plot')}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
