"""What a sweep found: one row per trial, the best config (by the mean over its seeds of the metric at the last
epoch, among trials that ran to the end), the results CSV and the best config as a ready-to-run YAML."""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raykd.sweep import space


@dataclass
class TrialRow:
    trial_id: str
    values: dict[str, Any]  # every field, the seed included when the sweep has seeds
    status: str  # done | cached | stopped | failed
    epochs: int  # epochs this trial reached
    metric: float | None  # the sweep metric at its last reported epoch
    test_top1: float | None  # recorded, never selected on
    run_id: str
    node_dir: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # a failed trial's cause, in one line

    @property
    def key(self) -> str:
        return space.config_key(self.values)

    @property
    def finished(self) -> bool:
        """Ran to the end (or was trained before) with the metric reported: what the best and the means count."""
        return self.status in ("done", "cached") and self.metric is not None


def rows_from(results, metric: str, epochs: int) -> list[TrialRow]:
    """From Tune's ResultGrid."""
    out = []
    for r in results:
        m = r.metrics or {}
        config = dict(r.config or {})
        reached = int(m.get("epoch", 0) or 0)
        status = "failed" if r.error else "cached" if m.get("cached") else "done" if reached >= epochs else "stopped"
        out.append(TrialRow(
            trial_id=str(m.get("trial_id", "")), values=config, status=status, epochs=reached,
            metric=_num(m.get(metric)), test_top1=_num(m.get("test/top1")) if reached >= epochs else None,
            run_id=str(m.get("run_id") or ""), node_dir=str(m.get("node_dir") or ""), metrics=m,
            error=_cause(r.error) if r.error else ""))
    return out


def _cause(e: BaseException) -> str:
    """The original error behind Ray's wrappers, as its type and last line (ours read as sentences)."""
    cause = getattr(e, "cause", None)
    while isinstance(cause, BaseException) and getattr(cause, "cause", None) is not None:
        cause = cause.cause
    e = cause if isinstance(cause, BaseException) else e
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def complete_rows(sweep, rows: list[TrialRow]) -> None:
    """Tune's config holds the sampled fields; add the tied ones."""
    for r in rows:
        r.values = space.complete(sweep, r.values)


def best_config(rows: list[TrialRow], mode: str) -> tuple[str, list[TrialRow]] | None:
    """The config whose finished trials have the best mean metric, and those trials."""
    groups: dict[str, list[TrialRow]] = {}
    for r in rows:
        if r.finished:
            groups.setdefault(r.key, []).append(r)
    if not groups:
        return None
    sign = 1 if mode == "max" else -1

    def score(k: str) -> tuple[float, float]:
        """The metric's mean; on a tie (val top-1 moves in steps of one image), the lower validation loss."""
        losses = [r.metrics.get("val/loss") for r in groups[k]]
        loss = statistics.mean(losses) if all(isinstance(x, (int, float)) for x in losses) else 0.0
        return sign * statistics.mean(r.metric for r in groups[k]), -loss

    key = max(sorted(groups), key=score)
    return key, groups[key]


def by_config(rows: list[TrialRow]) -> dict[str, list[TrialRow]]:
    out: dict[str, list[TrialRow]] = {}
    for r in rows:
        out.setdefault(r.key, []).append(r)
    return out


def write_csv(rows: list[TrialRow], path: Path, metric: str) -> Path:
    fields = list(dict.fromkeys(f for r in rows for f in r.values))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", *fields, "status", "epochs", metric, "test/top1", "mlflow_run", "node_dir"])
        for r in rows:
            w.writerow([r.trial_id, *(r.values.get(k, "") for k in fields), r.status, r.epochs,
                        "" if r.metric is None else f"{r.metric:.4f}",
                        "" if r.test_top1 is None else f"{r.test_top1:.4f}", r.run_id, r.node_dir])
    return path


def write_best_yaml(raw: dict[str, Any], node: str, values: dict[str, Any], seeds: list[int] | None,
                    path: Path, note: str) -> Path:
    """The experiment with the best values in place, runnable as it is (`raykd run best.yaml`)."""
    import copy

    out = copy.deepcopy(raw)
    out.pop("sweep", None)
    target = out["nodes"][node]
    for f, v in values.items():
        if f == space.SEED:
            continue
        section = target
        parts = f.split(".")
        for part in parts[:-1]:
            section = section.setdefault(part, {})
        section[parts[-1]] = v
    target.pop("seeds", None)
    if seeds:
        target["seeds"] = list(seeds)
        target.get("train", {}).pop("seed", None)
    elif space.SEED in values:
        target.setdefault("train", {})["seed"] = values[space.SEED]
    path.write_text(f"# {note}\n" + yaml.safe_dump(out, sort_keys=False))
    return path
