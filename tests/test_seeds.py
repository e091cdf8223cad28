"""`seeds: [...]` on a node: one replicate node per seed, paired with seeded parents, pooled by integrations, and
reported as mean ± std (per-seed rows on request)."""

from __future__ import annotations

import copy
import statistics

import pytest

from conftest import TINY
from raykd.config import build_experiment
from raykd.errors import ConfigError
from raykd.pipeline import run_pipeline
from raykd.pipeline.plan import make_plan
from raykd.pipeline.summary import format_table, mean_std


def raw_with(**nodes):
    raw = copy.deepcopy(TINY)
    raw["nodes"].update(nodes)
    return raw


def test_seeds_expand_into_replicates_paired_with_seeded_parents_and_pooled_by_members():
    raw = raw_with(teacher={"model": "resnet8", "seeds": [0, 1]},
                   kd={"model": "resnet8", "teacher": "teacher", "method": {"name": "kd"}, "seeds": [0, 1]},
                   ens={"members": ["kd"], "method": {"name": "ensemble"}},
                   ta={"cascade": ["resnet8", "resnet8"], "teacher": "teacher", "method": {"name": "kd"},
                       "seeds": [0, 1]})
    raw["final"] = "kd"
    exp = build_experiment(raw)
    nodes = exp.nodes
    assert [n for n in nodes if n.startswith("kd")] == ["kd.seed0", "kd.seed1"]
    assert nodes["kd.seed1"].teacher == "teacher.seed1" and nodes["kd.seed1"].train.seed == 1
    assert nodes["kd.seed0"].seed_group == "kd" and nodes["vanilla"].seed_group is None
    assert nodes["ens"].members == ("kd.seed0", "kd.seed1")  # an ensemble over the seeds
    assert nodes["ta.seed1"].teacher == "ta.1.seed1" and nodes["ta.1.seed1"].teacher == "teacher.seed1"
    assert nodes["ta.1.seed0"].seed_group == "ta.1" and nodes["ta.seed0"].branch == "ta"
    assert exp.final == "kd.seed0"  # a seeded final: its first seed is registered
    plan = make_plan(exp)
    assert len({plan[f"kd.seed{s}"].hash for s in (0, 1)}) == 2  # replicates are distinct nodes


@pytest.mark.parametrize("nodes, message", [
    ({"kd": {"model": "resnet8", "seeds": [0, 1, 1]}}, r"each seed once: \[0, 1, 1\] repeats \[1\]"),
    ({"kd": {"model": "resnet8", "seeds": [0], "train": {"seed": 3}}}, "give either 'seeds: \\[0\\]'"),
    ({"teacher": {"model": "resnet8", "seeds": [0, 1]}},
     "nodes.kd.teacher: node 'teacher' has seeds \\[0, 1\\], so it is teacher.seed0, teacher.seed1: name one"),
    ({"teacher": {"model": "resnet8", "seeds": [0, 1]},
      "kd": {"model": "resnet8", "teacher": "teacher", "method": {"name": "kd"}, "seeds": [0, 2]}},
     "give 'kd' 'seeds: \\[0, 2\\]'|give 'kd' 'seeds: \\[0, 1\\]'"),
    ({"ens": {"members": ["vanilla"], "method": {"name": "ensemble"}}}, "at least 2 students"),
    ({"kd": {"model": "resnet8", "seeds": []}}, "seeds"),
])
def test_seed_mistakes_name_the_node_and_the_fix(nodes, message):
    with pytest.raises(ConfigError, match=message):
        build_experiment(raw_with(**nodes))


def test_the_summary_shows_mean_and_std_over_seeds_and_each_seed_on_request(tmp_path):
    raw = raw_with(kd={"model": "resnet8", "teacher": "teacher", "method": {"name": "kd"}, "seeds": [0, 1, 2]})
    raw["train"]["epochs"] = 1
    raw["final"] = "kd"
    raw["storage"] = str(tmp_path / "runs")
    result = run_pipeline(build_experiment(raw), executor="local", log=lambda *a: None)
    assert result.ok
    tops = [result.nodes[f"kd.seed{s}"].result["test/top1"] for s in (0, 1, 2)]
    expected = f"{statistics.mean(tops):.2f} ± {statistics.stdev(tops):.2f} (3 seeds)"
    table = format_table(result)
    kd_row = next(line for line in table.splitlines() if line.startswith("kd "))
    assert expected in kd_row and "3 runs" in kd_row
    assert "kd.seed1" not in table
    per_seed = format_table(result, per_seed=True)
    for s, top in enumerate(tops):
        assert any(line.strip().startswith(f"kd.seed{s}") and f"{top:.2f}" in line for line in per_seed.splitlines())
    assert mean_std([1.0]) == "1.00" and mean_std([1.0, 3.0]) == "2.00 ± 1.41 (2 seeds)"
    # the parent run compares the seeded node by its mean too, beside each seed's own number
    from mlflow.tracking import MlflowClient

    metrics = MlflowClient(result.tracking_uri).get_run(result.parent_run_id).data.metrics
    assert metrics["test_top1/kd"] == pytest.approx(round(statistics.mean(tops), 2))
    assert metrics["test_top1/kd.seed1"] == pytest.approx(round(tops[1], 2))
