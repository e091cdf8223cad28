"""Seed replicates folded into one row, as papers report them: mean +/- sample standard deviation.

The std is the sample one (ddof 1: replicates estimate the spread of a method, not of these runs); a
group with one run shows its value alone. Runs without a metric (a failed seed) do not count for it,
and the row says how many did.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from raykd.report.collect import NodeRun

TOP1_BEST, TOP1_LAST = "best/test_top1", "test/top1"


@dataclass
class Group:
    name: str
    runs: list[NodeRun]

    @property
    def seeded(self) -> bool:
        return any(r.seeded for r in self.runs)

    def values(self, key: str) -> list[float]:
        return [r.metrics[key] for r in self.runs if key in r.metrics]

    def same(self, attr: str) -> str:
        """The members' method or model: one value, or each distinct one joined by '/'."""
        return "/".join(dict.fromkeys(getattr(r, attr) for r in self.runs))


def group_runs(runs: list[NodeRun]) -> list[Group]:
    """Groups in the order their first run appears; within a group, runs by seed."""
    groups: dict[str, Group] = {}
    for r in runs:
        groups.setdefault(r.group, Group(r.group, [])).runs.append(r)
    for g in groups.values():
        g.runs.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, r.name))
    return list(groups.values())


def mean_std(values: list[float]) -> tuple[float, float | None, int] | None:
    """(mean, sample std or None with one value, n), or None with no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0], None, 1
    return statistics.mean(values), statistics.stdev(values), len(values)


def mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None
