"""The pipeline on a real local Ray (2 CPUs): concurrent branches, DDP, errors, infeasible requests."""

import copy
import time

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

from raykd.config import build_experiment
from raykd.errors import ResourceError
from raykd.pipeline import run_pipeline
from raykd.pipeline.ray_executor import critical_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, logging_level="WARNING")
    yield
    ray.shutdown()


def test_skd_branches_run_concurrently_and_a_failing_node_only_stops_its_descendants(tiny_raw):
    """One pipeline on a real 2-CPU Ray: SKD's branches overlap in time, the ensemble follows them,
    and a node that diverges fails with its message intact while its child is skipped. (The cascade
    wiring itself is tested in-process in test_skd.py; the teacher cached across executors.)"""
    raw = copy.deepcopy(tiny_raw)
    raw["resources"] = {"cpus_per_worker": 0.5}  # the three branches share the 2 CPUs
    branch = lambda sub: {"cascade": ["resnet8"], "teacher": "teacher", "method": {"name": "skd", "substage": sub}}  # noqa: E731
    raw["nodes"] = {
        "teacher": {"model": "resnet8", "resources": {"cpus_per_worker": 2}},
        "response": branch("response"), "feature": branch("feature"), "relation": branch("relation"),
        "skd": {"members": ["response", "feature", "relation"], "method": {"name": "ensemble"}},
        # after the branches, so it does not crowd their start-up: the ensemble teaches a diverging student
        "broken": {"model": "resnet8", "teacher": "skd", "method": {"name": "kd"}, "train": {"optimizer": {"lr": 1.0e12}}},
        "after_broken": {"model": "resnet8", "teacher": "broken", "method": {"name": "kd"}},
    }
    raw["final"] = "skd"
    # The teacher trains in-process first, and the Ray run finds it cached (the cache across executors).
    teacher_only = dict(copy.deepcopy(raw), nodes={"teacher": raw["nodes"]["teacher"]}, final="teacher")
    assert run_pipeline(build_experiment(teacher_only), executor="local", log=lambda *_: None).ok
    result = run_pipeline(build_experiment(raw), executor="ray", log=lambda *_: None)
    status = {n: o.status for n, o in result.nodes.items()}
    assert status == {"teacher": "cached", "response": "trained", "feature": "trained", "relation": "trained",
                      "skd": "trained", "broken": "failed", "after_broken": "skipped"}, result.nodes["broken"].error
    err = result.nodes["broken"].error
    assert "loss became non-finite at step" in err and "Traceback" not in err
    client = MlflowClient(result.tracking_uri)
    runs = {name: client.get_run(o.run_id) for name, o in result.nodes.items()}
    span = {n: (r.info.start_time, r.info.end_time) for n, r in runs.items()}
    branches = ("response", "feature", "relation")
    assert max(span[b][0] for b in branches) < min(span[b][1] for b in branches), "the branches overlap in time"
    assert min(span[b][0] for b in branches) >= span["teacher"][1], "runs start when their node starts"
    assert span["skd"][0] >= max(span[b][1] for b in branches)
    assert runs["feature"].data.tags["raykd.teacher_run_id"] == result.nodes["teacher"].run_id
    assert runs["after_broken"].info.status == "KILLED" and runs["broken"].info.status == "FAILED"
    for name in ("teacher", *branches, "skd"):
        assert runs[name].info.status == "FINISHED" and runs[name].data.tags["raykd.node"] == name
        if name != "skd":
            assert [m.step for m in client.get_metric_history(runs[name].info.run_id, "val/top1")] == [1, 2], \
                "workers logged live"
    assert runs["skd"].data.metrics["params"] == 3 * runs["feature"].data.metrics["params"]
    assert result.registered == ("tiny-skd", 1)
    feature = runs["feature"].data.metrics
    assert 0 < feature["ray/startup_seconds"] < feature["wall_seconds"] and feature["ray/teardown_seconds"] >= 0


