"""What a new user sees: a 3-node pipeline's experiment page and parent run page, served by `raykd ui` (the real
MLflow server) and rendered by the real MLflow UI in headless Chromium. The first page must compare the nodes:
each node's test top-1 in the pipeline's row, and on the parent run's page a table linking each node's run."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from raykd.config import build_experiment
from raykd.pipeline import run_pipeline
from raykd.pipeline.summary import format_table

CHROMIUM = shutil.which("chromium")
SHOTS = os.environ.get("RAYKD_UI_SCREENSHOTS")  # a folder: also save what the pages look like (ui_*.png)


def quiet(*_):
    pass


def _chromium(profile: Path, url: str, budget_ms: int, *what: str) -> str:
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--window-size=1600,1000", f"--virtual-time-budget={budget_ms}", *what, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def render(profile: Path, url: str, ready, shot: str | None = None) -> str:
    """The page's DOM once the app has rendered what `ready(dom)` looks for (the UI is a JS app that fetches
    its data after loading: a longer virtual-time budget each try)."""
    dom = ""
    for budget in (8000, 20000, 40000):
        dom = _chromium(profile, url, budget, "--dump-dom")
        if ready(dom):
            break
    if SHOTS and shot:
        _chromium(profile, url, 20000, f"--screenshot={Path(SHOTS) / shot}")
    return dom


def row_cell(dom: str, run_id: str, column: str) -> str | None:
    """What the runs table shows in `run_id`'s row (ag-grid's row-id), column `column` (its col-id)."""
    m = re.search(r'row-id="' + run_id + r'"(?:(?!row-id=).)*?id="cell-' + re.escape(column) + r'-[^"]*"[^>]*>([^<]*)<',
                  dom, re.S)
    return m.group(1) if m else None


def test_first_pages_compare_the_nodes(tiny_raw, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium not installed: the MLflow UI browser test needs Debian's chromium")
    tiny_raw["train"]["epochs"] = 1
    result = run_pipeline(build_experiment(tiny_raw), executor="local", log=quiet)
    assert result.ok
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    exp_id = parent.info.experiment_id
    nodes = {n: o.result["test/top1"] for n, o in result.nodes.items()}
    runs = {n: o.run_id for n, o in result.nodes.items()}
    assert {k: v for k, v in parent.data.metrics.items() if k.startswith("test_top1/")} == \
        {f"test_top1/{n}": round(v, 2) for n, v in nodes.items()}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"summary.txt", "summary.md", "config.yaml"}

    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "raykd.cli", "ui", "--storage", str(tmp_path / "runs"),
                           "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    profile = tmp_path / "chromium"
    try:
        link = _link(ui, "tiny")  # what `raykd ui` prints for the pipeline's experiment
        base = f"http://127.0.0.1:{port}"
        ml = "workflowType=machine_learning"  # MLflow 3's UI opens in its GenAI mode without it
        assert link == f"{base}/#/experiments/{exp_id}/runs?{ml}&viewStateShareKey=raykd-pipelines"

        # The experiment page: the pipeline's row carries each node's test top-1, as the UI formats it.
        shown = lambda d: {n: row_cell(d, result.parent_run_id, f"metrics.`test_top1/{n}`") for n in nodes}
        expected = {n: f"{v:.2f}" for n, v in nodes.items()}
        dom = render(profile, link, lambda d: shown(d) == expected, "ui_experiment.png")
        assert shown(dom) == expected
        assert all(f"test_top1/{n}" in dom for n in nodes)  # the column headers
        # ... and above the runs, the latest pipeline's one-line comparison (the experiment's description)
        assert " · ".join(f"{n} {v:.2f}" for n, v in nodes.items()) in dom

        # The parent run's page: the nodes' numbers, and each node's run one click away.
        dom = render(profile, f"{base}/#/experiments/{exp_id}/runs/{result.parent_run_id}?{ml}",
                     lambda d: all(f"/runs/{r}?" in d for r in runs.values()), "ui_parent.png")
        for n, r in runs.items():
            assert f'href="#/experiments/{exp_id}/runs/{r}?{ml}">{n}</a>' in dom, n
            assert f"test_top1/{n}" in dom
        assert all(f"{v:.2f}" in dom for v in nodes.values())

        # The node runs view: every node's run a row, its own test top-1 a column.
        shown = lambda d: {n: row_cell(d, r, "metrics.`test/top1`") for n, r in runs.items()}
        dom = render(profile, f"{base}/#/experiments/{exp_id}/runs?{ml}&viewStateShareKey=raykd-nodes",
                     lambda d: None not in shown(d).values())
        for n, text in shown(dom).items():
            assert text is not None and abs(float(text) - nodes[n]) < 1e-9, (n, text)
    finally:
        ui.send_signal(signal.SIGINT)
        ui.wait(timeout=30)


def _link(ui: subprocess.Popen, experiment: str, timeout: float = 90.0) -> str:
    """The link `raykd ui` prints for `experiment` (it prints the URL once the server answers, then links)."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in ui.stdout], daemon=True).start()
    deadline, seen = time.time() + timeout, []
    while time.time() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            assert ui.poll() is None, f"raykd ui exited: {seen}"
            continue
        seen.append(line)
        if line.strip().startswith(f"{experiment}: "):
            return line.strip().split(": ", 1)[1]
    raise AssertionError(f"raykd ui printed no link for '{experiment}' in {timeout:.0f}s: {seen}")


