"""The table printed at the end of `raykd run`: one row per node, and one per seeded node (`seeds: [...]`) with
mean +/- std over its seeds (its replicates' own rows follow on request)."""

from __future__ import annotations

import statistics

from raykd.pipeline.run import NodeOutcome, PipelineResult
from raykd.text_table import aligned

COLUMNS = ("node", "method", "model", "from", "params", "test top-1 (last)", "test top-1 (best val)",
           "ms/input", "seconds", "status", "MLflow run")


def mean_std(values: list[float]) -> str:
    """'95.69 ± 0.51 (3 seeds)'; the sample std (ddof 1), as papers report replicates; one value as it is."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)} seeds)"


def _row(name: str, o: NodeOutcome) -> tuple[str, ...]:
    r = o.result
    pct = (lambda k: f"{r[k]:.2f}" if k in r else "-")
    node = o.plan.node
    source = node.teacher or ("+".join(node.members) if node.members else f"init:{node.init}" if node.init else "-")
    return (
        name, node.method.name + (f" ({node.method.substage})" if hasattr(node.method, "substage") else ""),
        node.model, source,
        f"{r['params'] / 1e6:.3f}M" if "params" in r else "-",
        pct("test/top1"), pct("best/test_top1"),
        f"{r['latency_ms']:.2f}" if "latency_ms" in r else "-",
        f"{r.get('seconds', o.seconds):.0f}" if r or o.seconds else "-",
        o.status, o.run_id or "-",
    )


def _group_row(group: str, members: list[NodeOutcome]) -> tuple[str, ...]:
    first = _row(group, members[0])
    rs = [o.result for o in members]
    stat = (lambda k: mean_std([r[k] for r in rs]) if all(k in r for r in rs) else "-")
    latency = [r["latency_ms"] for r in rs if "latency_ms" in r]
    statuses = sorted({o.status for o in members})
    source = first[3].replace(".seed" + str(members[0].plan.node.train.seed), "")  # paired parents: the group
    return (group, first[1], first[2], source, first[4], stat("test/top1"), stat("best/test_top1"),
            f"{statistics.mean(latency):.2f}" if latency else "-",
            f"{sum(r.get('seconds', o.seconds) for r, o in zip(rs, members)):.0f}",
            statuses[0] if len(statuses) == 1 else "/".join(statuses), f"{len(members)} runs")


def rows(result: PipelineResult, per_seed: bool = False) -> list[tuple[str, ...]]:
    """Nodes in pipeline order; a seeded node's replicates collapse into one row where its first one stands."""
    groups: dict[str, list[NodeOutcome]] = {}
    for o in result.nodes.values():
        if o.plan.node.seed_group:
            groups.setdefault(o.plan.node.seed_group, []).append(o)
    out = []
    for name, o in result.nodes.items():
        group = o.plan.node.seed_group
        if group is None:
            out.append(_row(name, o))
        elif groups[group][0] is o:
            out.append(_group_row(group, groups[group]))
            if per_seed:
                out.extend(_row("  " + m.name, m) for m in groups[group])
    return out


def format_table(result: PipelineResult, per_seed: bool = False) -> str:
    out = aligned(COLUMNS, rows(result, per_seed))
    if result.registered:
        out.append(f"\nregistered: models:/{result.registered[0]}@final (version {result.registered[1]})")
    out.append(f"MLflow: {result.tracking_uri}  parent run {result.parent_run_id}  (browse with `raykd ui`)")
    for o in result.nodes.values():
        if o.error:
            out.append(f"{o.name}: {o.error}")
    return "\n".join(out)
