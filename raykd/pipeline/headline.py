"""A pipeline's headline numbers on its parent MLflow run, so MLflow's pages compare the nodes at a glance.

MLflow lists a pipeline as one row (its parent run, the nodes' runs folded under it), and a run's row, page
and charts show only that run's own metrics. So the parent run carries, per node, the numbers the summary
table prints, as the table rounds them: `test_top1/<node>`, `best_test_top1/<node>`, `latency_ms/<node>` and
`params_M/<node>`. The table itself is an artifact of the parent (`summary.txt`, `summary.md`), and the
parent's description (the run page's "Description") is a Markdown table that links each node to its own run.

The experiment page gets the same: its description (the banner above the runs) is the latest pipeline's
one-line comparison and table, and two saved views (experiment tags the page's "Views" menu lists, and
`raykd ui` links to) choose columns a fresh browser would not show: "raykd: pipelines" (one row per
invocation, each node's test top-1 a column, the nodes' runs unfolding under it) and "raykd: node runs"
(every node's run a row, ranked by test top-1, with its method, model and teacher).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

# (metric family, row field, decimals as the summary table prints them); the UI groups metrics by the part
# before the last '/', so each family is one section of charts and the nodes its charts
FAMILIES = (("test_top1", "test_top1", 2), ("best_test_top1", "best_test_top1", 2), ("latency_ms", "latency_ms", 2),
            ("params_M", "params_m", 3))
NOTE = "mlflow.note.content"  # a run's or an experiment's description, rendered as Markdown by the UI
VIEW_TAG = "mlflow.sharedViewState."  # + view id: a saved view of the runs page (MLflow 3's UI)
PIPELINES_VIEW, NODES_VIEW = "raykd-pipelines", "raykd-nodes"
UI_QUERY = "workflowType=machine_learning"  # MLflow 3's UI opens in its GenAI mode unless told otherwise
MAX_NOTE = 7500  # MLflow keeps at most 8000 characters in a run tag (20000 in an experiment tag)
MAX_VIEW_COLUMNS = 60


def headline_rows(nodes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per node with a result (trained, or cached from an earlier run), what the parent shows: its headline
    numbers, run id and lineage. `nodes` maps names to `NodeOutcome`s (a `PipelineResult.nodes`)."""
    rows: dict[str, dict[str, Any]] = {}
    for name, o in nodes.items():
        r = o.result or {}
        if not r:
            continue
        num = lambda k: float(r[k]) if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) else None
        node, params = o.plan.node, num("params")
        rows[name] = {
            "test_top1": num("test/top1"), "best_test_top1": num("best/test_top1"), "params": params,
            "params_m": params / 1e6 if params is not None else None, "latency_ms": num("latency_ms"),
            "run_id": o.run_id or r.get("run_id"), "model": node.model, "status": o.status,
            "method": node.method.name + (f" ({node.method.substage})" if hasattr(node.method, "substage") else ""),
            "from": node.teacher or ("+".join(node.members) if node.members
                                     else f"init:{node.init}" if node.init else "-"),
        }
    return _with_seed_means(rows, {name: o.plan.node.seed_group for name, o in nodes.items()})


def _with_seed_means(rows: dict[str, dict[str, Any]], groups: dict[str, str | None]) -> dict[str, dict[str, Any]]:
    """A seeded node's mean over its seeds, as a row of its own named as written (`kd`), just before its
    replicates: the parent's row then compares the node as the summary table does."""
    import statistics

    out: dict[str, dict[str, Any]] = {}
    for name, row in rows.items():
        group = groups.get(name)
        if group and group not in out:
            members = [r for n, r in rows.items() if groups.get(n) == group]
            mean = lambda k: statistics.mean(r[k] for r in members) if all(r.get(k) is not None for r in members) \
                else None
            out[group] = {**{k: mean(k) for k in ("test_top1", "best_test_top1", "params", "params_m", "latency_ms")},
                          "run_id": None, "model": row["model"], "method": row["method"], "from": row["from"],
                          "status": f"mean of {len(members)} seeds"}
        out[name] = row
    return out


def metric_key(family: str, node: str) -> str:
    """A valid MLflow metric key for one node's number, `family/node`: the node name becomes one path
    component of characters MLflow accepts (it refuses others, and names that normalise to another path)."""
    part = re.sub(r"[^A-Za-z0-9_.\- ]", "_", node).strip() or "_"
    return f"{family}/{'_' + part if part.strip('.') == '' else part}"


def one_line(rows: dict[str, dict[str, Any]], title: str, limit: int = 600) -> str:
    """`title: test top-1 kd 98.33 · vanilla 92.76 · ...`: the comparison a collapsed description shows."""
    tops = [f"{_md(n)} {r['test_top1']:.2f}" for n, r in rows.items() if r.get("test_top1") is not None]
    line = _md(title) + (": test top-1 " + " · ".join(tops) if tops else "")
    return line if len(line) <= limit else line[: line.rfind(" · ", 0, limit)] + " · ..."


