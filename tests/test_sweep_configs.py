"""The paper sweeps in conf/sweeps/ (no training): each loads, every config its space can produce is valid
(`prepare`), and its grid has the size of the paper's table or figure; jobs/tune.sh is valid bash and submits
`raykd tune` with an absolute storage path."""

from __future__ import annotations

import math
import os
import stat
import subprocess
from pathlib import Path

import pytest

from raykd.sweep import space
from raykd.sweep.run import load_sweep, prepare
from conftest import REPO

SWEEPS = REPO / "conf" / "sweeps"

# file -> the grid each paper sweep must describe: {field: values, as the paper prints them}
PAPER_GRIDS = {
    # SKD Table XI: DF's top-K
    "skd_topk_cifar100.yaml": {"method.top_k": [2, 4, 8, 16, 32]},
    # MTKD-SSR Figs. 3-4 (sec. 4.2): T1, T2 in {1.5, 2.0, 3.0, 4.5, 6.0, 8.0}
    "mtkd_ssr_t1_t2_cifar100.yaml": {"method.t1": [1.5, 2.0, 3.0, 4.5, 6.0, 8.0],
                                     "method.t2": [1.5, 2.0, 3.0, 4.5, 6.0, 8.0]},
    # DTSKD Table 10: [beta_max, beta_min] (the table's cross of ten, as a 5 x 6 product)
    "dtskd_beta_cifar100.yaml": {"method.beta_max": [1.0, 0.9, 0.8, 0.7, 0.6],
                                 "method.beta_min": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]},
    # DTSKD Table 9: decay strategies (fixed ratio 0.6/0.7/0.8, linear and cosine from 0.9)
    "dtskd_decay_cifar100.yaml": {"method.decay": ["fixed", "linear", "cosine"],
                                  "method.beta_max": [0.6, 0.7, 0.8, 0.9]},
    # DTSKD Table 11: HD/SD weights, alpha2 = 1 - alpha1
    "dtskd_weights_cifar100.yaml": {"method.alpha1": [0.2, 0.4, 0.6, 0.8]},
}
SIZES = {"skd_topk_cifar100.yaml": 5, "mtkd_ssr_t1_t2_cifar100.yaml": 36, "dtskd_beta_cifar100.yaml": 30,
         "dtskd_decay_cifar100.yaml": 12, "dtskd_weights_cifar100.yaml": 4}
ALL = sorted(p.name for p in SWEEPS.glob("*.yaml"))


def test_every_paper_sweep_is_here():
    assert set(PAPER_GRIDS) <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_sweep_loads_and_every_config_of_its_space_is_valid(name):
    exp, raw = load_sweep(SWEEPS / name)
    sweep, trial_raw, checked = prepare(exp, raw)
    assert sweep.node in trial_raw["nodes"]
    assert not sweep.metric.startswith("test/")
    dims = space.free(sweep).values()
    if all(d.values is not None for d in dims):
        size = math.prod(len(d.values) for d in dims)  # replicates (seeds) are checked with their first seed
        per_dimension = sum(len(d.values) for d in dims) + bool(sweep.seeds)
        assert checked == (size if size <= space.GRID_CHECK_LIMIT else per_dimension)
    else:
        assert checked >= len(dims)


@pytest.mark.parametrize("name", sorted(PAPER_GRIDS))
def test_paper_sweep_has_the_papers_grid(name):
    exp, raw = load_sweep(SWEEPS / name)
    sweep, trial_raw, _ = prepare(exp, raw)
    free = space.free(sweep)
    assert {f: d.values for f, d in free.items()} == PAPER_GRIDS[name]
    assert math.prod(len(d.values) for d in free.values()) == SIZES[name]
    assert sweep.search == "grid" and sweep.metric == "val/top1"
    assert sweep.then.retrain and sweep.then.seeds == [0, 1, 2]
    text = (SWEEPS / name).read_text()
    assert text.startswith("#") and "raykd tune conf/sweeps/" + name in text and "jobs/tune.sh" in text
    # the retrain runs the whole best.yaml: only the tuned node and its parents may be in it
    assert set(raw["nodes"]) == set(trial_raw["nodes"])
    assert raw["final"] == sweep.node


def test_mtkd_ssr_and_dtskd_beta_grids_use_asha_with_a_rung_after_the_first_lr_decay():
    for name in ("mtkd_ssr_t1_t2_cifar100.yaml", "dtskd_beta_cifar100.yaml"):
        exp, raw = load_sweep(SWEEPS / name)
        first_decay = raw["train"]["schedule"]["milestones"][0]
        sweep = exp.config.sweep
        assert sweep.scheduler == "asha" and first_decay < sweep.grace_period < raw["train"]["epochs"]


def test_dtskd_weights_are_tied_to_sum_to_one_exactly():
    exp, raw = load_sweep(SWEEPS / "dtskd_weights_cifar100.yaml")
    sweep, _, _ = prepare(exp, raw)
    pairs = [space.complete(sweep, {"method.alpha1": a}) for a in space.free(sweep)["method.alpha1"].values]
    assert [(v["method.alpha1"], v["method.alpha2"]) for v in pairs] == [(0.2, 0.8), (0.4, 0.6), (0.6, 0.4), (0.8, 0.2)]


def test_skd_topk_tunes_a_single_feature_substage_link():
    exp, raw = load_sweep(SWEEPS / "skd_topk_cifar100.yaml")
    node = raw["nodes"][exp.config.sweep.node]
    assert "cascade" not in node and node["method"] == {"name": "skd", "substage": "feature"}


# --- jobs/tune.sh ------------------------------------------------------------------------------------------

TUNE_SH = REPO / "jobs" / "tune.sh"


def test_tune_script_is_valid_bash_and_executable():
    r = subprocess.run(["bash", "-n", str(TUNE_SH)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert TUNE_SH.stat().st_mode & stat.S_IXUSR


def _fake_ray(tmp_path: Path) -> dict[str, str]:
    """A `ray` on the PATH that prints its arguments, one a line, instead of submitting."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ray"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYKD_", "RAY_AUTH", "MLFLOW_"))}
    return dict(env, PATH=f"{bin_dir}:{env['PATH']}", RAY_ADDRESS="http://127.0.0.1:1", HOME=str(tmp_path))


def test_tune_script_submits_raykd_tune_with_an_absolute_storage(tmp_path):
    env = dict(_fake_ray(tmp_path), RAYKD_STORAGE=str(tmp_path / "store"))
    r = subprocess.run(["bash", str(TUNE_SH), "conf/sweeps/mtkd_ssr_t1_t2_cifar100.yaml", "data.root=/datasets"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)  # any cwd: it cds to the repo
    assert r.returncode == 0, r.stderr
    args = r.stdout.splitlines()
    assert args[:3] == ["job", "submit", "--address"] and "--working-dir" in args and "--runtime-env-json" in args
    assert args[args.index("--") + 1:] == ["python", "-m", "raykd.cli", "tune",
                                           "conf/sweeps/mtkd_ssr_t1_t2_cifar100.yaml",
                                           f"storage={tmp_path / 'store'}", "data.root=/datasets"]


@pytest.mark.parametrize("storage, config, message", [
    ("runs", "conf/sweeps/digits_kd.yaml", "RAYKD_STORAGE must be an absolute path"),
    ("/abs", "conf/sweeps/nope.yaml", "config file not found"),
])
def test_tune_script_refuses_before_submitting(tmp_path, storage, config, message):
    env = dict(_fake_ray(tmp_path), RAYKD_STORAGE=storage)
    r = subprocess.run(["bash", str(TUNE_SH), config], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr and r.stdout == ""
