"""`ray job submit` against a real head node on 127.0.0.1, through jobs/quickstart.sh."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def head_node():
    """A Ray head in its own process group, so teardown kills exactly it (never `ray stop`)."""
    bin_dir = str(Path(sys.executable).parent)
    tmp = tempfile.mkdtemp(prefix="rkjob", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dash = free_port(), free_port()
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", RAY_TMPDIR=tmp)
    proc = subprocess.Popen(
        [f"{bin_dir}/ray", "start", "--head", f"--port={gcs}", f"--dashboard-port={dash}",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", "--disable-usage-stats", "--block"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while time.time() < deadline:
        assert proc.poll() is None, "ray start exited"
        try:
            socket.create_connection(("127.0.0.1", dash), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        pytest.fail("the Ray head's job server did not come up in 90 s")
    yield {"address": f"http://127.0.0.1:{dash}", "env": env}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # Ray leaves helpers behind after SIGTERM
    except ProcessLookupError:
        pass
    shutil.rmtree(tmp, ignore_errors=True)


def test_submitted_pipeline_succeeds_and_is_tracked(head_node, tmp_path):
    storage = tmp_path / "runs"
    env = dict(head_node["env"], RAY_ADDRESS=head_node["address"], RAYKD_STORAGE=str(storage))
    r = subprocess.run(["bash", "jobs/quickstart.sh", "tests/fixtures/tinyjob.yaml", "train.epochs=2"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "succeeded" in out
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tinyjob")
    runs = client.search_runs([exp.experiment_id])
    parents = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
    kids = {x.data.tags["raykd.node"]: x for x in runs if "mlflow.parentRunId" in x.data.tags}
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert set(kids) == {"teacher", "kd"}
    assert all(k.info.status == "FINISHED" for k in kids.values())
    assert kids["kd"].data.tags["raykd.teacher_run_id"] == kids["teacher"].info.run_id
    assert [m.step for m in client.get_metric_history(kids["kd"].info.run_id, "val/top1")] == [1, 2]
    assert client.get_model_version_by_alias("tinyjob-kd", "final").run_id == kids["kd"].info.run_id


def test_script_rejects_relative_storage_before_submitting(tmp_path):
    env = dict(os.environ, RAY_ADDRESS="http://127.0.0.1:1", RAYKD_STORAGE="runs")
    r = subprocess.run(["bash", "jobs/quickstart.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "RAYKD_STORAGE must be an absolute path" in r.stderr
