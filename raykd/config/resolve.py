"""From a validated schema to runnable nodes: cascades expanded, shared sections merged in, each node's method
config validated by its method, references, names, cycles and model shapes checked; every problem found
in one pass and reported together."""

from __future__ import annotations

import copy
import difflib
import re
from typing import Any

from pydantic import ValidationError

from raykd.config.schema import (CascadeLink, DataConfig, ExperimentConfig, NodeConfig, ResolvedNode, ResourcesConfig,
                                 TrainConfig)
from raykd.errors import ConfigError
from raykd.strict import format_validation_error, where

def resolve_nodes(cfg: ExperimentConfig, raw: dict[str, Any], source: str | None) -> dict[str, ResolvedNode]:
    from raykd import integrate, methods, models  # deferred: config stays importable without torch work

    problems: list[str] = []
    resolved: dict[str, ResolvedNode] = {}
    if not cfg.nodes:
        raise ConfigError(where(source) + "'nodes' is empty: define at least one training run.")
    problems.extend(_bad_node_name(name) for name in cfg.nodes if not NODE_NAME.fullmatch(name))
    if problems:
        raise ConfigError(where(source) + "invalid config:\n  " + "\n  ".join(problems))
    nodes, lineage = _expand_cascades(cfg.nodes, problems)
    nodes, groups = _expand_seeds(nodes, problems)
    section_types = {"train": TrainConfig, "data": DataConfig, "resources": ResourcesConfig}
    known_models = models.list_models()

    def unknown_node(name: str, key: str, ref: str) -> str:
        return _unknown_node(nodes, name, key, ref)

    for name, node in nodes.items():
        prefix = ("nodes", name)
        merged: dict[str, Any] = {}
        for section, typ in section_types.items():
            base = raw.get(section) or {}
            data = deep_merge(base, getattr(node, section))
            try:
                merged[section] = typ.model_validate(data)
            except ValidationError as e:
                problems.append(format_validation_error(e, typ, ".".join(prefix + (section,))))
        if node.members is not None:
            try:
                method_cfg = integrate.validate_integration_config(node.method, where=f"nodes.{name}.method")
            except ConfigError as e:
                problems.append(str(e))
            problems.extend(_keys_not_allowed(name, node, ("teacher", "init", "model"),
                                              "an integration node (members: ...) combines finished students"))
            problems.extend(unknown_node(name, "members", m) for m in node.members if m not in nodes)
            if len(node.members) < 2:
                problems.append(f"nodes.{name}.members: an integration combines at least 2 students (or one node "
                                f"with 'seeds: [...]', which gives one student per seed); got {node.members}.")
            if problems:
                continue
            resolved[name] = ResolvedNode(
                name=name, model=_integrated_model(node, nodes, method_cfg.name), model_kwargs={},
                method=method_cfg, teacher=None, members=tuple(node.members), seed_group=groups.get(name), **merged)
            continue
        if isinstance(node.method, dict) and node.method.get("name") == "packages":
            resolved_pkg = _resolve_packages(name, node, merged, nodes, problems)
            if resolved_pkg is not None and not problems:
                resolved[name] = resolved_pkg
            continue
        if isinstance(node.method, dict) and node.method.get("name") in integrate.INTEGRATIONS:
            problems.append(f"nodes.{name}.method: '{node.method['name']}' integrates finished students: give the "
                            f"node 'members: [<node>, <node>, ...]' instead of a model.")
            continue
        if node.model is None:
            problems.append(f"nodes.{name}.model: required key is missing (or give 'cascade: [...]' or 'members: [...]').")
        elif node.model not in known_models:
            close = difflib.get_close_matches(node.model, known_models, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else " Run `raykd models` for the list."
            problems.append(f"nodes.{name}.model: unknown model '{node.model}'.{hint}")
        method_cfg = None
        try:
            method_cfg = methods.validate_method_config(node.method, where=f"nodes.{name}.method")
        except ConfigError as e:
            problems.append(str(e))
        if node.teacher is not None and node.teacher not in nodes:
            problems.append(unknown_node(name, "teacher", node.teacher))
        if node.dataset is not None:
            source = nodes.get(node.dataset)
            if source is None:
                problems.append(unknown_node(name, "dataset", node.dataset))
            elif source.method.get("name") != "packages":
                problems.append(f"nodes.{name}.dataset: node '{node.dataset}' does not build a dataset; 'dataset' "
                                f"names a node with 'method: {{name: packages}}'.")
        if node.init is not None:
            init = nodes.get(node.init)
            if init is None:
                problems.append(unknown_node(name, "init", node.init))
            elif not _same_architecture(init, node):
                problems.append(f"nodes.{name}.init: node '{node.init}' trains {_architecture(init)} but this node "
                                f"trains {_architecture(node)}; 'init' starts from that node's weights, so the "
                                f"architectures must match.")
        if method_cfg is not None:
            needs = methods.get_method(method_cfg.name).needs_teacher
            if needs and node.teacher is None:
                problems.append(f"nodes.{name}: method '{method_cfg.name}' needs a teacher; add 'teacher: <node name>'.")
            teacher = nodes.get(node.teacher) if node.teacher else None
            if methods.get_method(method_cfg.name).teacher_is_self and teacher is not None and \
                    not _same_architecture(teacher, node):
                problems.append(f"nodes.{name}.teacher: method '{method_cfg.name}' is self-training, so its teacher "
                                f"must train the same model, but '{node.teacher}' trains {_architecture(teacher)} "
                                f"and this node {_architecture(node)}.")
            if not needs and node.teacher is not None:
                problems.append(f"nodes.{name}: method '{method_cfg.name}' does not use a teacher, but 'teacher: {node.teacher}' is set.")
            if teacher is not None and isinstance(teacher.method, dict):
                message = methods.get_method(method_cfg.name).check_teacher_node(method_cfg, teacher.method.get("name"))
                if message:
                    problems.append(f"nodes.{name}.teacher: {message}")
            if methods.get_method(method_cfg.name).needs_init and node.init is None:
                problems.append(f"nodes.{name}: method '{method_cfg.name}' works on a trained model; add 'init: <node>' "
                                f"naming the node that trained it (its model must be this node's model).")
        if problems:
            continue
        branch, level = lineage.get(groups.get(name, name), (None, None))
        resolved[name] = ResolvedNode(
            name=name, model=node.model, model_kwargs=node.model_kwargs, method=method_cfg,
            teacher=node.teacher, init=node.init, dataset=node.dataset, branch=branch, level=level,
            seed_group=groups.get(name), **merged,
        )
    if cfg.sweep is not None and cfg.sweep.node not in cfg.nodes:
        problems.append(_unknown_node(cfg.nodes, "", "", cfg.sweep.node).replace("nodes..: ", "sweep.node: "))
    if cfg.final is not None and cfg.final not in nodes and cfg.final not in groups.values():
        problems.append(f"final: no node named '{cfg.final}'. Nodes: {', '.join(nodes)}.")
    if not problems:
        cycle = _find_cycle({n: [p for p in (node.teacher, node.init, node.dataset, *(node.members or ())) if p]
                             for n, node in nodes.items()})
        if cycle:
            problems.append("nodes form a cycle through 'teacher'/'init'/'members': " + " -> ".join(cycle) + ".")
    if not problems:
        problems.extend(integrate.check_members(resolved))
        problems.extend(_check_models(resolved))
    if problems:
        problems = _as_written(problems, groups)
        raise ConfigError(where(source) + "invalid config:\n  " + "\n  ".join(problems))
    return resolved


NODE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def _bad_node_name(name: str) -> str:
    """A node name becomes a folder under the storage and an MLflow run name: no separators, no '..', no
    invisible characters."""
    return (f"nodes: the node name {name!r} is not allowed: names use letters, digits, '_', '.' and '-' (ASCII), "
            f"start with a letter, a digit or '_', and have 1 to 100 characters (each is a folder under the "
            f"storage and an MLflow run name).")


def _expand_cascades(nodes: dict[str, NodeConfig], problems: list[str]):
    """`cascade: [a_1, ..., a_N]` on node X becomes N nodes, X.1 ... X.(N-1) and X itself (the last
    link, so other nodes keep referring to the branch's student as X), each taught by the previous
    link and the first by X's teacher. Returns the nodes and {link: (branch, level)}."""
    out: dict[str, NodeConfig] = {}
    lineage: dict[str, tuple[str, int]] = {}
    for name, node in nodes.items():
        if node.cascade is None:
            out[name] = node
            continue
        links = [CascadeLink(model=c) if isinstance(c, str) else c for c in node.cascade]
        bad = False
        if node.members is not None or node.init is not None:
            problems.append(f"nodes.{name}.cascade: a cascade cannot also have "
                            f"'{'members' if node.members is not None else 'init'}'.")
            bad = True
        if node.teacher is None:
            problems.append(f"nodes.{name}.cascade: a cascade starts from a teacher; add 'teacher: <node name>'.")
            bad = True
        last = links[-1]
        if node.model is not None and (node.model, node.model_kwargs) != (last.model, last.model_kwargs or node.model_kwargs):
            problems.append(f"nodes.{name}.model: '{node.model}' but the cascade ends with '{last.model}'; the last "
                            f"cascade entry is the student, so drop 'model' or make them agree.")
            bad = True
        names = [f"{name}.{i}" for i in range(1, len(links))] + [name]
        clash = [n for n in names[:-1] if n in nodes]
        if clash:
            problems.append(f"nodes.{name}.cascade: link name '{clash[0]}' is already a node; rename one of them.")
            bad = True
        if bad:
            continue
        teacher = node.teacher
        for level, (link_name, link) in enumerate(zip(names, links), start=1):
            out[link_name] = node.model_copy(update={
                "model": link.model, "model_kwargs": link.model_kwargs or node.model_kwargs,
                "teacher": teacher, "cascade": None})
            lineage[link_name] = (name, level)
            teacher = link_name
    return out, lineage


def _as_written(problems: list[str], groups: dict[str, str]) -> list[str]:
    """A mistake in a seeded node is reported once, under the name the user wrote (`nodes.kd.teacher`), not once
    per replicate (`nodes.kd.seed0.teacher`, `nodes.kd.seed1.teacher`, ...)."""
    out: list[str] = []
    for p in problems:
        for replicate in sorted(groups, key=len, reverse=True):
            for end in (".", ":"):
                p = p.replace(f"nodes.{replicate}{end}", f"nodes.{groups[replicate]}{end}")
        if p not in out:
            out.append(p)
    return out


def _expand_seeds(nodes: dict[str, NodeConfig], problems: list[str]):
    """`seeds: [s_1, ..., s_N]` on node X becomes N replicates X.seed<s_i>, each with train.seed s_i. A node
    that refers to a seeded node pairs with it seed by seed when it has the same seeds (a seeded student of a
    seeded teacher); `members:` of an unseeded node take every seed (an ensemble over seeds). Returns the
    nodes and {replicate: X}."""
    seeded = {name: node.seeds for name, node in nodes.items() if node.seeds is not None}
    if not seeded:
        return nodes, {}
    out: dict[str, NodeConfig] = {}
    groups: dict[str, str] = {}
    for name, node in nodes.items():
        if node.seeds is not None and "seed" in node.train:
            problems.append(f"nodes.{name}: give either 'seeds: {node.seeds}' (one node per seed) or "
                            f"'train.seed: {node.train['seed']}', not both.")
        mine = node.seeds
        for seed in mine if mine is not None else (None,):
            refs: dict[str, Any] = {}
            for key in ("teacher", "init", "dataset"):
                ref = getattr(node, key)
                if ref not in seeded:
                    continue
                if mine == seeded[ref]:
                    refs[key] = f"{ref}.seed{seed}"
                else:
                    problems.append(
                        f"nodes.{name}.{key}: node '{ref}' has seeds {seeded[ref]}, so it is "
                        f"{', '.join(f'{ref}.seed{s}' for s in seeded[ref])}: name one of them, or give '{name}' "
                        f"'seeds: {seeded[ref]}' to pair them seed by seed.")
                    refs[key] = f"{ref}.seed{seeded[ref][0]}"  # reported once, not again as an unknown node
            if node.members is not None:
                refs["members"] = [m2 for m in node.members for m2 in
                                   ([f"{m}.seed{seed}"] if m in seeded and mine == seeded[m] else
                                    [f"{m}.seed{s}" for s in seeded[m]] if m in seeded else [m])]
            if seed is None:
                out[name] = node.model_copy(update=refs) if refs else node
                continue
            replicate = f"{name}.seed{seed}"
            if replicate in nodes:
                problems.append(f"nodes.{name}.seeds: replicate name '{replicate}' is already a node; rename one.")
                continue
            out[replicate] = node.model_copy(update={**refs, "seeds": None, "train": {**node.train, "seed": seed}})
            groups[replicate] = name
    return out, groups


def _unknown_node(nodes, name: str, key: str, ref: str) -> str:
    close = difflib.get_close_matches(ref, list(nodes), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else f" Nodes: {', '.join(nodes)}."
    return f"nodes.{name}.{key}: no node named '{ref}'.{hint}"


def _keys_not_allowed(name: str, node: NodeConfig, keys: tuple[str, ...], why: str) -> list[str]:
    """One message per key a node of this kind must not set."""
    return [f"nodes.{name}.{key}: {why}; it has no {key}." for key in keys if getattr(node, key) is not None]


def _resolve_packages(name: str, node: NodeConfig, merged: dict[str, Any], nodes, problems: list[str]):
    """A node that builds SKD video packages from its data with its teacher's scores."""
    from raykd.data.frame_generators import list_frame_generators
    from raykd.data.packages import PackagesConfig

    where = f"nodes.{name}"
    try:
        cfg = PackagesConfig.model_validate(node.method)
    except ValidationError as e:
        problems.append(format_validation_error(e, PackagesConfig, f"{where}.method"))
        return None
    if cfg.generator not in list_frame_generators():
        close = difflib.get_close_matches(cfg.generator, list_frame_generators(), n=1)
        problems.append(f"{where}.method.generator: unknown frame generator '{cfg.generator}'."
                        + (f" Did you mean '{close[0]}'?" if close else "")
                        + f" Registered: {', '.join(list_frame_generators())}.")
    if node.teacher is None:
        problems.append(f"{where}: a packages node scores frames with a pretrained teacher; add 'teacher: <node>'.")
    elif node.teacher not in nodes:
        problems.append(_unknown_node(nodes, name, "teacher", node.teacher))
    problems.extend(_keys_not_allowed(name, node, ("model", "init", "members", "dataset", "cascade"),
                                      "a packages node builds a dataset"))
    if problems or "data" not in merged:
        return None
    return ResolvedNode(name=name, model="packages", model_kwargs={}, method=cfg, teacher=node.teacher, **merged)


def _integrated_model(node: NodeConfig, nodes: dict[str, NodeConfig], method: str) -> str:
    """What an integration node exports: an ensemble, or the members' one architecture."""
    if method == "ensemble":
        return "ensemble"
    first = nodes.get(node.members[0])
    return first.model if first is not None and first.model else "weight_average"


_META_MODELS: dict[str, Any] = {}


def _check_models(resolved: dict[str, ResolvedNode]) -> list[str]:
    """Method checks that need the two architectures (e.g. DF's top-K against the teacher's channels),
    on shape-only `meta` models so nothing is allocated; each architecture is built once a process."""
    import json

    import torch

    from raykd import methods, models

    def meta_model(node: ResolvedNode):
        key = json.dumps([node.model, node.model_kwargs], sort_keys=True, default=str)
        if key not in _META_MODELS:
            with torch.device("meta"):
                _META_MODELS[key] = models.create(node.model, 10, **node.model_kwargs)
        return _META_MODELS[key]

    problems = []
    for name, node in resolved.items():
        if not node.trains:
            continue
        method = methods.get_method(node.method.name)
        teacher = resolved[node.teacher] if node.teacher else None
        if method.check_models is methods.Distiller.check_models or (teacher is not None and not teacher.trains):
            continue  # the method checks nothing, or the teacher has no feature stages to check against
        message = method.check_models(node.method, meta_model(node), meta_model(teacher) if teacher else None)
        if message:
            problems.append(f"nodes.{name}.method: {message}")
    return problems


def _same_architecture(a: NodeConfig, b: NodeConfig) -> bool:
    return (a.model, a.model_kwargs) == (b.model, b.model_kwargs)


def _architecture(node: NodeConfig) -> str:
    return str(node.model) + (f" {node.model_kwargs}" if node.model_kwargs else "")


def _find_cycle(parents: dict[str, list[str]]) -> list[str] | None:
    """A cycle in the parent graph (teacher and init edges), as a path, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for p in parents.get(node, []):
            found = visit(p, path + [node])
            if found:
                return found
        done.add(node)
        return None

    for start in parents:
        found = visit(start, [])
        if found:
            return found
    return None


def deep_merge(base: dict[str, Any], over: dict[str, Any], null_deletes: bool = False) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None and null_deletes:
            out.pop(k, None)  # `key: null` over a base drops the base's entry (e.g. a node)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v, null_deletes)
        else:
            out[k] = copy.deepcopy(v)
    return out
