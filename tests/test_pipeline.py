"""The pipeline on the in-process executor: hashes, cache, MLflow lineage, registry, failures."""

import copy

import pytest
import torch
from mlflow.tracking import MlflowClient

from raykd.config import build_experiment
from raykd.engine import load_student
from raykd.pipeline import make_plan, run_pipeline
from raykd.pipeline.summary import format_table


def quiet(*_):
    pass


def children(client, result):
    exp_id = client.get_run(result.parent_run_id).info.experiment_id
    runs = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    return {r.data.tags["raykd.node"]: r for r in runs}


def test_hash_is_stable_and_follows_the_lineage(tiny_raw):
    a = make_plan(build_experiment(tiny_raw))
    b = make_plan(build_experiment(tiny_raw, ["resources.cpus_per_worker=2", "data.eval_batch_size=64", "name=other"]))
    assert {n: p.hash for n, p in a.items()} == {n: p.hash for n, p in b.items()}, "resources/names do not change results"
    c = make_plan(build_experiment(tiny_raw, ["nodes.teacher.train.epochs=3"]))
    assert c["teacher"].hash != a["teacher"].hash
    assert c["kd"].hash != a["kd"].hash, "a changed teacher changes its student"
    assert c["vanilla"].hash == a["vanilla"].hash
    assert list(a) == ["teacher", "vanilla", "kd"] and a["kd"].parents == ("teacher",)
    assert a["kd"].dir.name == f"kd-{a['kd'].hash[:12]}"


def test_pipeline_tracks_lineage_registers_and_caches(tiny_raw):
    exp = build_experiment(tiny_raw)
    result = run_pipeline(exp, executor="local", log=quiet)
    assert result.ok and [o.status for o in result.nodes.values()] == ["trained"] * 3
    client = MlflowClient(result.tracking_uri)
    assert result.tracking_uri == f"sqlite:///{exp.storage / 'mlflow.db'}"
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["raykd.pipeline"] == "tiny"
    kids = children(client, result)
    assert set(kids) == {"teacher", "vanilla", "kd"}
    assert all(r.info.status == "FINISHED" for r in kids.values())
    kd = kids["kd"]
    assert kd.data.tags["raykd.teacher_node"] == "teacher"
    assert kd.data.tags["raykd.teacher_run_id"] == kids["teacher"].info.run_id
    assert "raykd.teacher_node" not in kids["vanilla"].data.tags
    assert kd.data.params["method.temperature"] == "4.0" and kd.data.params["train.epochs"] == "2"
    val_curve = client.get_metric_history(kd.info.run_id, "val/top1")
    assert [m.step for m in val_curve] == [1, 2]
    assert {m.key for m in client.get_metric_history(kd.info.run_id, "train/kd")} == {"train/kd"}
    assert kd.data.metrics["test/top1"] == pytest.approx(result.nodes["kd"].result["test/top1"])
    artifacts = {a.path for a in client.list_artifacts(kd.info.run_id)}
    assert {"accuracy.png", "config.yaml", "checkpoint"} <= artifacts
    assert [a.path for a in client.list_artifacts(kd.info.run_id, "checkpoint")] == ["checkpoint/final.pt"]

    # The registered final student loads back and gives the same outputs as the node's file.
    import mlflow.pytorch

    from raykd.tracking import fluent_uri

    assert result.registered == ("tiny-kd", 1)
    with fluent_uri(result.tracking_uri):
        loaded = mlflow.pytorch.load_model("models:/tiny-kd@final").eval()
    ours, _ = load_student(result.nodes["kd"].plan.dir / "final.pt")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, ours(x).logits)

    table = format_table(result)
    assert "kd" in table and kd.info.run_id in table and "0.078M" in table

    # Re-running recomputes nothing and registers nothing new.
    finals = {n: (o.plan.dir / "final.pt").stat().st_mtime_ns for n, o in result.nodes.items()}
    again = run_pipeline(build_experiment(tiny_raw), executor="local", log=quiet)
    assert [o.status for o in again.nodes.values()] == ["cached"] * 3
    assert {n: (o.plan.dir / "final.pt").stat().st_mtime_ns for n, o in again.nodes.items()} == finals
    assert again.nodes["kd"].run_id == kd.info.run_id
    assert again.registered == ("tiny-kd", 1)
    assert client.get_run(again.parent_run_id).data.tags["raykd.node.kd.run_id"] == kd.info.run_id

    # Changing only the student's method retrains only the student.
    third = run_pipeline(build_experiment(tiny_raw, ["nodes.kd.method.temperature=2"]), executor="local", log=quiet)
    assert {n: o.status for n, o in third.nodes.items()} == {"teacher": "cached", "vanilla": "cached", "kd": "trained"}
    assert third.registered == ("tiny-kd", 2)


