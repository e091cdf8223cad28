"""Several single-worker nodes on one GPU: fractional `gpus_per_worker` on a local Ray that declares a GPU (no real
GPU needed: Ray schedules by the declared count; the nodes train on the CPU torch finds)."""

import copy
import time

import pytest
import ray
from mlflow.tracking import MlflowClient

from raykd.config import build_experiment
from raykd.errors import ResourceError
from raykd.pipeline import run_pipeline
from raykd.pipeline.ray_node_task import cuda_index

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def ray_with_a_gpu():
    ray.init(num_cpus=2, num_gpus=1, logging_level="WARNING")
    yield
    ray.shutdown()


def test_four_quarter_gpu_nodes_share_the_gpu_at_once_and_a_fifth_waits(tiny_raw):
    raw = copy.deepcopy(tiny_raw)
    raw["resources"] = {"cpus_per_worker": 0.25, "gpus_per_worker": 0.25}  # CPUs for five: the GPU is the limit
    raw["data"]["train_limit"] = 512
    raw["nodes"] = {f"n{i}": {"model": "resnet8", "train": {"seed": i}} for i in range(5)}
    raw["final"] = "n4"  # registering the final student rewrites its run's end time
    result = run_pipeline(build_experiment(raw), executor="ray", log=lambda *_: None)
    assert result.ok, {n: o.error for n, o in result.nodes.items()}
    for o in result.nodes.values():
        assert o.result["ray/gpu_ids"] == "0", "each node held (a quarter of) GPU 0"
        assert o.result["device"] == "cpu", "a declared GPU torch cannot see: the node trains on the CPU"
    client = MlflowClient(result.tracking_uri)
    span = {n: (client.get_run(o.run_id).info.start_time, client.get_run(o.run_id).info.end_time)
            for n, o in result.nodes.items()}
    first = [span[f"n{i}"] for i in range(4)]
    assert max(s for s, _ in first) < min(e for _, e in first), "the four quarter-GPU nodes ran at once"
    assert span["n4"][0] >= min(e for _, e in first), "the fifth waited for a quarter of the GPU to come free"


def test_a_gpu_request_no_machine_can_hold_fails_up_front(tiny_raw):
    t0 = time.time()
    with pytest.raises(ResourceError, match=r"node 'kd' asks for 1 worker\(s\) x \(1 CPU, 2 GPU\)"):
        run_pipeline(build_experiment(tiny_raw, ["nodes.kd.resources.gpus_per_worker=2"]), executor="ray",
                     log=lambda *_: None)
    assert time.time() - t0 < 30


@pytest.mark.parametrize("gpu_id, visible, index", [
    ("0", None, 0), ("3", None, 3), ("3", "2,3", 1), ("GPU-bb", "GPU-aa,GPU-bb", 1), ("1", "", 1),
])
def test_rays_gpu_id_is_numbered_as_the_process_sees_its_gpus(gpu_id, visible, index):
    assert cuda_index(gpu_id, visible) == index