def markdown_table(rows: dict[str, dict[str, Any]], experiment_id: str, limit: int = MAX_NOTE) -> str:
    """The nodes as a Markdown table, each linked to its own run on the MLflow UI (a relative hash route, so
    the link works on whatever host and port serves the UI); rows past `limit` characters are summarised."""
    fmt = lambda v, spec, unit="": "-" if v is None else format(v, spec) + unit
    out = ["| node | method | model | from | test top-1 | best-val top-1 | params | ms/input | status |",
           "|---|---|---|---|--:|--:|--:|--:|---|"]
    size = sum(len(line) + 1 for line in out)
    for i, (name, r) in enumerate(rows.items()):
        label = _md(name)
        link = f"[{label}]({run_link(experiment_id, r['run_id'])})" if r.get("run_id") else label
        line = (f"| {link} | {_md(r.get('method', '-'))} | {_md(r.get('model', '-'))} | {_md(r.get('from', '-'))} | "
                f"{fmt(r.get('test_top1'), '.2f')} | {fmt(r.get('best_test_top1'), '.2f')} | "
                f"{fmt(r.get('params_m'), '.3f', 'M')} | {fmt(r.get('latency_ms'), '.2f')} | "
                f"{_md(r.get('status', '-'))} |")
        if size + len(line) + 80 > limit:
            out.append(f"\n... and {len(rows) - i} more nodes: see the artifact summary.md")
            break
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)


def run_link(experiment_id: str, run_id: str) -> str:
    return f"#/experiments/{experiment_id}/runs/{run_id}?{UI_QUERY}"


def log_headlines(client, parent_run_id: str, experiment_id: str, rows: dict[str, dict[str, Any]],
                  table_text: str, title: str, experiment_page: bool = True) -> None:
    """Log the nodes' headline numbers, the summary table and a linked Markdown table on the parent run
    (and, with `experiment_page`, the experiment's description and saved views).

    `client` is an `MlflowClient`; `rows` maps node names to `headline_rows`' dicts; `table_text` is
    `raykd.pipeline.summary.format_table`'s output. Raises what MLflow raises: the pipeline calls it
    through `_Events.safe`, so an MLflow outage never fails a run."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    metrics = [Metric(metric_key(family, name), round(r[field], digits), now, 0)
               for family, field, digits in FAMILIES for name, r in rows.items() if r.get(field) is not None]
    for i in range(0, len(metrics), 900):
        client.log_batch(parent_run_id, metrics=metrics[i : i + 900])
    head = one_line(rows, title)
    table = markdown_table(rows, experiment_id)
    client.log_text(parent_run_id, table_text + "\n", "summary.txt")
    full = markdown_table(rows, experiment_id, limit=10**9)
    client.log_text(parent_run_id, f"{head}\n\n{full}\n\n```\n{table_text}\n```\n", "summary.md")
    client.log_batch(parent_run_id, tags=[RunTag(NOTE, f"{head}\n\n{table}"[:8000])])
    if experiment_page:
        latest = f"Latest run: [{parent_run_id}]({run_link(experiment_id, parent_run_id)}) (its artifacts: summary.md)."
        client.set_experiment_tag(experiment_id, NOTE, f"{head}\n\n{table}\n\n{latest}")
        for view_id, name, state in saved_views(rows):
            client.set_experiment_tag(experiment_id, VIEW_TAG + view_id, json.dumps(
                {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}))


def saved_views(rows: dict[str, dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """The runs page's saved views (MLflow 3's UI: its "Views" menu, or `?viewStateShareKey=<id>`): which
    columns show, in which order and width, sorted how. A view chooses what a fresh browser would not: a new
    visitor sees no metric columns at all and the nodes' runs folded under their pipeline's run."""
    col = lambda kind, key: f"{kind}.`{key}`"
    fixed = [col("attributes", "Run Name"), "runDateAndNestInfo", "duration"]  # the table's own first columns
    width = lambda key: max(90, min(240, 7 * len(key) + 20))
    per_node = [col("metrics", metric_key("test_top1", n)) for n in list(rows)[:MAX_VIEW_COLUMNS]]
    pipelines = {"selectedColumns": per_node, "columnOrder": fixed + per_node,
                 "columnWidths": {col("attributes", "Run Name"): 240,
                                  **{c: width(c.split("`")[1]) for c in per_node}},
                 "orderByKey": "attributes.start_time", "orderByAsc": False}
    node_cols = [col("metrics", k) for k in ("test/top1", "best/test_top1", "latency_ms", "params")] + \
                [col("tags", k) for k in ("raykd.method", "raykd.model", "raykd.teacher_node", "raykd.pipeline")]
    nodes = {"selectedColumns": node_cols, "columnOrder": fixed + node_cols,
             "columnWidths": {c: max(140, width(c.split("`")[1])) if c.startswith("metrics") else width(c.split("`")[1])
                              for c in node_cols},
             # a filter (or any order but by start time) lists child runs as rows of their own
             "searchFilter": "tags.`raykd.node` LIKE '%'", "orderByKey": col("metrics", "test/top1"),
             "orderByAsc": False, "runsHiddenMode": "SHOW_ALL"}
    return [(PIPELINES_VIEW, "raykd: pipelines", pipelines),
            (NODES_VIEW, "raykd: node runs", nodes)]


def log_pipeline_headlines(client, result, experiment_id: str) -> None:
    """`log_headlines` for a finished `PipelineResult` (trained and cached nodes alike)."""
    from raykd.pipeline.summary import format_table

    rows = headline_rows(result.nodes)
    title = f"raykd pipeline '{result.experiment}' ({len(rows)} of {len(result.nodes)} nodes)"
    log_headlines(client, result.parent_run_id, experiment_id, rows, format_table(result), title)


def _md(text: Any) -> str:
    """A table cell's text: pipes, brackets and emphasis marks escaped."""
    return re.sub(r"([|\[\]\\*_`])", r"\\\1", str(text))
