"""Validation top-1 per epoch, from MLflow's metric history (step = epoch): one line per seed group
(the seeds' mean, shaded +/- their std) or per node run asked for by name."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from raykd.errors import RaykdError
from raykd.plots import save_figure
from raykd.report.groups import Group

METRIC = "val/top1"


@dataclass
class Series:
    name: str  # the node or group it draws
    label: str
    steps: list[int]
    mean: list[float]
    std: list[float] | None  # None for a single run


def select(groups: list[Group], names: list[str] | None) -> list[tuple[str, list]]:
    """(label, runs) for each name: a group (all its seeds) or one node run; default every group."""
    if not names:
        return [(g.name, g.runs) for g in groups]
    by_group = {g.name: g.runs for g in groups}
    by_run = {r.name: [r] for g in groups for r in g.runs}
    out = []
    for name in names:
        runs = by_group.get(name) or by_run.get(name)
        if runs is None:
            known = ", ".join(list(by_group) + [n for n in by_run if n not in by_group])
            raise RaykdError(f"--curves: no node or seed group named '{name}' in this pipeline run; it has: {known}.")
        out.append((name, runs))
    return out


def history(client, run_id: str, metric: str = METRIC) -> dict[int, float]:
    """{epoch: value}; where a step was logged twice (a resumed run), the later value."""
    points = sorted(client.get_metric_history(run_id, metric), key=lambda m: (m.step, m.timestamp))
    return {m.step: m.value for m in points}


def series(client, chosen: list[tuple[str, list]], metric: str = METRIC) -> list[Series]:
    """The curves to draw; runs with no epochs of it are left out (failed runs, and integration nodes, whose one
    value is logged at step 0)."""
    out = []
    for label, runs in chosen:
        hs = [h for h in (history(client, r.source_run_id, metric) for r in runs) if max(h, default=0) > 0]
        if not hs:
            continue
        steps = sorted({s for h in hs for s in h})
        at = [[h[s] for h in hs if s in h] for s in steps]
        many = len(hs) > 1
        out.append(Series(label, f"{label} ({len(hs)} seeds)" if many else label, steps, [statistics.mean(v) for v in at],
                          [statistics.stdev(v) if len(v) > 1 else 0.0 for v in at] if many else None))
    return out


def plot(curves: list[Series], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = len(curves) > 8  # a big pipeline's legend goes beside the axes
    fig, ax = plt.subplots(figsize=(9.5 if wide else 6.4, 4.2))
    colors = plt.get_cmap("tab20" if len(curves) > 10 else "tab10")
    for i, c in enumerate(curves):
        color = colors(i % colors.N)
        ax.plot(c.steps, c.mean, label=c.label, color=color, marker="o" if len(c.steps) <= 20 else None, ms=3)
        if c.std is not None:
            lo = [m - s for m, s in zip(c.mean, c.std)]
            hi = [m + s for m, s in zip(c.mean, c.std)]
            ax.fill_between(c.steps, lo, hi, color=color, alpha=0.18, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    steps = sorted({s for c in curves for s in c.steps})
    if len(steps) <= 12:
        ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    if wide:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)
