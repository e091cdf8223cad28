"""Runs sharing a store: each node is trained by one run at a time (the other waits and uses its result), a
killed holder releases its nodes, and two runs creating a store at once do not race on MLflow's tables."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import yaml
from mlflow.tracking import MlflowClient

from raykd.pipeline.lock import NodeLock


def _hold(node_dir, ready, release):
    lock = NodeLock(node_dir)
    assert lock.try_acquire({"pipeline": "holder"})
    ready.set()
    release.wait(60)


def test_a_node_lock_names_its_holder_and_dies_with_it(tmp_path):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(tmp_path, ready, release))
    p.start()
    assert ready.wait(30)
    mine = NodeLock(tmp_path)
    assert not mine.try_acquire({"pipeline": "me"})
    assert mine.holder().startswith(f"raykd run 'holder' (pid {p.pid} on ")
    os.kill(p.pid, signal.SIGKILL)  # no clean-up at all: the kernel drops the lock
    p.join()
    assert mine.try_acquire({"pipeline": "me"}) and "'me'" in mine.holder()
    mine.release()


def _config(tmp_path, kd_epochs=2, name="shared"):
    cfg = {
        "name": name, "storage": str(tmp_path / "runs"),
        "data": {"name": "digits", "batch_size": 64, "train_limit": 256, "augment": {"flip": False}},
        "train": {"epochs": 2},
        "nodes": {"teacher": {"model": "resnet8"},
                  "kd": {"model": "resnet8", "teacher": "teacher", "method": {"name": "kd"},
                         "train": {"epochs": kd_epochs}}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(path, cwd):
    return subprocess.Popen([sys.executable, "-m", "raykd.cli", "run", str(path), "--executor", "local"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_runs_started_together_on_a_new_store_train_each_node_once(tmp_path):
    path = _config(tmp_path)
    procs = [start(path, tmp_path), start(path, tmp_path)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
        assert "Traceback" not in out and "OperationalError" not in out
    both = "\n".join(outs)
    for node in ("teacher", "kd"):
        assert both.count(f"node '{node}' started") == 1, both
        assert f"node '{node}' finished" in both
    assert "waiting to use its result" in both or "is cached" in both
    assert both.count("as MLflow model 'shared-kd' version") == 1, "the final node is registered once"
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("shared")
    runs = client.search_runs([exp.experiment_id], "tags.`raykd.node` != ''")
    by_node = {}
    for r in runs:
        by_node.setdefault(r.data.tags["raykd.node"], []).append(r)
    assert sorted(by_node) == ["kd", "teacher"] and all(len(v) == 1 for v in by_node.values()), "one run a node"
    for node, (r,) in by_node.items():
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val/top1")]
        assert steps == [1, 2], (node, steps)  # no duplicate epochs from a second writer


def test_a_run_waits_for_a_node_another_run_trains_and_takes_over_when_that_run_dies(tmp_path):
    path = _config(tmp_path, kd_epochs=40)
    first = start(path, tmp_path)
    nodes = tmp_path / "runs" / "nodes"
    deadline = time.time() + 300
    while time.time() < deadline and not list(nodes.glob("kd-*/checkpoint.pt")):
        assert first.poll() is None, first.stdout.read()
        time.sleep(0.2)
    second = start(path, tmp_path)
    seen = []
    for line in second.stdout:  # the second run says it waits, and for whom
        seen.append(line)
        if "is being trained by" in line:
            break
    assert f"node 'kd' is being trained by raykd run 'shared' (pid {first.pid} on " in seen[-1], "".join(seen)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    rest = second.communicate(timeout=600)[0]
    out = "".join(seen) + rest
    assert second.returncode == 0, out
    assert "node 'kd' resumes" in out and "resuming from" in out, "it continued the dead run's node"
    assert (next(nodes.glob("kd-*")) / "result.json").is_file()
