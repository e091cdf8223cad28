"""A sweep's figure: the metric against the one swept field (mean and std over seeds, stopped trials marked), or
over two fields a heatmap of the grid's means (as MTKD-SSR's T1 x T2 figure) or a scatter for sampled values.
Tied fields follow their source and are not axes; more than two free fields get no figure."""

from __future__ import annotations

import statistics
from pathlib import Path

from raykd.plots import save_figure
from raykd.sweep.results import TrialRow


def sweep_plot(rows: list[TrialRow], axes: list[str], metric: str, path: Path, title: str,
               grids: dict[str, list]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finished = [r for r in rows if r.finished]
    if not axes or len(axes) > 2 or not finished:
        return None
    if len(axes) == 1:
        (x,) = axes
        fig, ax = plt.subplots(figsize=(5.6, 3.8))
        groups: dict = {}
        for r in finished:
            groups.setdefault(r.values[x], []).append(r.metric)
        xs = sorted(groups)
        means = [statistics.mean(groups[v]) for v in xs]
        stds = [statistics.stdev(groups[v]) if len(groups[v]) > 1 else 0.0 for v in xs]
        categorical = not all(isinstance(v, (int, float)) for v in xs)
        pos = list(range(len(xs))) if categorical else xs
        ax.errorbar(pos, means, yerr=stds, marker="o", capsize=3, label="finished (mean ± std over seeds)")
        stopped = [r for r in rows if r.status == "stopped" and r.metric is not None]
        if stopped and not categorical:
            ax.scatter([r.values[x] for r in stopped], [r.metric for r in stopped], marker="x", color="grey",
                       label="stopped early (last epoch reached)")
        if categorical:
            ax.set_xticks(pos, [str(v) for v in xs])
        elif len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 20:
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    else:
        x, y = axes
        fig, ax = plt.subplots(figsize=(6.2, 4.8))
        if x in grids and y in grids:
            xs, ys = list(grids[x]), list(grids[y])
            cells: dict = {}
            for r in finished:
                cells.setdefault((r.values[x], r.values[y]), []).append(r.metric)
            import numpy as np

            grid = np.full((len(ys), len(xs)), np.nan)
            for (vx, vy), ms in cells.items():
                if vx in xs and vy in ys:
                    grid[ys.index(vy), xs.index(vx)] = statistics.mean(ms)
            im = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(xs)), [str(v) for v in xs])
            ax.set_yticks(range(len(ys)), [str(v) for v in ys])
            for i in range(len(ys)):
                for j in range(len(xs)):
                    if not np.isnan(grid[i, j]):
                        ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8,
                                color="white" if grid[i, j] < np.nanmean(grid) else "black")
            for r in rows:  # cells ASHA stopped: where it stopped them
                if r.status == "stopped" and r.values[x] in xs and r.values[y] in ys and \
                        np.isnan(grid[ys.index(r.values[y]), xs.index(r.values[x])]):
                    ax.text(xs.index(r.values[x]), ys.index(r.values[y]), f"stopped\nat epoch {r.epochs}",
                            ha="center", va="center", fontsize=7, color="grey")
        else:
            im = ax.scatter([r.values[x] for r in finished], [r.values[y] for r in finished],
                            c=[r.metric for r in finished], cmap="viridis", s=60)
        fig.colorbar(im, ax=ax, label=metric)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)