def test_dtskd_variants_run_concurrently_with_their_branch_accuracies(tiny_raw):
    """Two DTSKD variants (the paper's history and the official code's one-hot targets) as concurrent
    Ray tasks; each reports its branches' accuracies and its history's size to MLflow."""
    raw = copy.deepcopy(tiny_raw)
    raw["resources"] = {"cpus_per_worker": 1}
    raw["nodes"] = {"dtskd": {"model": "resnet8", "method": {"name": "dtskd"}},
                    "official": {"model": "resnet8", "method": {"name": "dtskd", "history_update": False}}}
    raw["final"] = "dtskd"
    result = run_pipeline(build_experiment(raw), executor="ray", log=lambda *_: None)
    assert result.ok, {n: o.error for n, o in result.nodes.items()}
    client = MlflowClient(result.tracking_uri)
    runs = {name: client.get_run(o.run_id) for name, o in result.nodes.items()}
    span = {n: (r.info.start_time, r.info.end_time) for n, r in runs.items()}
    assert max(s for s, _ in span.values()) < min(e for _, e in span.values()), "the variants overlap in time"
    for name, run in runs.items():
        m = run.data.metrics
        assert run.info.status == "FINISHED" and 0 <= m["test/branch1_top1"] <= 100 and "test/branch2_top1" in m
        steps = [h.step for h in client.get_metric_history(run.info.run_id, "val/branch2_top1")]
        assert steps == [1, 2], name
    assert runs["dtskd"].data.metrics["history/bytes"] == 256 * (3 * 10 * 2 + 1)
    assert runs["official"].data.metrics["history/bytes"] == 0


def test_mtkd_ssr_ablation_shares_one_probe_node_and_runs_its_variants_concurrently(tiny_raw):
    """Table 6 in miniature on a real 2-CPU Ray: one teacher, its stage_probes node (fitted once), and three
    MTKD-SSR variants learning from it concurrently, each logging its stage heads' accuracies to MLflow."""
    raw = copy.deepcopy(tiny_raw)
    raw["resources"] = {"cpus_per_worker": 0.5}
    variant = lambda **m: {"model": "resnet8", "teacher": "probes", "method": {"name": "mtkd_ssr", **m}}  # noqa: E731
    raw["nodes"] = {
        "teacher": {"model": "resnet8", "resources": {"cpus_per_worker": 2}},
        "probes": {"model": "resnet8", "init": "teacher", "method": {"name": "stage_probes"}},
        "full": variant(), "srd_review": variant(gamma=0), "deep_to_shallow": variant(review_direction="deep_to_shallow"),
    }
    raw["final"] = "full"
    teacher_only = dict(copy.deepcopy(raw), nodes={"teacher": raw["nodes"]["teacher"]}, final="teacher")
    assert run_pipeline(build_experiment(teacher_only), executor="local", log=lambda *_: None).ok
    result = run_pipeline(build_experiment(raw), executor="ray", log=lambda *_: None)
    assert result.ok, {n: o.error for n, o in result.nodes.items()}
    status = {n: o.status for n, o in result.nodes.items()}
    assert status == {"teacher": "cached", "probes": "trained", "full": "trained", "srd_review": "trained",
                      "deep_to_shallow": "trained"}
    client = MlflowClient(result.tracking_uri)
    runs = {name: client.get_run(o.run_id) for name, o in result.nodes.items()}
    probe_runs = client.search_runs([runs["probes"].info.experiment_id], "tags.`raykd.node` = 'probes'")
    assert len(probe_runs) == 1, "the probes are fitted once for every variant"
    variants = ("full", "srd_review", "deep_to_shallow")
    span = {n: (runs[n].info.start_time, runs[n].info.end_time) for n in variants}
    assert max(s for s, _ in span.values()) < min(e for _, e in span.values()), "the variants overlap in time"
    assert min(s for s, _ in span.values()) >= runs["probes"].info.end_time
    for name in variants:
        run = runs[name]
        assert run.data.tags["raykd.teacher_run_id"] == result.nodes["probes"].run_id
        assert run.info.status == "FINISHED" and 0 <= run.data.metrics["test/stage1_top1"] <= 100
        assert [h.step for h in client.get_metric_history(run.info.run_id, "val/stage2_top1")] == [1, 2]
    assert "train/scd" in runs["full"].data.metrics and "train/scd" not in runs["srd_review"].data.metrics
    assert runs["probes"].data.metrics["test/top1"] == runs["teacher"].data.metrics["test/top1"], "teacher frozen"


