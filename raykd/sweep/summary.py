"""The table `raykd tune` ends with: one row per config (mean ± std over its seeds), best first, and where the
files are."""

from __future__ import annotations

import statistics

from raykd.pipeline.summary import mean_std
from raykd.sweep.results import by_config
from raykd.text_table import aligned


def format_sweep(result) -> str:
    lines = [format_rows(result.rows, result.best_key, result.mode)]
    if not result.rows:
        lines.append("(no trial reported)")
    lines.append("")
    if result.best_key:
        lines.append(f"best (*): {result.best_key}  (selected on validation; test top-1 is shown, never used)")
    else:
        lines.append("no trial finished, so there is no best config")
    failed = [r for r in result.rows if r.error]
    for r in failed[:5]:
        lines.append(f"failed: {r.key or '(base config)'}: {r.error}")
    if len(failed) > 5:
        lines.append(f"... and {len(failed) - 5} more failed trials (results.csv)")
    for what, path in result.files.items():
        lines.append(f"{what}: {path}")
    if result.retrained is not None:
        from raykd.pipeline.summary import format_table

        lines += ["", "retrained pipeline:", format_table(result.retrained)]
    lines.append(f"MLflow: {result.tracking_uri}  sweep run {result.parent_run_id}  (browse with `raykd ui`)")
    return "\n".join(lines)


def format_rows(rows, best_key: str | None, mode: str = "max") -> str:
    """One line per config, best mean first."""
    body = []
    for key, trials in by_config(rows).items():
        ok = [t for t in trials if t.finished]
        tests = [t.test_top1 for t in ok if t.test_top1 is not None]
        score = statistics.mean(t.metric for t in ok) if ok else None
        body.append((score, ("*" if key == best_key else " ") + " " + (key or "(base config)"),
                     mean_std([t.metric for t in ok]) if ok else "-", mean_std(tests) if tests else "-",
                     str(max(t.epochs for t in trials)), "/".join(sorted({t.status for t in trials})),
                     str(len(trials))))
    sign = -1 if mode == "max" else 1
    body.sort(key=lambda b: (b[0] is None, sign * (b[0] or 0)))
    head = ("config", "metric (last epoch)", "test top-1 (last)", "epochs", "status", "trials")
    return "\n".join(aligned(head, [b[1:] for b in body]))
