"""The DAG of runs: each node's identity is a content hash of what determines its result.

hash(node) = sha256(config that affects the weights, hashes of its parents). Two configs that
train the same thing share a node folder, so a re-run, a resumed run or another pipeline with
an identical teacher reuses finished work. Resources, names and tracking do not enter the hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from raykd.config import Experiment, ResolvedNode
from raykd.errors import ConfigError

HASH_VERSION = 1


@dataclass(frozen=True)
class PlanNode:
    name: str
    node: ResolvedNode
    hash: str
    parents: tuple[str, ...]
    dir: Path

    @property
    def short(self) -> str:
        return self.hash[:12]


def node_hash(node: ResolvedNode, parent_hashes: dict[str, str]) -> str:
    payload = {"v": HASH_VERSION, "node": node.semantic_dict(), "parents": parent_hashes}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def make_plan(exp: Experiment) -> dict[str, PlanNode]:
    """Nodes in topological order (parents first), hashed and placed under storage/nodes."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:  # validated away by the config, kept as a guard
            raise ValueError(f"cycle through node '{name}'")
        visiting.add(name)
        for parent in parents_of(exp.nodes[name]):
            visit(parent)
        visiting.discard(name)
        order.append(name)

    for name in exp.nodes:
        visit(name)
    plan: dict[str, PlanNode] = {}
    for name in order:
        node = exp.nodes[name]
        parents = parents_of(node)
        parent_hashes = {role: plan[p].hash for role, p in
                         (("teacher", node.teacher), ("init", node.init), ("dataset", node.dataset)) if p}
        if node.members:
            parent_hashes["members"] = [plan[m].hash for m in node.members]
        h = node_hash(node, parent_hashes)
        plan[name] = PlanNode(name, node, h, parents, node_dir(exp.storage, name, h))
    return plan


def node_dir(storage: Path, name: str, h: str) -> Path:
    """storage/nodes/<name>-<hash>, checked to be a folder directly inside storage/nodes whatever the name
    (the config refuses names with separators; this holds even for a name that got past it)."""
    root = (storage / "nodes").resolve()
    path = (root / f"{name}-{h[:12]}").resolve()
    if path.parent != root:
        raise ConfigError(f"nodes: the node name {name!r} would place its folder at '{path}', outside '{root}'.")
    return path


def parents_of(node) -> tuple[str, ...]:
    """The nodes this one needs finished first: its teacher, the node it starts from, the package
    set it trains on, its members."""
    return tuple(dict.fromkeys(p for p in (node.teacher, node.init, node.dataset, *node.members) if p))