def test_ddp_node_with_two_workers(tiny_raw):
    """A DTSKD node as a 2-worker Ray Train (gloo) run: each rank holds and checkpoints half the history."""
    raw = copy.deepcopy(tiny_raw)
    raw["nodes"] = {"dtskd": {"model": "resnet8", "method": {"name": "dtskd"}, "resources": {"workers": 2}}}
    raw["final"] = "dtskd"
    logs = []
    result = run_pipeline(build_experiment(raw), executor="ray", log=logs.append)
    assert result.ok, result.nodes["dtskd"].error
    r = result.nodes["dtskd"].result
    assert r["world_size"] == 2
    assert r["steps_per_epoch"] == 256 // 64, "the global batch of 64 is split 32 + 32 across ranks"
    assert r["history/bytes_per_rank"] == 128 * (3 * 10 * 2 + 1), "each rank holds half the samples' rows"
    shards = sorted(p.name for p in (result.nodes["dtskd"].plan.dir / "sharded").iterdir())
    assert shards == ["e2-r0of2.pt", "e2-r1of2.pt"]
    client = MlflowClient(result.tracking_uri)
    hist = client.get_metric_history(result.nodes["dtskd"].run_id, "train/loss")
    assert [m.step for m in hist] == [1, 2], "only rank 0 logs"
    assert hist[1].value < hist[0].value, "it learns"


def test_infeasible_request_fails_fast_before_anything_is_written(tiny_raw):
    t0 = time.time()
    with pytest.raises(ResourceError, match=r"node 'kd' asks for 3 worker\(s\).*whole cluster has 2 CPU"):
        run_pipeline(build_experiment(tiny_raw, ["nodes.kd.resources.workers=3"]), executor="ray", log=lambda *_: None)
    assert time.time() - t0 < 30
    assert not (build_experiment(tiny_raw).storage / "mlflow.db").exists()


def test_critical_path_orders_long_chains_first():
    parents = {"t": (), "v": (), "s1": ("t",), "s2": ("s1",)}
    assert critical_path(parents) == {"t": 2, "v": 0, "s1": 1, "s2": 0}


def _hold_node(node_dir, ready, seconds):
    from raykd.pipeline.lock import NodeLock

    lock = NodeLock(node_dir)
    assert lock.try_acquire({"pipeline": "other"})
    ready.set()
    time.sleep(seconds)  # then exit without finishing the node, as a run that stopped would


def test_a_node_another_run_holds_waits_on_ray_while_the_rest_proceeds(tiny_raw):
    """The Ray executor asks before it starts a node: one held by another run waits (and is trained here
    once that run lets go without finishing it), while nodes nobody holds go ahead meanwhile."""
    import multiprocessing as mp

    from raykd.pipeline import make_plan

    raw = copy.deepcopy(tiny_raw)
    raw["nodes"] = {"vanilla": {"model": "resnet8"}, "other": {"model": "resnet8", "train": {"seed": 1}}}
    raw["final"] = "vanilla"
    exp = build_experiment(raw)
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_node, args=(make_plan(exp)["vanilla"].dir, ready, 20))
    holder.start()
    assert ready.wait(30)
    logs = []
    result = run_pipeline(exp, executor="ray", log=logs.append)
    holder.join()
    assert result.ok and {n: o.status for n, o in result.nodes.items()} == {"vanilla": "trained", "other": "trained"}
    waited = next(i for i, line in enumerate(logs) if "node 'vanilla' is being trained by raykd run 'other'" in line)
    other_started = next(i for i, line in enumerate(logs) if "node 'other' started" in line)
    vanilla_started = next(i for i, line in enumerate(logs) if "node 'vanilla' started" in line)
    assert waited < vanilla_started and other_started < vanilla_started, "the free node did not wait"


def _tasks_named(name: str, settled: bool = True, timeout: float = 30.0):
    """The attempts of Ray task `name` as Ray's state API (what the dashboard shows) lists them; with `settled`,
    once none is still pending or running (the state API trails the tasks by a moment)."""
    from ray.util.state import list_tasks

    deadline = time.time() + timeout
    while True:
        tasks = list_tasks(filters=[("name", "=", name)], detail=True, raise_on_missing_output=False)
        if tasks and (not settled or all(t.state in ("FINISHED", "FAILED") for t in tasks)) or time.time() > deadline:
            return tasks
        time.sleep(0.2)


