"""Make a report: read the runs, write the tables and figures into one folder, log it to the parent run.

The folder is rewritten as a whole on each report of the same run (no stale figure from an earlier
`--tsne`), and everything written goes to the parent run's artifacts under `report/`, so the report
lives beside the runs it summarises.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from raykd.errors import RaykdError
from raykd.report import curves as curves_mod
from raykd.report import tables
from raykd.report.collect import NodeRun, collect_runs
from raykd.report.groups import Group, group_runs
from raykd.report.source import locate

FILES = ("table.md", "table.csv", "table.tex", "curves.png", "tsne.png")
FORMATS = ("text", "markdown", "csv", "latex")
ARTIFACT_DIR = "report"


@dataclass
class ReportOptions:
    experiment: str | None = None
    run_id: str | None = None
    config: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    out: str | None = None
    per_seed: bool = False
    curves: list[str] | None = None  # node or seed-group names; None: every group
    tsne: str | None = None
    format: str = "text"
    tsne_cap: int = 2000


@dataclass
class Report:
    out_dir: Path
    files: list[Path]
    tracking_uri: str
    experiment: str
    parent_run_id: str
    runs: list[NodeRun]
    groups: list[Group]
    output: str  # the table in the format asked for, as printed
    notes: list[str] = field(default_factory=list)
    logged: bool = False


def make_report(opts: ReportOptions) -> Report:
    if opts.format not in FORMATS:
        raise RaykdError(f"--format: '{opts.format}' is not one of {', '.join(FORMATS)}.")
    src = locate(experiment=opts.experiment, run_id=opts.run_id, config=opts.config, storage=opts.storage,
                 tracking_uri=opts.tracking_uri)
    parent, client = src.parent, src.client
    runs, notes = collect_runs(client, parent)
    if not runs:
        raise RaykdError(f"pipeline run {src.parent_id} of experiment '{src.experiment.name}' has no node runs in "
                         f"MLflow at {src.uri}: nothing to report.")
    if parent.info.status == "RUNNING":
        notes.append(f"pipeline run {src.parent_id} is still RUNNING: nodes that have not finished show '-'")
    groups = group_runs(runs)
    rows = tables.table_rows(groups, opts.per_seed)
    chosen = curves_mod.select(groups, opts.curves)  # names are checked before anything is written
    tsne_run, why = _tsne_run(groups, opts.tsne) if opts.tsne else (None, None)
    if why:
        notes.append(why)
    tsne = None
    if tsne_run is not None:  # first: the step most likely to fail (an ensemble, data not here) leaves no half report
        from raykd.report.tsne import tsne_figure

        with tempfile.TemporaryDirectory(prefix="raykd-report-") as staging:
            tsne = tsne_figure(src.uri, tsne_run, Path(staging) / "tsne.png", src.storage / "data_cache",
                               opts.tsne_cap).read_bytes()
    out = Path(opts.out).expanduser() if opts.out else \
        src.storage / "reports" / f"{_safe(src.experiment.name)}-{src.parent_id[:8]}"
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:  # this report's files only; nothing else in the folder is touched
        (out / name).unlink(missing_ok=True)

    caption = f"raykd report: experiment '{src.experiment.name}', pipeline run {src.parent_id} ({src.uri})"
    texts = {"table.md": f"{caption}. Test top-1 in %; seed groups: mean ± sample std (ddof 1).\n\n"
                         + tables.to_markdown(rows),
             "table.csv": tables.to_csv(runs), "table.tex": tables.to_latex(rows, caption)}
    files = []
    for name, text in texts.items():
        (out / name).write_text(text)
        files.append(out / name)

    drawn = curves_mod.series(client, chosen)
    if opts.curves:
        left_out = [name for name, _ in chosen if name not in {c.name for c in drawn}]
        if left_out:
            notes.append(f"no validation curve in MLflow for {', '.join(left_out)} (integration nodes have none)")
    if drawn:
        files.append(curves_mod.plot(drawn, out / "curves.png",
                                     f"{src.experiment.name}: validation top-1 per epoch"))
    else:
        notes.append("no validation curves in MLflow for the chosen nodes: curves.png not drawn")
    if tsne is not None:
        (out / "tsne.png").write_bytes(tsne)
        files.append(out / "tsne.png")

    logged = False
    try:
        for f in files:
            client.log_artifact(src.parent_id, str(f), ARTIFACT_DIR)
        logged = True
    except Exception as e:  # noqa: BLE001 - the files are written; say why MLflow does not have them
        notes.append(f"could not log the report to MLflow run {src.parent_id}: {type(e).__name__}: {str(e)[:200]}")

    shown = {"text": _text(src, rows, notes), "markdown": texts["table.md"], "csv": texts["table.csv"],
             "latex": texts["table.tex"]}[opts.format]
    return Report(out, files, src.uri, src.experiment.name, src.parent_id, runs, groups, shown, notes, logged)


def print_report(report: Report, fmt: str = "text") -> None:
    """The table on stdout; where it went on stdout for text, else on stderr (so `--format csv > t.csv`
    holds just the CSV)."""
    print(report.output, end="" if report.output.endswith("\n") else "\n")
    where = sys.stdout if fmt == "text" else sys.stderr
    if fmt != "text":
        for note in report.notes:
            print(f"raykd: note: {note}", file=where)
    dest = f"; logged to MLflow run {report.parent_run_id} under {ARTIFACT_DIR}/" if report.logged else ""
    print(f"\nraykd: report written to {report.out_dir}{dest}", file=where)


def _text(src, rows, notes: list[str]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(src.parent.info.start_time / 1000))
    kind = "sweep run" if src.parent.data.tags.get("raykd.sweep_role") == "parent" else "pipeline run"
    head = (f"experiment '{src.experiment.name}', {kind} {src.parent_id} ({src.parent.info.status.lower()}, "
            f"started {started}); MLflow {src.uri}\n"
            f"test top-1 in %; seed groups: mean ± sample std over seeds\n")
    return head + "\n" + tables.to_text(rows) + "".join(f"\nnote: {n}" for n in notes) + "\n"


def _tsne_run(groups: list[Group], name: str) -> tuple[NodeRun, str | None]:
    """The node run `--tsne NAME` means: that node, or a seed group's first finished seed (said so)."""
    for g in groups:
        for r in g.runs:
            if r.name == name:
                return r, None
    for g in groups:
        if g.name == name:
            run = next((r for r in g.runs if r.status == "FINISHED"), g.runs[0])
            return run, (None if run.name == name else f"t-SNE of seed group '{name}': its run '{run.name}'")
    known = ", ".join(dict.fromkeys([g.name for g in groups] + [r.name for g in groups for r in g.runs]))
    raise RaykdError(f"--tsne: no node or seed group named '{name}' in this pipeline run; it has: {known}.")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "experiment"
