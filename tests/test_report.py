"""`raykd report`: tables and figures of a pipeline run, read back from a real MLflow store of a real tiny pipeline
(a teacher and a KD student with `seeds: [0, 1, 2]`, trained once for the module, then re-run so every node is
cached and none is a child of the latest parent run)."""

import copy
import csv
import io
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import TINY, free_port
from raykd.cli import main
from raykd.config import build_experiment
from raykd.pipeline import run_pipeline

SEEDS = [0, 1, 2]


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    raw = copy.deepcopy(TINY)
    raw["storage"] = str(tmp_path_factory.mktemp("report") / "runs")
    raw["data"]["train_limit"] = 128
    raw["nodes"] = {"teacher": {"model": "resnet8", "train": {"epochs": 1}},
                    "kd": {"model": "resnet8", "teacher": "teacher", "method": {"name": "kd"}, "seeds": SEEDS},
                    "ens": {"members": ["kd"], "method": {"name": "ensemble"}}}  # over the seeds; no curve
    raw["final"] = "kd"
    first = run_pipeline(build_experiment(raw), executor="local", log=quiet)
    assert first.ok
    again = run_pipeline(build_experiment(raw), executor="local", log=quiet)  # all cached: no children
    assert {o.status for o in again.nodes.values()} == {"cached"}
    client = MlflowClient(again.tracking_uri)
    runs = {n: client.get_run(o.run_id) for n, o in again.nodes.items()}
    return {"raw": raw, "storage": raw["storage"], "first": first.parent_run_id, "latest": again.parent_run_id,
            "client": client, "runs": runs}


def report(capsys, *args):
    rc = main(["report", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def line_of(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.split()[:1] == [label] or line.startswith(f"| {label} |"))


def stat(values):
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)} seeds)"


def test_table_numbers_are_mlflow_s_with_seeds_as_mean_and_sample_std(store, capsys):
    rc, out, _ = report(capsys, "--storage", store["storage"], "--per-seed")
    assert rc == 0, out
    assert store["latest"] in out, "default: the latest pipeline run, whose nodes are all cached (not its children)"
    assert store["client"].search_runs([store["runs"]["teacher"].info.experiment_id],
                                       f"tags.mlflow.parentRunId = '{store['latest']}'") == []
    m = {n: r.data.metrics for n, r in store["runs"].items()}
    kd = [f"kd.seed{s}" for s in SEEDS]
    assert {store["runs"][n].data.tags["raykd.seed_group"] for n in kd} == {"kd"}
    best, last = [m[n]["best/test_top1"] for n in kd], [m[n]["test/top1"] for n in kd]
    folder = Path(store["storage"]) / "reports" / f"tiny-{store['latest'][:8]}"  # the default --out
    markdown = (folder / "table.md").read_text()
    for text in (out, markdown):
        group = line_of(text, "kd")
        assert stat(best) in group and stat(last) in group
        assert f"{statistics.mean(m[n]['latency_ms'] for n in kd):.2f}" in group and "0.078M" in group
        teacher = line_of(text, "teacher")
        assert f"{m['teacher']['best/test_top1']:.2f}" in teacher and "±" not in teacher
        assert f"{m['ens']['test/top1']:.2f}" in line_of(text, "ens")
    for n in kd:  # --per-seed: each seed's own row, below the group's
        row = line_of(out, n)
        assert f"{m[n]['best/test_top1']:.2f}" in row and f"{m[n]['test/top1']:.2f}" in row
        assert out.index(line_of(out, "kd")) < out.index(row)
        assert f"&emsp;{n} |" in markdown

    rows = list(csv.DictReader(io.StringIO((folder / "table.csv").read_text())))
    assert [r["node"] for r in rows] == ["teacher", *kd, "ens"]
    for r in rows:
        metrics = m[r["node"]]
        assert r["run_id"] == store["runs"][r["node"]].info.run_id
        assert float(r["test_top1"]) == metrics["test/top1"] and float(r["best_test_top1"]) == metrics["best/test_top1"]
        assert float(r["params"]) == metrics["params"] and float(r["latency_ms"]) == metrics["latency_ms"]
    assert [(r["group"], r["seed"]) for r in rows[1:4]] == [("kd", str(s)) for s in SEEDS]

    tex = (folder / "table.tex").read_text()
    mean_, std_ = statistics.mean(best), statistics.stdev(best)
    assert f"${mean_:.2f} \\pm {std_:.2f}$ (3 seeds)" in tex
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\quad kd.seed1 & kd & resnet8" in tex
    assert tex.count("\\\\") == 1 + 3 + len(SEEDS)  # header, teacher, kd, each seed, ens


def test_figures_are_pngs_and_everything_is_logged_to_the_parent(store, capsys, tmp_path):
    out_dir = tmp_path / "rep"
    rc, out, _ = report(capsys, "--storage", store["storage"], "--run", store["first"], "--out", str(out_dir),
                        "--tsne", "kd", "--curves", "kd,teacher")
    assert rc == 0, out
    assert f"report written to {out_dir}" in out and "its run 'kd.seed0'" in out
    for name in ("curves.png", "tsne.png"):
        data = (out_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        img = matplotlib.image.imread(out_dir / name)
        assert img.shape[0] >= 400 and img.shape[1] >= 600, img.shape
        assert img[..., :3].std() > 0.05, f"{name} is blank"
    logged = {a.path for a in store["client"].list_artifacts(store["first"], "report")}
    assert logged == {f"report/{n}" for n in ("table.md", "table.csv", "table.tex", "curves.png", "tsne.png")}
    # --format csv prints just the CSV (the rest goes to stderr); --config finds the same store and experiment
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(store["raw"]))
    rc, out, err = report(capsys, "--config", str(cfg), "--format", "csv", "--out", str(tmp_path / "c"))
    assert rc == 0 and out == (tmp_path / "c" / "table.csv").read_text() and "report written" in err
    assert list(csv.reader(io.StringIO(out)))[0][:3] == ["group", "node", "seed"]