def test_single_worker_nodes_run_in_reused_worker_processes(tiny_raw):
    """A chain of single-worker nodes (each taking both CPUs, so one at a time) runs as Ray tasks named after
    their nodes, in worker processes Ray keeps: fewer processes than nodes, no Ray Train run."""
    raw = copy.deepcopy(tiny_raw)
    raw["resources"] = {"cpus_per_worker": 2}
    raw["train"]["epochs"] = 1
    raw["nodes"] = {"teacher": {"model": "resnet8"},
                    "ta": {"model": "resnet8", "teacher": "teacher", "method": {"name": "kd"}},
                    "kd": {"model": "resnet8", "teacher": "ta", "method": {"name": "kd"}},
                    "dkd": {"model": "resnet8", "teacher": "kd", "method": {"name": "dkd"}}}
    raw["final"] = "dkd"
    exp = build_experiment(raw)
    result = run_pipeline(exp, executor="ray", log=lambda *_: None)
    assert result.ok, {n: o.error for n, o in result.nodes.items()}
    pids = [o.result["ray/worker_pid"] for o in result.nodes.values()]
    assert len(set(pids)) < len(pids), f"every node started a process of its own: {pids}"
    warmed = {str(t.worker_pid) for t in _tasks_named("raykd:warm-up")}
    assert pids[0] in warmed, "the first node ran in a process warmed up while the driver set up"
    for name in raw["nodes"]:
        attempts = _tasks_named(f"raykd:{name}")
        assert [t.state for t in attempts] == ["FINISHED"] and str(attempts[0].worker_pid) in pids
    assert not (exp.storage / "ray").exists() or not any((exp.storage / "ray").iterdir()), "no Train run"


def test_a_killed_worker_process_resumes_its_node_from_the_epoch_checkpoint(tiny_raw):
    """SIGKILL the worker process training a node mid-run: Ray retries the task (`max_failures: 1`), the retry
    resumes after the last epoch checkpointed, and its MLflow run ends up with every epoch once."""
    import os
    import signal
    import threading

    from raykd.engine import checkpoint as ckpt

    raw = copy.deepcopy(tiny_raw)
    raw["data"]["train_limit"] = 1024
    raw["train"]["epochs"] = 6
    raw["nodes"] = {"victim": {"model": "resnet8", "resources": {"cpus_per_worker": 2, "max_failures": 1}}}
    raw["final"] = "victim"
    exp = build_experiment(raw)
    out = {}
    runner = threading.Thread(target=lambda: out.update(r=run_pipeline(exp, executor="ray", log=lambda *_: None)))
    runner.start()
    from raykd.pipeline import make_plan

    checkpoint = make_plan(exp)["victim"].dir / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.05)
    deadline = time.time() + 30
    running = []
    while not running and time.time() < deadline:  # the state API can list the attempt before it says RUNNING
        running = [t for t in _tasks_named("raykd:victim", settled=False) if t.state == "RUNNING" and t.worker_pid]
    assert running, "the state API never listed the node's task as running"
    killed_after = ckpt.load(checkpoint)["epoch"]
    os.kill(running[0].worker_pid, signal.SIGKILL)
    runner.join(300)
    result = out["r"]
    assert result.ok, result.nodes["victim"].error
    r = result.nodes["victim"].result
    assert 1 <= killed_after <= r["resumed_after_epoch"] < 6, (killed_after, r["resumed_after_epoch"])
    assert r["ray/worker_pid"] != str(running[0].worker_pid)
    attempts = _tasks_named("raykd:victim")
    assert sorted(t.attempt_number for t in attempts) == [0, 1]
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.nodes["victim"].run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/top1")] == [1, 2, 3, 4, 5, 6]


def test_a_user_error_inside_a_node_reaches_the_driver_once_and_is_not_retried(tiny_raw):
    """A config error only the node can find (its batch outgrows its training split) fails that node with the
    message intact, once, though the node allows retries: retries are for lost processes, not for mistakes."""
    raw = copy.deepcopy(tiny_raw)
    raw["nodes"] = {"small": {"model": "resnet8", "data": {"train_limit": 32},
                              "resources": {"max_failures": 2, "cpus_per_worker": 2}}}
    raw["final"] = "small"
    logs = []
    result = run_pipeline(build_experiment(raw), executor="ray", log=logs.append)
    err = result.nodes["small"].error
    assert result.nodes["small"].status == "failed"
    assert "nodes.small.data.batch_size (64) is larger than the training split (32 images)" in err
    assert "Traceback" not in err and "RayTaskError" not in err
    attempts = _tasks_named("raykd:small")
    assert [(t.attempt_number, t.state) for t in attempts] == [(0, "FAILED")]
    assert sum("is larger than the training split" in line for line in logs) == 1


# --- the streaming data path on Ray ---------------------------------------------------------------

def _stream_raw(root, storage, student_epochs=2, **data):
    """A teacher and a ResNet-18 KD student on a generated ImageNet-layout folder, streamed: the student
    is a 2-worker DDP (gloo) run, 36 training images in global batches of 8 (a 4-image tail, 2 a rank)."""
    return {
        "name": "stream", "storage": str(storage),
        "data": {"name": "image_folder", "root": str(root), "stream": True, "image_size": 48, "batch_size": 8,
                 "eval_batch_size": 16, "loader_workers": 1, **data},
        "train": {"epochs": 1, "optimizer": {"lr": 0.02}, "schedule": {"name": "constant"}},
        "nodes": {
            "teacher": {"model": "resnet8"},
            "student": {"model": "resnet18", "teacher": "teacher", "method": {"name": "kd"},
                        "train": {"epochs": student_epochs}, "resources": {"workers": 2}},
        },
        "final": "student",
    }


