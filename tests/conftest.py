"""Shared fixtures: tiny digits experiments that train in seconds on one CPU core."""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import pytest
import torch

os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.pop("MLFLOW_TRACKING_URI", None)
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TINY = {
    "name": "tiny",
    "data": {"name": "digits", "batch_size": 64, "train_limit": 256, "augment": {"crop_padding": 2, "flip": False}},
    "train": {"epochs": 2, "optimizer": {"lr": 0.05}, "schedule": {"name": "cosine"}},
    "nodes": {
        "teacher": {"model": "resnet8"},
        "vanilla": {"model": "resnet8"},
        "kd": {"model": "resnet8", "teacher": "teacher", "method": {"name": "kd"}},
    },
    "final": "kd",
}


@pytest.fixture
def tiny_raw(tmp_path):
    raw = copy.deepcopy(TINY)
    raw["storage"] = str(tmp_path / "runs")
    return raw


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