def test_failed_node_is_reported_and_its_descendants_skipped(tiny_raw):
    raw = copy.deepcopy(tiny_raw)
    raw["nodes"]["teacher"]["train"] = {"optimizer": {"lr": 1.0e12}}  # diverges to NaN
    logs = []
    result = run_pipeline(build_experiment(raw), executor="local", log=logs.append)
    status = {n: o.status for n, o in result.nodes.items()}
    assert status == {"teacher": "failed", "vanilla": "trained", "kd": "skipped"}
    assert not result.ok and result.registered is None
    assert "non-finite" in result.nodes["teacher"].error and "term(s)" in result.nodes["teacher"].error
    client = MlflowClient(result.tracking_uri)
    kids = children(client, result)
    assert kids["teacher"].info.status == "FAILED" and "non-finite" in kids["teacher"].data.tags["raykd.error"]
    assert client.get_run(result.parent_run_id).info.status == "FAILED"
    # Fixing the teacher re-runs the teacher and its student, not the finished vanilla node.
    fixed = run_pipeline(build_experiment(tiny_raw), executor="local", log=quiet)
    assert {n: o.status for n, o in fixed.nodes.items()} == {"teacher": "trained", "vanilla": "cached", "kd": "trained"}


def test_tracking_uri_env_wins(tiny_raw, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raw = copy.deepcopy(tiny_raw)
    raw["nodes"] = {"teacher": raw["nodes"]["teacher"]}
    raw["train"]["epochs"] = 1
    raw["final"] = "teacher"
    result = run_pipeline(build_experiment(raw), executor="local", log=quiet)
    assert result.tracking_uri == uri and (tmp_path / "team.db").is_file()
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_pipelines_in_one_process_keep_their_own_store(tiny_raw, tmp_path):
    """MLflow 3's set_tracking_uri exports $MLFLOW_TRACKING_URI; raykd must not leak it."""
    import os

    raw = copy.deepcopy(tiny_raw)
    raw["nodes"] = {"teacher": raw["nodes"]["teacher"]}
    raw["train"]["epochs"] = 1
    raw["final"] = "teacher"
    results = []
    for name in ("one", "two"):
        r = copy.deepcopy(raw)
        r["storage"] = str(tmp_path / name)
        results.append(run_pipeline(build_experiment(r), executor="local", log=quiet))
        assert "MLFLOW_TRACKING_URI" not in os.environ
    assert results[0].tracking_uri != results[1].tracking_uri
    assert (tmp_path / "two" / "mlflow.db").is_file()
    for res in results:
        assert res.registered == ("tiny-teacher", 1), "each store has its own registry"
        assert MlflowClient(res.tracking_uri).get_run(res.parent_run_id).info.status == "FINISHED"


def test_bad_data_path_fails_before_anything_is_written(tiny_raw, tmp_path):
    from raykd.errors import DataError

    exp = build_experiment(tiny_raw, ["data.name=cifar100", f"data.root={tmp_path / 'missing'}"])
    with pytest.raises(DataError, match=r"nodes.teacher.data.root '.*missing' does not exist"):
        run_pipeline(exp, executor="local", log=quiet)
    (tmp_path / "tree").mkdir()
    exp = build_experiment(tiny_raw, ["data.name=image_folder", f"data.root={tmp_path / 'tree'}"])
    with pytest.raises(DataError, match="has no 'train/' folder"):
        run_pipeline(exp, executor="local", log=quiet)
    assert not exp.storage.exists(), "no store, no node folders"


def test_init_stage_is_a_tracked_parent_node(tmp_path):
    from conftest import REPO
    from raykd.config import load_experiment

    exp = load_experiment(REPO / "conf" / "digits" / "fitnet.yaml",
                          ["train.epochs=1", "data.train_limit=128", "data.batch_size=64", "nodes.hint.train.epochs=1",
                           f"storage={tmp_path}"])
    result = run_pipeline(exp, executor="local", log=quiet)
    assert result.ok
    kids = children(MlflowClient(result.tracking_uri), result)
    student = kids["student"].data.tags
    assert student["raykd.init_node"] == "hint" and student["raykd.init_run_id"] == kids["hint"].info.run_id
    assert student["raykd.teacher_node"] == "teacher" and student["raykd.parents"] == "teacher,hint"
    assert kids["hint"].data.params["method.phase"] == "hint"
    assert "train/hint" in kids["hint"].data.metrics and "train/ce" not in kids["hint"].data.metrics