def test_a_sweep_parent_reports_its_trials_grouped_by_config(tmp_path, capsys):
    """Sweep runs (raykd.sweep_role parent/trial, grouped by raykd.sweep_config) and a failed trial without
    metrics must not break collection."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("sweep", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, run_name="sweep", tags={"raykd.sweep_role": "parent"}).info.run_id
    values = {"a-s0": ("a", 0, 90.0), "a-s1": ("a", 1, 92.0), "b-s0": ("b", 0, None)}
    for name, (config, seed, top1) in values.items():
        run = client.create_run(exp, run_name=name, tags={
            "mlflow.parentRunId": parent, "raykd.sweep_role": "trial", "raykd.sweep_config": config,
            "raykd.method": "kd", "raykd.model": "resnet8", "raykd.seed": str(seed)}).info.run_id
        client.log_param(run, "sweep.method.temperature", "2" if config == "a" else "8")
        if top1 is not None:
            for step, v in ((1, top1 - 5), (2, top1)):
                client.log_metric(run, "val/top1", v, step=step)
            client.log_metric(run, "test/top1", top1, step=2)
        client.set_terminated(run, "FINISHED" if top1 is not None else "FAILED")
    rc, out, err = report(capsys, "--tracking-uri", uri, "--storage", str(tmp_path))
    assert rc == 0, err
    assert stat([90.0, 92.0]) in line_of(out, "a")
    assert line_of(out, "b").split()[-1] == "-"
    assert (tmp_path / "reports" / f"sweep-{parent[:8]}" / "curves.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--experiment", "tinny"], r"MLflow experiment 'tinny' does not exist at sqlite:.*Did you mean 'tiny'\?"),
    (["--run", "{kd}"], r"run '\w+' is node 'kd.seed1', not a pipeline parent run; its pipeline's parent run is \w+"),
    (["--run", "0123456789abcdef"], r"no MLflow run '0123456789abcdef' at sqlite:"),
    (["--tsne", "student"], r"--tsne: no node or seed group named 'student' in this pipeline run; it has: teacher, kd"),
    (["--tsne", "ens"], r"--tsne: 'ens' \(ensemble\) has no single penultimate layer .* choose one of its members"),
])
def test_mistakes_are_one_sentence(store, capsys, tmp_path, args, message):
    args = [a.replace("{kd}", store["runs"]["kd.seed1"].info.run_id) for a in args]
    rc, out, err = report(capsys, "--storage", store["storage"], "--out", str(tmp_path / "r"), *args)
    assert rc == 2 and out == "" and not (tmp_path / "r").exists(), "nothing is written"
    assert err.startswith("raykd: error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err


def test_missing_store_and_unreachable_server_are_errors_in_seconds(tmp_path, capsys):
    rc, _, err = report(capsys, "--storage", str(tmp_path / "nowhere"))
    assert rc == 2 and f"no MLflow store at '{tmp_path / 'nowhere' / 'mlflow.db'}'" in err
    assert not (tmp_path / "nowhere").exists(), "no empty store is created"
    t0 = time.time()
    rc, _, err = report(capsys, "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert rc == 2 and "does not answer" in err and "--tracking-uri" in err
    assert time.time() - t0 < 15


@pytest.mark.slow
def test_a_remote_tracking_server_with_proxied_artifacts(store, tmp_path, capsys):
    """Everything through HTTP: runs, metric history, the checkpoint --tsne downloads, the report it logs."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=1)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the MLflow server did not start"
                time.sleep(0.3)
        # A pipeline's runs as a remote team server holds them (copied from the local store's kd.seed0)
        local, source = store["client"], store["runs"]["kd.seed0"]
        client = MlflowClient(uri)
        exp = client.create_experiment("remote")
        parent = client.create_run(exp, run_name="remote", tags={"raykd.pipeline": "remote"}).info.run_id
        child = client.create_run(exp, run_name="kd", tags={"mlflow.parentRunId": parent, **{
            k: v for k, v in source.data.tags.items() if k.startswith("raykd.") and k != "raykd.seed_group"},
            "raykd.node": "kd"}).info.run_id
        client.set_tag(parent, "raykd.node.kd.run_id", child)
        for key in ("test/top1", "best/test_top1", "params", "latency_ms"):
            client.log_metric(child, key, source.data.metrics[key])
        for m in local.get_metric_history(source.info.run_id, "val/top1"):
            client.log_metric(child, "val/top1", m.value, step=m.step)
        client.log_artifact(child, os.path.join(source.data.tags["raykd.node_dir"], "final.pt"), "checkpoint")
        client.set_terminated(child)
        client.set_terminated(parent)
        rc, out, err = report(capsys, "--tracking-uri", uri, "--experiment", "remote", "--storage", str(tmp_path),
                              "--tsne", "kd")
        assert rc == 0, err
        assert f"{source.data.metrics['test/top1']:.2f}" in line_of(out, "kd")
        assert {a.path for a in client.list_artifacts(parent, "report")} >= {"report/tsne.png", "report/curves.png"}
        assert client.get_run(parent).info.artifact_uri.startswith("mlflow-artifacts:")
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
