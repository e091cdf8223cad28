"""The report's table in four forms: aligned text, markdown, booktabs LaTeX (one row per node or seed
group, optionally each seed below it) and CSV (one row per run with raw numbers, for other tools).

Text, markdown and LaTeX share one list of rows, so they always agree; numbers are shown to 2 decimals
(accuracy, ms) or in millions of parameters, as `raykd run`'s summary shows them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from raykd.report.collect import NodeRun
from raykd.report.groups import TOP1_BEST, TOP1_LAST, Group, mean, mean_std
from raykd.text_table import aligned

COLUMNS = ("node", "method", "model", "params", "ms/input", "test top-1 (best val)", "test top-1 (last)")
CSV_COLUMNS = ("group", "node", "seed", "method", "model", "run_id", "status", "params", "latency_ms",
               "best_test_top1", "test_top1", "best_val_top1", "best_epoch")
CSV_METRICS = {"params": "params", "latency_ms": "latency_ms", "best_test_top1": TOP1_BEST, "test_top1": TOP1_LAST,
               "best_val_top1": "best/val_top1", "best_epoch": "best/epoch"}

Stat = tuple[float, "float | None", int]  # mean, sample std (None for one value), n


@dataclass
class Row:
    label: str
    method: str
    model: str
    params: float | None
    latency: float | None
    best: Stat | None
    last: Stat | None
    replicate: bool = False  # a seed's own row below its group's


def table_rows(groups: list[Group], per_seed: bool = False) -> list[Row]:
    rows = []
    for g in groups:
        rows.append(Row(g.name, g.same("method"), g.same("model"), mean(g.values("params")),
                        mean(g.values("latency_ms")), mean_std(g.values(TOP1_BEST)), mean_std(g.values(TOP1_LAST))))
        if per_seed and g.seeded:
            rows += [_run_row(r) for r in g.runs]
    return rows


def _run_row(r: NodeRun) -> Row:
    m = r.metrics
    one = (lambda k: (m[k], None, 1) if k in m else None)
    return Row(r.name, r.method, r.model, m.get("params"), m.get("latency_ms"), one(TOP1_BEST), one(TOP1_LAST),
               replicate=True)


def fmt_stat(s: Stat | None, pm: str = "±", math: bool = False) -> str:
    if s is None:
        return "-"
    value, std, n = s
    if std is None:
        return f"{value:.2f}"
    body = f"{value:.2f} {pm} {std:.2f}"
    return (f"${body}$" if math else body) + f" ({n} seeds)"


def _cells(r: Row, pm: str = "±", math: bool = False) -> list[str]:
    return [r.label, r.method, r.model, f"{r.params / 1e6:.3f}M" if r.params is not None else "-",
            f"{r.latency:.2f}" if r.latency is not None else "-",
            fmt_stat(r.best, pm, math), fmt_stat(r.last, pm, math)]


def to_text(rows: list[Row]) -> str:
    body = [_cells(r) for r in rows]
    for cells, r in zip(body, rows):
        if r.replicate:
            cells[0] = "  " + cells[0]
    return "\n".join(aligned(COLUMNS, body, right={3, 4, 5, 6}))


def to_markdown(rows: list[Row]) -> str:
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join([":---"] * 3 + ["---:"] * 4) + "|"]
    for r in rows:
        cells = [c.replace("|", "\\|") for c in _cells(r)]
        if r.replicate:
            cells[0] = "&emsp;" + cells[0]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def to_latex(rows: list[Row], caption: str = "") -> str:
    """A booktabs tabular (`\\usepackage{booktabs}`), `$mean \\pm std$` for seed groups."""
    head = ["Node", "Method", "Model", "Params", "ms/input", "Top-1 (best val)", "Top-1 (last)"]
    out = [f"% {caption}" if caption else "% raykd report",
           "% needs \\usepackage{booktabs}",
           "\\begin{tabular}{lllrrrr}", "\\toprule", " & ".join(head) + " \\\\", "\\midrule"]
    for r in rows:
        cells = _cells(r, pm="\\pm", math=True)
        cells = [_latex_escape(c) for c in cells[:5]] + cells[5:]  # the accuracies are math already
        if r.replicate:
            cells[0] = "\\quad " + cells[0]
        out.append(" & ".join(cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(out) + "\n"


def to_csv(runs: list[NodeRun]) -> str:
    """One row per run, raw numbers as MLflow holds them (full precision), empty where absent."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in runs:
        w.writerow([r.group, r.name, "" if r.seed is None else r.seed, r.method, r.model, r.run_id, r.status]
                   + [repr(r.metrics[k]) if k in r.metrics else "" for k in CSV_METRICS.values()])
    return buf.getvalue()


_LATEX = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_", "{": "\\{",
          "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX.get(c, c) for c in text)
