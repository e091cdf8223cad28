"""MLflow outages: a dead tracking server is reported in seconds before anything trains; a server that dies
mid-run never fails training (metrics are kept in the node folder and uploaded when it is back); a stop
between a checkpoint and its metrics loses no epoch. Real MLflow servers on 127.0.0.1."""

import copy
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from conftest import free_port
from raykd.config import build_experiment
from raykd.errors import RaykdError
from raykd.pipeline import make_plan, run_pipeline
from raykd.tracking import PENDING

pytestmark = pytest.mark.slow


def serve(tmp_path, port):
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "server-artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            assert proc.poll() is None, "the MLflow server did not start"
            time.sleep(0.5)
    raise TimeoutError("MLflow server")


def stop(proc):
    """The server and the workers it forked (killing only the parent leaves them answering)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_dead_tracking_server_is_an_error_in_seconds_before_anything_trains(tiny_raw):
    raw = copy.deepcopy(tiny_raw)
    raw["tracking"] = {"uri": f"http://127.0.0.1:{free_port()}"}
    t0 = time.time()
    with pytest.raises(RaykdError, match=r"the MLflow tracking server at http://127\.0\.0\.1:\d+ does not answer .*"
                                         r"nothing was trained"):
        run_pipeline(build_experiment(raw), executor="local", log=lambda *_: None)
    assert time.time() - t0 < 20
    assert not (build_experiment(raw).storage / "nodes").exists()


def test_a_server_that_dies_mid_run_never_fails_training_and_gets_the_metrics_later(tmp_path, tiny_raw):
    port = free_port()
    server = serve(tmp_path, port)
    raw = copy.deepcopy(tiny_raw)
    raw["tracking"] = {"uri": f"http://127.0.0.1:{port}"}
    raw["nodes"] = {"vanilla": {"model": "resnet8", "train": {"epochs": 5}}}
    raw["final"] = "vanilla"
    node_dir = make_plan(build_experiment(raw))["vanilla"].dir

    def kill_after_first_epoch():
        while not (node_dir / "checkpoint.pt").exists():
            time.sleep(0.05)
        stop(server)

    killer = threading.Thread(target=kill_after_first_epoch, daemon=True)
    killer.start()
    logs = []
    result = run_pipeline(build_experiment(raw), executor="local", log=logs.append)
    killer.join(timeout=60)
    assert result.ok and result.nodes["vanilla"].status == "trained", "training never depends on MLflow"
    said = "\n".join(logs)
    assert "did not take this node's metrics" in said or "MLflow at" in said, said
    assert "Traceback" not in said
    assert (node_dir / PENDING).is_file() and (node_dir / "result.json").is_file()
    run_id = result.nodes["vanilla"].run_id

    server = serve(tmp_path, port)  # back, with the same database
    try:
        logs = []
        again = run_pipeline(build_experiment(raw), executor="local", log=logs.append)
        assert again.nodes["vanilla"].status == "cached"
        assert any("uploaded" in line and "MLflow had missed" in line for line in logs), logs
        assert not (node_dir / PENDING).exists()
        client = MlflowClient(f"http://127.0.0.1:{port}")
        steps = [m.step for m in client.get_metric_history(run_id, "val/top1")]
        assert sorted(steps) == [1, 2, 3, 4, 5], steps
        assert client.get_run(run_id).info.status == "FINISHED"
        assert "test/top1" in client.get_run(run_id).data.metrics
    finally:
        stop(server)


def test_a_stop_between_checkpoint_and_metrics_loses_no_epoch(tmp_path, tiny_raw, monkeypatch):
    from raykd.pipeline.task import NodeTask, run_task
    from raykd.tracking import MetricLogger, Tracker

    exp = build_experiment(dict(tiny_raw, nodes={"vanilla": {"model": "resnet8", "train": {"epochs": 3}}},
                                final="vanilla"))
    pn = make_plan(exp)["vanilla"]
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = Tracker(uri, "stop", tmp_path / "art")
    run_id = tracker.create_child(tracker.start_parent("p", {}, {}), "vanilla", {}, {})
    task = NodeTask(name="vanilla", hash=pn.hash, node=pn.node, out_dir=str(pn.dir), teacher_path=None,
                    data_cache=str(tmp_path / "cache"), tracking_uri=uri, run_id=run_id)
    real = MetricLogger.log_metrics

    def interrupted(self, metrics, step):
        if step == 2:
            raise KeyboardInterrupt  # Ctrl-C after epoch 2's checkpoint, before its metrics
        return real(self, metrics, step)

    monkeypatch.setattr(MetricLogger, "log_metrics", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_task(task, log=lambda *_: None)
    monkeypatch.setattr(MetricLogger, "log_metrics", real)
    run_task(task, log=lambda *_: None)  # resumes after epoch 2
    steps = [m.step for m in tracker.client.get_metric_history(run_id, "val/top1")]
    assert sorted(steps) == [1, 2, 3], steps
