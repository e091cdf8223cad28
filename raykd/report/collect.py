"""The node runs of one pipeline invocation, read from MLflow.

A re-run pipeline does not retrain cached nodes, so their runs stay children of the invocation that
trained them; every parent run names each node's run in a tag `raykd.node.<name>.run_id`, and those
tags are what this follows. Children without such a tag (a tag MLflow missed, a sweep's trials) are
added after them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NODE_TAG_PREFIX, NODE_TAG_SUFFIX = "raykd.node.", ".run_id"


@dataclass
class NodeRun:
    """One row of the per-run table: a node run (or a sweep trial) with its metrics' last values."""

    name: str
    run_id: str
    group: str  # its seed group (`seeds: [...]`), sweep config, or its own name
    seed: int | None
    method: str
    model: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    seeded: bool = False  # a replicate (tag raykd.seed_group) or a sweep trial grouped by its config
    trial: bool = False
    cached_from: str | None = None  # a cached sweep trial's run logs only final numbers; its trainer's has the rest

    @property
    def source_run_id(self) -> str:
        """The run holding this node's metric history and checkpoint."""
        return self.cached_from or self.run_id


def collect_runs(client, parent) -> tuple[list[NodeRun], list[str]]:
    """The parent's node runs in pipeline order, and notes on what could not be read."""
    tags = parent.data.tags
    named = {k[len(NODE_TAG_PREFIX):-len(NODE_TAG_SUFFIX)]: v for k, v in tags.items()
             if k.startswith(NODE_TAG_PREFIX) and k.endswith(NODE_TAG_SUFFIX)}
    planned = [n for n in parent.data.params.get("nodes", "").split(",") if n]  # the plan's order
    children = _children(client, parent)
    by_id = {r.info.run_id: r for r in children}
    notes: list[str] = []
    missing: list[str] = []
    runs = {}
    for name in planned + [n for n in named if n not in planned]:
        run_id = named.get(name)
        if not run_id:
            missing.append(name)
            continue
        run = by_id.get(run_id) or _get(client, run_id)
        if run is None or run.info.lifecycle_stage == "deleted":
            notes.append(f"node '{name}': its run {run_id} is not in MLflow (deleted?)")
            continue
        runs[name] = run
    unplanned = [n for n in runs if n not in planned]  # no plan recorded: in the order they started
    ordered = [runs[n] for n in planned if n in runs] + sorted((runs[n] for n in unplanned),
                                                               key=lambda r: r.info.start_time or 0)
    seen = {r.info.run_id for r in ordered}
    ordered += [r for r in children if r.info.run_id not in seen]
    out = [to_node_run(r) for r in ordered]
    groups = {r.group for r in out}
    notes += [f"node '{n}' has no run in MLflow (it never started, or MLflow was down)" for n in missing
              if n not in groups]
    return out, notes


def to_node_run(run) -> NodeRun:
    tags, params = run.data.tags, run.data.params
    trial = tags.get("raykd.sweep_role") == "trial"
    name = (run.info.run_name or run.info.run_id) if trial else tags.get("raykd.node") or run.info.run_name
    group = (tags.get("raykd.sweep_config") if trial else None) or tags.get("raykd.seed_group") or name
    method = tags.get("raykd.method") or params.get("method.name") or "-"
    if params.get("method.substage"):
        method += f" ({params['method.substage']})"
    seed = tags.get("raykd.seed")
    return NodeRun(name=name, run_id=run.info.run_id, group=group, seed=int(seed) if seed and seed.isdigit() else None,
                   method=method, model=tags.get("raykd.model") or params.get("model") or "-", status=run.info.status,
                   metrics=dict(run.data.metrics), seeded=group != name, trial=trial,
                   cached_from=tags.get("raykd.cached_from_run_id") or None)


def _children(client, parent) -> list:
    """The parent's child runs, oldest first (the order they started in)."""
    out, token = [], None
    while True:
        page = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                  max_results=1000, order_by=["attributes.start_time ASC"], page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def _get(client, run_id: str):
    try:
        return client.get_run(run_id)
    except Exception:  # noqa: BLE001 - a run deleted for good, or of a store it was copied from
        return None