def _free_port() -> int:
    from conftest import free_port

    return free_port()


def test_headline_keys_and_tables_are_valid_for_any_node_name():
    """Node names may hold '.', '-' and '_' (`response.1`, `kd.seed0`): each is one valid MLflow metric key, and
    a long pipeline's description stays under MLflow's tag limit."""
    from mlflow.utils.validation import _validate_metric_name

    from raykd.pipeline.headline import markdown_table, metric_key, one_line

    for name in ("response.1", "kd.seed0", "skd_average", "a..b", "_", "x-1.2", "a" * 100):
        key = metric_key("test_top1", name)
        _validate_metric_name(key)
        assert key == f"test_top1/{name}"
    for odd in (".", "..", "a/b", "a b|c"):
        _validate_metric_name(metric_key("test_top1", odd))
    rows = {f"node_{i}.seed{i}": {"test_top1": 90 + i / 10, "best_test_top1": None, "params_m": 0.078,
                                  "latency_ms": 0.6, "run_id": "f" * 32, "method": "kd", "model": "resnet8",
                                  "from": "teacher", "status": "cached"} for i in range(200)}
    table = markdown_table(rows, "7")
    assert len(table) < 7600 and "more nodes: see the artifact summary.md" in table
    assert "[node\\_0.seed0](#/experiments/7/runs/" + "f" * 32 + "?workflowType=machine_learning)" in table
    assert len(one_line(rows, "raykd pipeline 'p'")) <= 610


def test_headlines_never_fail_the_pipeline_and_cached_nodes_count(tiny_raw, monkeypatch):
    import raykd.pipeline.headline as headline

    tiny_raw["train"]["epochs"] = 1

    def broken(*_args, **_kwargs):
        raise ConnectionError("MLflow went away")

    logs = []
    with monkeypatch.context() as m:
        m.setattr(headline, "log_headlines", broken)
        first = run_pipeline(build_experiment(tiny_raw), executor="local", log=logs.append)
    assert first.ok and any("ConnectionError" in line for line in logs)
    client = MlflowClient(first.tracking_uri)
    assert client.get_run(first.parent_run_id).info.status == "FINISHED"

    again = run_pipeline(build_experiment(tiny_raw), executor="local", log=quiet)  # every node cached
    assert {o.status for o in again.nodes.values()} == {"cached"}
    parent = client.get_run(again.parent_run_id)
    assert {k for k in parent.data.metrics if k.startswith("test_top1/")} == {f"test_top1/{n}" for n in again.nodes}
    note = parent.data.tags["mlflow.note.content"]
    assert all(f"runs/{o.run_id}?" in note for o in again.nodes.values())
    summary = Path(client.download_artifacts(again.parent_run_id, "summary.txt")).read_text()
    assert summary == format_table(again) + "\n"  # the table `raykd run` prints
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags["mlflow.note.content"].startswith(note.split("\n")[0])
    assert {"mlflow.sharedViewState.raykd-pipelines", "mlflow.sharedViewState.raykd-nodes"} <= set(exp.tags)
