"""Sweeps (`raykd tune`) on a real local Ray with a real MLflow store: the space is checked before anything runs,
parents train once, trials are MLflow children with the best tagged, ASHA stops a hopeless trial, seeds are
replicates, and a sweep whose driver is SIGKILLed finishes on the second run without re-running a trial."""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from raykd.config import build_experiment, load_experiment
from raykd.errors import ConfigError
from raykd.pipeline import run_pipeline
from raykd.sweep.run import load_sweep, prepare, run_sweep
from conftest import REPO, TINY

SWEEP = {  # conftest's tiny digits recipe; a teacher and the student the sweep tunes
    **copy.deepcopy({k: v for k, v in TINY.items() if k in ("data", "train")}),
    "name": "sw",
    "nodes": {
        "teacher": {"model": "resnet8"},
        "student": {"model": "resnet8", "teacher": "teacher", "method": {"name": "kd"}},
    },
    "sweep": {"node": "student", "space": {"method.temperature": {"grid": [1, 4]}}},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store whose teacher is trained once (in-process) for every sweep of this module."""
    path = tmp_path_factory.mktemp("sweeps") / "runs"
    raw = copy.deepcopy(SWEEP)
    raw["storage"] = str(path)
    exp = build_experiment(raw)
    result = run_pipeline(exp, executor="local", log=lambda *a: None, only={"teacher"})
    assert result.ok
    ray.init(num_cpus=2, logging_level="WARNING")
    yield path
    ray.shutdown()


def write(tmp_path: Path, store: Path, **changes) -> Path:
    raw = copy.deepcopy(SWEEP)
    raw["storage"] = str(store)
    for dotted, value in changes.items():
        section = raw
        parts = dotted.split("__")
        for p in parts[:-1]:
            section = section.setdefault(p, {})
        section[parts[-1]] = value
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def client(store: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{store}/mlflow.db")


# --- the space is checked before anything runs -------------------------------------------------------------


@pytest.mark.parametrize("space, field, value", [
    ({"method.alpha": {"uniform": [-0.5, 0.5]}}, "method.alpha", "-0.5"),
    ({"train.epochs": {"uniform": [2, 4]}}, "train.epochs", "2.74"),  # an integer field sampled fractionally
    ({"method.temperature": {"grid": [2, 0]}}, "method.temperature", "0"),
])
def test_an_invalid_space_is_refused_naming_the_field_and_value_before_anything_runs(tmp_path, space, field, value):
    raw = copy.deepcopy(SWEEP)
    raw["storage"] = str(tmp_path / "never")
    raw["sweep"]["space"] = space
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as e:
        run_sweep(str(path))
    message = str(e.value)
    assert "sweep.space can produce an invalid config" in message
    assert f"{field}=" in message and value in message and f"nodes.student.{field}" in message
    assert not (tmp_path / "never").exists()  # nothing written, nothing trained


def test_a_top_k_above_the_teachers_channels_is_refused_by_the_models_check(tmp_path):
    raw = copy.deepcopy(SWEEP)
    raw["nodes"]["student"]["method"] = {"name": "skd", "substage": "feature"}
    raw["sweep"]["space"] = {"method.top_k": {"choice": [8, 4096]}}
    exp = build_experiment(raw)
    with pytest.raises(ConfigError, match=r"method.top_k=4096.*\n.*top_k"):
        prepare(exp, raw)


def test_tied_fields_follow_their_source_and_bad_ties_are_named():
    raw = copy.deepcopy(SWEEP)
    raw["nodes"]["student"] = {"model": "resnet8", "method": {"name": "dtskd"}}
    raw["sweep"] = {"node": "student", "space": {"method.alpha1": {"grid": [0.2, 0.8]},
                                                 "method.alpha2": {"expr": "1 - method.alpha1"}}}
    exp = build_experiment(raw)
    sweep, trial_raw, checked = prepare(exp, raw)
    assert checked == 2
    from raykd.sweep import space

    assert space.complete(sweep, {"method.alpha1": 0.2}) == {"method.alpha1": 0.2, "method.alpha2": 0.8}
    raw["sweep"]["space"]["method.alpha2"] = {"expr": "1 - method.alpha9"}
    with pytest.raises(ConfigError, match="uses 'method.alpha9', which is not an earlier field"):
        prepare(build_experiment(raw), raw)
    raw["sweep"]["space"]["method.alpha2"] = {"expr": "__import__('os')"}
    with pytest.raises(ConfigError, match="only numbers"):
        prepare(build_experiment(raw), raw)


@pytest.mark.parametrize("sweep, message", [
    ({"metric": "test/top1"}, "a sweep selects on validation"),
    ({"space": {"method.temperature": {"uniform": [1, 4]}}, "search": "grid"}, "every field needs a list"),
    ({"space": {"nodes.teacher.method.temperature": {"grid": [1]}}}, "is a field of node 'teacher'"),
    ({"space": {"temperature": {"grid": [1]}}}, "is not a node field"),
    ({"node": "studnet"}, "Did you mean 'student'"),
    ({"space": {"method.temperature": {"grid": [1], "uniform": [1, 2]}}}, "exactly one of"),
])
def test_sweep_section_mistakes_are_config_errors(tmp_path, sweep, message):
    raw = copy.deepcopy(SWEEP)
    raw["sweep"].update(sweep)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message):
        exp, raw2 = load_sweep(path)
        prepare(exp, raw2)


def test_a_config_without_a_sweep_says_how_to_add_one(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(TINY))
    with pytest.raises(ConfigError, match="has no 'sweep:' section"):
        load_sweep(path)


# --- sweeps on Ray ---------------------------------------------------------------------------------------


def test_grid_by_seeds_sweep_tracks_each_trial_tags_the_best_and_retrains_it(store, tmp_path):
    path = write(tmp_path, store, sweep__seeds=[0, 1], sweep__then={"retrain": True, "seeds": [0, 1]})
    result = run_sweep(str(path), log=lambda *a: None)
    rows = result.rows
    assert len(rows) == 4 and {r.status for r in rows} == {"done"}
    assert sorted((r.values["method.temperature"], r.values["train.seed"]) for r in rows) == \
        [(1, 0), (1, 1), (4, 0), (4, 1)]
    assert len({r.node_dir for r in rows}) == 4  # each config x seed its own node

    c = client(store)
    children = c.search_runs([c.get_run(result.parent_run_id).info.experiment_id],
                             f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    assert len(children) == 4
    by_id = {r.info.run_id: r for r in children}
    for row in rows:
        run = by_id[row.run_id]
        assert run.data.tags["raykd.sweep"] == result.name and run.data.tags["raykd.sweep_role"] == "trial"
        assert run.data.params["sweep.method.temperature"] == str(row.values["method.temperature"])
        assert run.data.params["sweep.train.seed"] == str(row.values["train.seed"])
        assert run.data.metrics["val/top1"] == pytest.approx(row.metric)
        assert len(c.get_metric_history(row.run_id, "val/top1")) == 2  # the per-epoch curve
        assert run.info.status == "FINISHED"
    # the best config: the higher mean val top-1 over its two seeds, both its trials tagged
    means = {t: sum(r.metric for r in rows if r.values["method.temperature"] == t) / 2 for t in (1, 4)}
    best_t = max(means, key=means.get)
    assert result.best_key == f"method.temperature={best_t}"
    best_runs = {r.info.run_id for r in children if r.data.tags.get("raykd.best") == "true"}
    assert best_runs == {r.run_id for r in rows if r.values["method.temperature"] == best_t}
    parent = c.get_run(result.parent_run_id)
    assert parent.data.tags["raykd.best_config"] == result.best_key
    assert parent.data.metrics["best/val/top1"] == pytest.approx(means[best_t])
    artifacts = {a.path for a in c.list_artifacts(result.parent_run_id)}
    assert {"results.csv", "sweep.png", "best.yaml"} <= artifacts
    with open(result.files["csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {t["mlflow_run"] for t in table} == {r.run_id for r in rows}
    assert result.files["plot"].stat().st_size > 5000

    # parents trained once: one teacher run in the store, from the fixture; every trial learnt from it
    teacher_runs = c.search_runs([parent.info.experiment_id], "tags.`raykd.node` = 'teacher'")
    assert len(teacher_runs) == 1
    assert len(list(store.glob("nodes/teacher-*"))) == 1

    # the best config retrained as a normal seeded node of the pipeline, tagged with its sweep
    best = load_experiment(result.files["best_yaml"])
    assert best.config.sweep is None and best.config.nodes["student"].seeds == [0, 1]
    assert best.nodes["student.seed0"].method.temperature == best_t
    retrained = result.retrained
    assert retrained.ok
    runs = [o for o in retrained.nodes.values() if o.plan.node.seed_group == "student"]
    assert len(runs) == 2
    for o in runs:
        assert c.get_run(o.run_id).data.tags["raykd.sweep_from"] == result.name
    # the retrained seeds are the sweep's best trials' nodes: same config, same hash, so cached
    assert {o.status for o in runs} == {"cached"}


def test_asha_stops_a_hopeless_trial_early(store, tmp_path):
    path = write(tmp_path, store, train__epochs=4,
                 sweep__space={"train.optimizer.lr": {"grid": [0.1, 1.0e-7]}}, sweep__scheduler="asha",
                 sweep__grace_period=1, sweep__reduction_factor=2, sweep__max_concurrent_trials=1,
                 sweep__seed=0)  # seed 0 shuffles the grid to [0.1, 1e-7]: the hopeless trial meets a rival
    result = run_sweep(str(path), log=lambda *a: None)
    by_lr = {r.values["train.optimizer.lr"]: r for r in result.rows}
    assert by_lr[0.1].status == "done" and by_lr[0.1].epochs == 4
    hopeless = by_lr[1.0e-7]
    assert hopeless.status == "stopped" and hopeless.epochs < 4
    run = client(store).get_run(hopeless.run_id)
    assert run.info.status == "KILLED" and run.data.tags["raykd.stopped_early"] == f"epoch {hopeless.epochs}"
    assert not (Path(hopeless.node_dir) / "result.json").exists()  # not finished: a later sweep resumes it
    assert (Path(hopeless.node_dir) / "checkpoint.pt").is_file()
    assert result.best_key == "train.optimizer.lr=0.1"


def test_a_sweep_resumes_after_its_driver_is_killed_without_rerunning_finished_trials(store, tmp_path):
    path = write(tmp_path, store, train__epochs=4, sweep__max_concurrent_trials=1,
                 sweep__space={"method.temperature": {"grid": [2, 3, 5]}})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "raykd.cli", "tune", str(path), "--num-cpus", "2"]
    nodes = store / "nodes"
    before = set(nodes.glob("student-*"))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    finished: dict[Path, float] = {}
    try:
        while time.time() < deadline:  # kill once one trial is finished and another is part-way
            new = set(nodes.glob("student-*")) - before
            finished = {d: (d / "result.json").stat().st_mtime for d in new if (d / "result.json").is_file()}
            partway = [d for d in new if d not in finished and (d / "checkpoint.pt").is_file()]
            if finished and partway:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the sweep never had a finished and a part-way trial")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(2)  # the watcher takes the killed driver's Ray down
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:] + again.stdout[-3000:]
    assert "resuming the sweep" in again.stdout or "search starts again" in again.stdout
    for d, mtime in finished.items():
        assert (d / "result.json").stat().st_mtime == mtime  # finished trials were not trained again
    new = set(nodes.glob("student-*")) - before
    assert len(new) == 3 and all((d / "result.json").is_file() for d in new)
    resumed = [json.loads((d / "result.json").read_text()).get("resumed_after_epoch", 0) for d in new - set(finished)]
    assert max(resumed) >= 1  # the part-way trial continued from its epoch checkpoint
    with open(sorted(store.glob("sweeps/*/results.csv"), key=os.path.getmtime)[-1]) as f:
        assert len(list(csv.DictReader(f))) == 3


def test_a_two_worker_trial_runs_as_a_ray_train_ddp_run_reporting_each_epoch(store, tmp_path):
    path = write(tmp_path, store, nodes__student__resources={"workers": 2, "cpus_per_worker": 0.5},
                 sweep__space={"method.temperature": {"grid": [3]}})
    result = run_sweep(str(path), log=lambda *a: None)
    (row,) = result.rows
    assert row.status == "done" and row.epochs == 2
    done = json.loads((Path(row.node_dir) / "result.json").read_text())
    assert done["world_size"] == 2
    c = client(store)
    assert len(c.get_metric_history(row.run_id, "val/top1")) == 2
    assert c.get_run(row.run_id).data.tags["raykd.sweep_role"] == "trial"


def test_relative_storage_and_data_roots_become_absolute_for_the_trials_and_best_yaml(tmp_path, monkeypatch):
    raw = copy.deepcopy(SWEEP)
    raw["storage"] = "rel-runs"
    raw["nodes"]["student"]["data"] = {"root": "some/data"}
    path = tmp_path / "rel.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    exp, loaded = load_sweep(path)
    _, trial_raw, _ = prepare(exp, loaded)
    assert trial_raw["storage"] == str(tmp_path / "rel-runs")  # Tune's actors run in other folders
    assert trial_raw["nodes"]["student"]["data"]["root"] == str(tmp_path / "some" / "data")
    assert "sweep" not in trial_raw and "final" not in trial_raw


def test_optuna_search_samples_a_range_and_reports_each_trial(store, tmp_path):
    path = write(tmp_path, store, train__epochs=1, sweep__search="optuna", sweep__num_samples=2,
                 sweep__space={"method.temperature": {"uniform": [1.0, 8.0]}})
    result = run_sweep(str(path), log=lambda *a: None)
    temps = [r.values["method.temperature"] for r in result.rows]
    assert len(temps) == 2 and all(1.0 <= t <= 8.0 for t in temps) and len(set(temps)) == 2
    assert {r.status for r in result.rows} == {"done"} and result.best_key is not None


def test_the_best_config_is_the_best_mean_over_seeds_with_ties_broken_by_validation_loss():
    from raykd.sweep.results import TrialRow, best_config

    def row(t, seed, metric, loss, status="done"):
        return TrialRow("x", {"method.temperature": t, "train.seed": seed}, status, 2, metric, None, "", "",
                        {"val/loss": loss})

    rows = [row(1, 0, 99.0, 0.10), row(1, 1, 97.0, 0.10),  # mean 98.0
            row(4, 0, 98.0, 0.20), row(4, 1, 98.0, 0.20),  # mean 98.0, higher loss
            row(8, 0, 99.9, 0.01, status="stopped")]        # stopped early: never the best
    key, trials = best_config(rows, "max")
    assert key == "method.temperature=1" and len(trials) == 2
    rows[2].metric = rows[3].metric = 97.5
    assert best_config(rows, "min")[0] == "method.temperature=4"  # the lower mean when the metric is a loss


def test_asha_walks_a_grid_in_a_seeded_random_order_covering_every_combination_once():
    from raykd.config.sweep import SweepConfig
    from raykd.sweep import space

    sweep = SweepConfig.model_validate({"node": "student", "scheduler": "asha", "seeds": [0, 1], "space": {
        "method.temperature": {"grid": [1, 2, 3]}, "train.optimizer.lr": {"grid": [0.1, 0.2]}}})
    points = space.tune_space(sweep)[space.GRID_POINT]["grid_search"]
    combos = {(p["method.temperature"], p["train.optimizer.lr"], p["train.seed"]) for p in points}
    assert len(points) == len(combos) == 12
    assert points == space.tune_space(sweep)[space.GRID_POINT]["grid_search"]  # the same order every run
    assert [p["method.temperature"] for p in points] != sorted(p["method.temperature"] for p in points)
    assert space.complete(sweep, {space.GRID_POINT: points[0]}) == {
        "method.temperature": points[0]["method.temperature"], "train.optimizer.lr": points[0]["train.optimizer.lr"],
        "train.seed": points[0]["train.seed"]}
    no_asha = sweep.model_copy(update={"scheduler": "none"})
    assert space.GRID_POINT not in space.tune_space(no_asha)  # without ASHA the order does not matter
