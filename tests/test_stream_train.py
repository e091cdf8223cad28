"""Training through the streaming path in-process (the engine's `fit`): a bad file mid-run, clips, CS-KD's
class pairs, and `stream: auto` keeping small sets on the device path. (On Ray with DDP: test_ray_pipeline.)"""

import pytest
import torch

from media import write_jpeg_tree, write_ucf
from raykd.config import build_experiment
from raykd.engine import RunContext, fit
from raykd.engine import checkpoint as ckpt
from raykd.errors import DataError


class Stop(Exception):
    pass


def quiet(*_):
    pass


def _raw(root, storage, **data):
    return {"name": "s", "storage": str(storage),
            "data": {"name": "image_folder", "root": str(root), "stream": True, "image_size": 32, "batch_size": 8,
                     "eval_batch_size": 16, "loader_workers": 1, "val_fraction": 0.0, **data},
            "train": {"epochs": 2, "optimizer": {"lr": 0.05}},
            "nodes": {"student": {"model": "resnet8"}}, "final": "student"}


def test_a_bad_file_mid_run_stops_naming_it_keeps_the_checkpoint_and_skip_resumes_from_it(tmp_path):
    files = write_jpeg_tree(tmp_path / "tree", classes=3, per_class={"train": 8, "test": 2})
    node = build_experiment(_raw(tmp_path / "tree", tmp_path / "runs")).nodes["student"]
    out = tmp_path / "node"

    def stop_after_first(epoch, metrics):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        fit(node, RunContext(out_dir=out, on_epoch=stop_after_first, log=quiet))
    saved = (out / "checkpoint.pt").read_bytes()
    bad = files["train"][5]
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=f"cannot read '{bad}'.*data.on_corrupt: skip") as e:
        fit(node, RunContext(out_dir=out, log=quiet))
    assert ".cpp" not in str(e.value), "the decoder's source location is left out of the reason"
    assert (out / "checkpoint.pt").read_bytes() == saved, "the epoch-1 checkpoint is kept as it was"

    skip = build_experiment(_raw(tmp_path / "tree", tmp_path / "runs", on_corrupt="skip")).nodes["student"]
    logs = []
    result = fit(skip, RunContext(out_dir=out, log=logs.append))
    assert result["resumed_after_epoch"] == 1
    last = result["history"][-1]
    assert last["data/skipped_files"] == 1 and last["data/samples_read"] == last["data/samples_distinct"] == 23
    assert sum(f"skipping unreadable '{bad}'" in line for line in logs) == 1
    assert result["history"][0]["data/samples_read"] == 24, "epoch 1 (before the damage) read every image"


def test_streamed_clips_train_a_video_student_reading_every_clip_once(tmp_path):
    pytest.importorskip("av")
    root = tmp_path / "UCF-101"
    write_ucf(root, ["ApplyEyeMakeup", "Basketball", "Surfing"], per_class=4)
    raw = {"name": "v", "storage": str(tmp_path / "runs"),
           "data": {"name": "ucf101", "root": str(root), "stream": True, "frames": 4, "image_size": 16,
                    "batch_size": 4, "eval_batch_size": 8, "val_fraction": 0.0, "loader_workers": 1},
           "train": {"epochs": 2, "optimizer": {"lr": 0.05}},
           "nodes": {"student": {"model": "resnet8"}}, "final": "student"}
    node = build_experiment(raw).nodes["student"]
    result = fit(node, RunContext(out_dir=tmp_path / "node", log=quiet))
    assert [h["data/samples_read"] for h in result["history"]] == [9.0, 9.0]
    assert [h["data/samples_distinct"] for h in result["history"]] == [9.0, 9.0]
    assert result["steps_per_epoch"] == 2, "9 clips: one batch of 4 and the 5-clip remainder"
    blob = torch.load(tmp_path / "node" / "final.pt", weights_only=False)
    assert blob["video"] and blob["num_classes"] == 3


def test_cskd_class_pairs_stream_with_a_same_class_partner(tmp_path):
    write_jpeg_tree(tmp_path / "tree", classes=3, per_class={"train": 8, "test": 2})
    raw = _raw(tmp_path / "tree", tmp_path / "runs")
    raw["nodes"]["student"]["method"] = {"name": "cskd"}
    raw["train"]["epochs"] = 1
    result = fit(build_experiment(raw).nodes["student"], RunContext(out_dir=tmp_path / "node", log=quiet))
    assert result["history"][0]["train/cls"] > 0, "the partner's softened logits were distilled"
    assert result["history"][0]["data/samples_read"] == 24


def test_stream_auto_keeps_digits_on_the_device_path(tiny_raw, tmp_path):
    node = build_experiment(tiny_raw, ["train.epochs=1"]).nodes["vanilla"]
    assert node.data.stream == "auto"
    result = fit(node, RunContext(out_dir=tmp_path, log=quiet))
    assert not any(k.startswith("data/") for k in result["history"][0]), "no streaming loader was built"
    assert ckpt.load(tmp_path / "checkpoint.pt")["epoch"] == 1
