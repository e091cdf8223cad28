"""The command line as a user meets it: listings, errors without tracebacks, eval, kill + resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import REPO
from raykd.methods import list_methods


def raykd(*args, cwd=REPO, timeout=300):
    return subprocess.run([sys.executable, "-m", "raykd.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_models_and_methods_listings():
    out = raykd("models").stdout
    assert "resnet8x4" in out and "1.234M" in out and "resnet32x4" in out and "7.434M" in out
    out = raykd("methods").stdout
    assert "kd " in out and "teacher" in out and "temperature=4.0" in out and "vanilla" in out
    for name in ("fitnet", "at", "sp", "vid", "ab", "fsp", "crd", "dkd", "pskd", "cskd", "byot", "tfkd", "dtskd"):
        assert f"\n{name} " in "\n" + out, name
    assert "self-teacher" in out and "nce_k=16384" in out
    dtskd = out[out.index("\ndtskd "):].split("\n")[1:4]
    assert "alpha1=0.2, alpha2=0.8" in dtskd[1] and "beta_max=0.9, beta_min=0.0" in dtskd[1]
    assert dtskd[2].strip().startswith("source: DTSKD official code: run_train.sh")
    mtkd = out[out.index("\nmtkd_ssr "):].split("\n")[1:4]
    assert "alpha=1.0, beta=1.0, gamma=1.0, t1=3.0, t2=2.0, review=all" in mtkd[1] and "(the paper states none)" in mtkd[2]
    assert "\nstage_probes init: model " in out
    assert {line.split()[0] for line in out.splitlines() if line and not line[0].isspace()} == {m for m in list_methods() if not m.startswith("test_")}  # tests may register test_* methods in this process
    baselines = {"reviewkd": ("kd_loss_weight=1.0, warmup_epochs=20.0", "ReviewKD official code"),
                 "hat": ("spatial_weight=1000.0, channel_weight=10.0, stage_ratio=0.1", "H-AT official code"),
                 "ccs": ("intra_weight=1.0, inter_weight=1.0", "reading of the CCS abstract"),
                 "tofd": ("alpha=0.05, beta=0.03, temperature=3.0", "TOFD official code"),
                 "dks": ("width_multiplier=2.0", "DKS official code"),
                 "frskd": ("alpha=2.0, beta=100.0, temperature=4.0, width=2", "FRSKD official code"),
                 "mixskd": ("mixup_alpha=0.4, temperature=3.0", "MixSKD official code")}
    for name, (defaults, source) in baselines.items():
        lines = out[out.index(f"\n{name} "):].split("\n")[1:4]
        assert defaults in lines[1] and lines[2].strip().startswith(f"source: {source}"), (name, lines)


def test_config_mistakes_exit_2_with_one_clear_message(tmp_path):
    r = raykd("run", "conf/quickstart.yaml", "train.epohcs=3")
    assert r.returncode == 2
    assert "train.epohcs: unknown key 'epohcs'. Did you mean 'epochs'?" in r.stderr
    assert "Traceback" not in r.stderr
    r = raykd("run", "conf/quickstrt.yaml")
    assert r.returncode == 2 and "Did you mean 'conf/quickstart.yaml'?" in r.stderr
    r = raykd("run", "conf/quickstart.yaml", "nodes.kd.teacher=teachr")
    assert r.returncode == 2 and "nodes.kd.teacher: no node named 'teachr'" in r.stderr


def _crafted(path, **blob):
    import torch

    torch.save({"format": 1, **blob}, path)
    return str(path)


def _cases(tmp_path):
    """(arguments, what the one paragraph must say) for inputs that used to end in a traceback."""
    (tmp_path / "afile").write_text("x")
    bad_weights = dict(model="resnet8", num_classes=10, model_kwargs={}, mean=[0.0] * 3, std=[1.0] * 3, data={},
                       state_dict={"x": 1})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(b"PK\x03\x04 not really a zip")
    return [
        (["run", "conf/digits/kd.yaml", f"storage={tmp_path / 'afile'}"], "storage: '" + str(tmp_path / "afile") + "' is a file"),
        (["run", "conf/digits/kd.yaml", f"storage={tmp_path / 'afile' / 'sub'}"], "' is a file; storage names a folder"),
        (["run", "conf/digits/kd.yaml", "storage=/proc/raykd-store"], "storage: '/proc/raykd-store' cannot be written"),
        (["run", "conf/digits/kd.yaml", "--num-cpus", "-1"], "argument --num-cpus: expected a whole number of CPUs >= 1, got '-1'"),
        (["run", "conf/digits/kd.yaml", "--num-cpus", "two"], "expected a whole number of CPUs >= 1, got 'two'"),
        (["ui", "--port", "0"], "argument --port: expected a port number >= 1, got '0'"),
        (["run", "conf/digits/kd.yaml", "tracking.register_as=team:model"], "tracking.register_as: a registered model name"),
        (["run", "conf/digits/kd.yaml", "nodes.studnt.model=resnet20"], "no node named 'studnt'. Did you mean 'student'?"),
        (["eval", "/"], "student file not found: '/'"),
        (["eval", _crafted(tmp_path / "header.pt", model="resnet8")], "header.pt' is not a usable raykd student file: its 'num_classes' is missing"),
        (["eval", _crafted(tmp_path / "model.pt", **{**bad_weights, "model": "os.system"})], "it names the model 'os.system'"),
        (["eval", _crafted(tmp_path / "weights.pt", **bad_weights)], "its weights do not build a resnet8"),
        (["eval", str(truncated)], "truncated.pt' is not a readable raykd file"),
    ]


def test_inputs_that_used_to_crash_exit_2_with_one_paragraph(tmp_path):
    for args, expected in _cases(tmp_path):
        r = raykd(*args, cwd=REPO)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert expected in r.stderr and "Traceback" not in r.stderr + r.stdout, (args, r.stderr)
        assert "weights_only" not in r.stderr
    assert not list((tmp_path / "afile").parent.glob("afile/*")) and (tmp_path / "afile").read_text() == "x"


def test_print_config_shows_resolved_nodes():
    r = raykd("run", "conf/quickstart.yaml", "train.epochs=3", "--print-config")
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    kd = cfg["nodes"]["kd.seed1"]  # the quickstart's kd has seeds [0, 1, 2]: one resolved node each
    assert kd["train"]["epochs"] == 3 and kd["method"]["temperature"] == 4.0 and kd["train"]["seed"] == 1
    assert "kd" not in cfg["nodes"] and "kd.seed2" in cfg["nodes"]
    assert cfg["nodes"]["teacher"]["resources"]["cpus_per_worker"] == 2.0
    # overrides may also follow the options
    r = raykd("run", "conf/quickstart.yaml", "--print-config", "--executor", "local", "train.epochs=4")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["nodes"]["kd.seed0"]["train"]["epochs"] == 4
    r = raykd("run", "conf/quickstart.yaml", "--bogus")
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr


def _config(tmp_path, kd_epochs):
    cfg = {
        "name": "killme", "storage": str(tmp_path / "runs"),
        "data": {"name": "digits", "batch_size": 64, "train_limit": 256, "augment": {"flip": False}},
        "train": {"epochs": 1},
        "nodes": {"teacher": {"model": "resnet8"},
                  "kd": {"model": "resnet8", "teacher": "teacher", "method": {"name": "kd"},
                         "train": {"epochs": kd_epochs}}},
    }
    path = tmp_path / "killme.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_killed_run_resumes_without_retraining_finished_nodes(tmp_path):
    path = _config(tmp_path, kd_epochs=6)
    proc = subprocess.Popen([sys.executable, "-m", "raykd.cli", "run", str(path), "--executor", "local"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    nodes = tmp_path / "runs" / "nodes"
    deadline = time.time() + 240
    while time.time() < deadline and not list(nodes.glob("kd-*/checkpoint.pt")):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up, like a lost machine
    proc.wait()
    teacher_dir = next(nodes.glob("teacher-*"))
    kd_dir = next(nodes.glob("kd-*"))
    assert (teacher_dir / "result.json").is_file() and not (kd_dir / "result.json").exists()
    teacher_mtime = (teacher_dir / "final.pt").stat().st_mtime_ns
    kd_run = json.loads((kd_dir / "run.json").read_text())["run_id"]

    r = raykd("run", str(path), "--executor", "local", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "node 'teacher' is cached" in r.stdout
    assert f"node 'kd' resumes (run {kd_run})" in r.stdout
    assert "resuming from" in r.stdout
    assert (teacher_dir / "final.pt").stat().st_mtime_ns == teacher_mtime, "teacher not retrained"
    assert (kd_dir / "result.json").is_file()
    assert "marked 2 run(s) of an earlier, killed invocation as KILLED" in r.stdout  # parent + kd
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    parents = client.search_runs([client.get_experiment_by_name("killme").experiment_id],
                                 "attributes.status != 'RUNNING'")
    statuses = sorted(p.info.status for p in parents if "mlflow.parentRunId" not in p.data.tags)
    assert statuses == ["FINISHED", "KILLED"], "the killed invocation's parent does not stay RUNNING"
    new_parent = next(p for p in parents if "mlflow.parentRunId" not in p.data.tags and p.info.status == "FINISHED")
    kids = client.search_runs([new_parent.info.experiment_id], f"tags.mlflow.parentRunId = '{new_parent.info.run_id}'")
    assert sorted(k.data.tags["raykd.node"] for k in kids) == ["kd", "teacher"], "the rerun's parent shows the whole pipeline"
    steps = [m.step for m in client.get_metric_history(kd_run, "val/top1")]
    assert len(steps) == len(set(steps)) and steps[-1] == 6, "one curve, continued, no epoch logged twice"
    assert client.get_run(kd_run).info.status == "FINISHED"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished teacher + kd pipeline (a local store) that the eval and ui tests both read."""
    tmp_path = tmp_path_factory.mktemp("trained")
    r = raykd("run", str(_config(tmp_path, kd_epochs=1)), "--executor", "local", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp_path


def test_eval_reports_the_trained_accuracy(trained):
    tmp_path = trained
    kd_dir = next((tmp_path / "runs" / "nodes").glob("kd-*"))
    expected = json.loads((kd_dir / "result.json").read_text())["test/top1"]
    r = raykd("eval", str(kd_dir / "final.pt"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"top-1 {expected:.2f}%" in r.stdout and "digits test (359 images)" in r.stdout
    r = raykd("eval", str(tmp_path / "nope.pt"), cwd=tmp_path)
    assert r.returncode == 2 and "student file not found" in r.stderr


def test_ui_serves_the_local_store(trained):
    import urllib.request

    from conftest import free_port

    tmp_path = trained
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "raykd.cli", "ui", "--storage", str(tmp_path / "runs"),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert f"at http://127.0.0.1:{port}" in line
        body = urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=killme", timeout=10).read()
        assert b'"name": "killme"' in body or b'"name":"killme"' in body
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    r = raykd("ui", "--storage", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "no MLflow store" in r.stderr


def test_ui_never_shows_another_servers_store(trained):
    import socket

    from raykd.cli import _ui_port

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        r = raykd("ui", "--storage", str(trained / "runs"), "--port", str(port))
        assert r.returncode == 2 and f"port {port} on 127.0.0.1 is in use by another program" in r.stderr
        assert "Traceback" not in r.stderr
        import raykd.cli as cli

        saved, cli.UI_PORT = cli.UI_PORT, port  # the default port taken: another one, said out loud
        try:
            chosen = _ui_port("127.0.0.1", None)
        finally:
            cli.UI_PORT = saved
        assert chosen != port and chosen > 0
    finally:
        busy.close()