def test_streamed_folder_trains_a_ddp_kd_student_reading_each_image_once_and_resumes_to_the_same_weights(tmp_path):
    from media import write_jpeg_tree

    from raykd.engine.student_file import read_student

    root = tmp_path / "imagenet"
    write_jpeg_tree(root, classes=3, per_class={"train": 12, "val": 3, "test": 4})
    storage = tmp_path / "runs"
    first = run_pipeline(build_experiment(_stream_raw(root, storage)), executor="ray", log=lambda *_: None)
    assert first.ok, first.nodes["student"].error
    r = first.nodes["student"].result
    assert r["world_size"] == 2 and r["steps_per_epoch"] == 5, "4 global batches of 8 and the 4-image tail"
    client = MlflowClient(first.tracking_uri)
    run = client.get_run(first.nodes["student"].run_id)
    for key in ("data/samples_read", "data/samples_distinct"):
        assert [m.value for m in client.get_metric_history(run.info.run_id, key)] == [36.0, 36.0], key
    assert run.data.metrics["data/skipped_files"] == 0 and run.data.metrics["data/peak_rss_mb"] > 0
    weights = read_student(first.nodes["student"].plan.dir / "final.pt")["state_dict"]

    # Stop after epoch 1: the 1-epoch student's checkpoint is exactly the 2-epoch run's state after its
    # first epoch (constant lr). Put it in the finished node's place and run again: the resumed epoch 2
    # must read the batches the uninterrupted one read, so the weights come out identical.
    one = run_pipeline(build_experiment(_stream_raw(root, storage, student_epochs=1)), executor="ray",
                       log=lambda *_: None)
    assert one.ok, one.nodes["student"].error
    node_dir = first.nodes["student"].plan.dir
    for name in ("result.json", "final.pt"):
        (node_dir / name).unlink()
    (node_dir / "checkpoint.pt").write_bytes((one.nodes["student"].plan.dir / "checkpoint.pt").read_bytes())
    again = run_pipeline(build_experiment(_stream_raw(root, storage)), executor="ray", log=lambda *_: None)
    assert again.ok, again.nodes["student"].error
    assert again.nodes["student"].result["resumed_after_epoch"] == 1
    resumed = read_student(node_dir / "final.pt")["state_dict"]
    assert weights.keys() == resumed.keys()
    assert all(torch.equal(weights[k], resumed[k]) for k in weights), "the resumed run saw other batches"


def test_a_corrupt_jpeg_stops_a_ddp_run_naming_the_file_and_skip_reads_the_rest(tmp_path):
    from media import write_jpeg_tree

    root = tmp_path / "imagenet"
    files = write_jpeg_tree(root, classes=3, per_class={"train": 12, "val": 3, "test": 4})
    bad = files["train"][7]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated mid-scan
    raw = _stream_raw(root, tmp_path / "runs", student_epochs=2)
    raw["nodes"] = {"student": {**raw["nodes"]["student"], "teacher": None, "method": {"name": "vanilla"},
                                "model": "resnet8", "resources": {"workers": 2, "max_failures": 1}}}
    # Only the rank whose share holds the file fails; its peer waits in a collective. Failing the group stops
    # it, and the retry max_failures allows stops at once on every rank with the same message.
    failed = run_pipeline(build_experiment(raw), executor="ray", log=lambda *_: None)
    assert not failed.ok
    error = failed.nodes["student"].error
    assert str(bad) in error and "data.on_corrupt: skip" in error, error
    assert not (failed.nodes["student"].plan.dir / "checkpoint.pt").exists(), "it failed in epoch 1"

    raw["data"]["on_corrupt"] = "skip"
    done = run_pipeline(build_experiment(raw), executor="ray", log=lambda *_: None)
    assert done.ok, done.nodes["student"].error
    assert done.nodes["student"].plan.dir == failed.nodes["student"].plan.dir, "on_corrupt is not in the hash"
    client = MlflowClient(done.tracking_uri)
    rid = done.nodes["student"].run_id
    for key, want in (("data/skipped_files", 1.0), ("data/samples_read", 35.0), ("data/samples_distinct", 35.0)):
        assert [m.value for m in client.get_metric_history(rid, key)] == [want, want], key
