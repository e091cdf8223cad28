"""Finished means verified: a node's output is checked against the size and sha256 recorded when it finished,
a damaged output is trained again (re-exported from an intact checkpoint), an unreadable checkpoint restarts
its node, and no message passes on torch's advice to load untrusted files with weights_only=False."""

import copy

import pytest

from raykd.config import build_experiment
from raykd.engine import RunContext, fit, load_student
from raykd.errors import RaykdError
from raykd.pipeline import make_plan, run_pipeline
from raykd.pipeline.store import NodeStore


def run(raw, logs=None):
    return run_pipeline(build_experiment(raw), executor="local", log=(logs.append if logs is not None else lambda *_: None))


def truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def trained(tiny_raw):
    """tiny_raw with teacher, vanilla and kd trained once (the first run's results and node folders)."""
    raw = copy.deepcopy(tiny_raw)
    first = run(raw)
    assert first.ok
    return raw, first, make_plan(build_experiment(raw))


def test_results_record_each_outputs_size_and_sha256(trained):
    raw, first, plan = trained
    for name, pn in plan.items():
        out = NodeStore(pn.dir).result()["output"]
        assert out["file"] == "final.pt" and out["size"] == (pn.dir / "final.pt").stat().st_size
        assert len(out["sha256"]) == 64


@pytest.mark.parametrize("damage", [truncate, lambda p: p.unlink(),
                                    lambda p: truncate(p.with_name("result.json"), 0.7)],
                         ids=["truncated", "deleted", "result.json truncated"])
def test_a_damaged_cached_output_is_trained_again_from_its_checkpoint(trained, damage):
    raw, first, plan = trained
    final = plan["teacher"].dir / "final.pt"
    damage(final)
    logs = []
    again = run(raw, logs)
    status = {n: o.status for n, o in again.nodes.items()}
    assert status == {"teacher": "trained", "vanilla": "cached", "kd": "cached"}, "only the damaged node"
    said = next(line for line in logs if "had finished, but" in line)
    assert "node 'teacher'" in said and str(plan["teacher"].dir) in said and "trained again" in said
    assert again.nodes["teacher"].result["test/top1"] == first.nodes["teacher"].result["test/top1"], \
        "re-exported from the intact last checkpoint: no epoch trained again"
    model, _ = load_student(final)  # a whole file again
    assert (plan["teacher"].dir / "result.json.stale").is_file()
    assert run(raw).nodes["teacher"].status == "cached"


def test_a_parent_changed_in_place_is_caught_by_its_hash_before_a_child_reads_it(trained):
    raw, first, plan = trained
    (plan["kd"].dir / "result.json").unlink()  # kd must run again, so it will read the teacher
    flip_a_byte(plan["teacher"].dir / "final.pt")  # same size: only the sha256 can tell
    logs = []
    again = run(raw, logs)
    assert again.ok and again.nodes["teacher"].status == "trained" and again.nodes["kd"].status == "trained"
    assert any("node 'teacher' had finished, but" in line and "sha256" in line for line in logs)
    assert again.nodes["vanilla"].status == "cached"


def test_a_changed_output_nobody_reads_is_only_size_checked(trained):
    raw, first, plan = trained
    flip_a_byte(plan["vanilla"].dir / "final.pt")  # a leaf: no node of this run loads it
    assert all(o.status == "cached" for o in run(raw).nodes.values())


def test_an_unreadable_checkpoint_restarts_its_node_and_names_the_file(tmp_path, tiny_raw):
    pn = make_plan(build_experiment(tiny_raw))["vanilla"]

    class Stop(Exception):
        pass

    def stop(epoch, metrics):
        raise Stop

    with pytest.raises(Stop):
        fit(pn.node, RunContext(out_dir=pn.dir, log=lambda *_: None, on_epoch=stop))
    truncate(pn.dir / "checkpoint.pt")
    logs = []
    result = fit(pn.node, RunContext(out_dir=pn.dir, log=logs.append))
    said = next(line for line in logs if "not a readable raykd file" in line)
    assert str(pn.dir / "checkpoint.pt") in said and "Restarting the node from epoch 1" in said
    assert "weights_only" not in "\n".join(logs)
    assert (pn.dir / "checkpoint.pt.corrupt").is_file() and result["epochs"] == 2
    assert any("epoch 1/2" in line for line in logs), "trained from the first epoch"


def test_a_lost_best_checkpoint_falls_back_to_the_last_weights(tmp_path, tiny_raw):
    pn = make_plan(build_experiment(tiny_raw))["vanilla"]
    fit(pn.node, RunContext(out_dir=pn.dir, log=lambda *_: None))
    (pn.dir / "final.pt").unlink()
    flip = pn.dir / "best.pt"
    truncate(flip)
    logs = []
    result = fit(pn.node, RunContext(out_dir=pn.dir, log=logs.append))  # resumes after the last epoch
    assert any(str(flip) in line and "last epoch's stand in" in line for line in logs)
    assert result["best/epoch"] == 2 and result["best/test_top1"] == result["test/top1"]


@pytest.mark.parametrize("damage", [truncate, flip_a_byte, lambda p: p.write_bytes(b"not a checkpoint")])
def test_a_damaged_student_file_names_itself_without_torch_advice(tmp_path, damage):
    from raykd import models
    from raykd.engine.student_file import save_student

    path = tmp_path / "final.pt"
    save_student(path, models.create("resnet8", 10), model_name="resnet8", num_classes=10, model_kwargs={},
                 mean=[0.0] * 3, std=[1.0] * 3, data={}, metrics={})
    damage(path)
    try:
        load_student(path)
    except RaykdError as e:
        assert str(path) in str(e) and "weights_only" not in str(e)
    else:  # a flipped byte inside a tensor's data is still a readable file: the result's sha256 catches that
        assert damage is flip_a_byte


# --- a store is self-contained: copy it or move it, and it keeps working where it is ----------------------

def _artifact_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("how", ["copied", "moved"])
def test_a_copied_or_moved_store_writes_and_reads_its_own_artifacts(tmp_path, trained, how):
    import shutil

    from mlflow.tracking import MlflowClient

    raw, first, plan = trained
    old = tmp_path / "runs"
    assert old == build_experiment(raw).storage
    new = tmp_path / f"runs-{how}"
    before = _artifact_files(old / "mlartifacts")
    if how == "copied":
        shutil.copytree(old, new, symlinks=True)
    else:
        old.rename(new)
    logs = []
    raw2 = dict(copy.deepcopy(raw), storage=str(new))
    again = run_pipeline(build_experiment(raw2, ["+nodes.extra.model=resnet8", "+nodes.extra.train.seed=9"]),
                         executor="local", log=logs.append)
    assert again.ok and again.nodes["teacher"].status == "cached" and again.nodes["extra"].status == "trained"
    assert any(f"copied or moved from '{old}'" in line for line in logs)
    client = MlflowClient(again.tracking_uri)
    assert str(new / "mlflow.db") in again.tracking_uri
    for name in ("extra", "teacher"):
        uri = client.get_run(again.nodes[name].run_id).info.artifact_uri
        assert uri.startswith((new / "mlartifacts").as_uri()), (name, uri)
        assert client.list_artifacts(again.nodes[name].run_id), f"{name}'s artifacts are readable in the new place"
    if how == "copied":
        assert _artifact_files(old / "mlartifacts") == before, "nothing written into the original store"
    assert not any("copied or moved" in line for line in _rerun(raw2)), "relocated once"


def _rerun(raw):
    logs = []
    assert run_pipeline(build_experiment(raw), executor="local", log=logs.append).ok
    return logs
