"""Experiment config: a typed schema, YAML loading, dotted CLI overrides and readable errors.

A config describes one pipeline: shared `data`, `train` and `resources` sections, and `nodes`,
each a training run that may name a `teacher` node and override any shared section. Every
mistake is reported with its dotted path (and the closest valid key for a typo) before any
training starts.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from raykd.errors import ConfigError
from raykd.strict import StrictModel

SHARED_SECTIONS = ("train", "data", "resources")


class Strict(StrictModel):
    """Unknown keys are errors, so a typo never silently falls back to a default (raykd/strict.py)."""


class OptimizerConfig(Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleConfig(Strict):
    name: Literal["cosine", "multistep", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    milestones: list[int] = Field(default_factory=lambda: [150, 180, 210])
    gamma: float = Field(0.1, gt=0)
    min_lr: float = Field(0.0, ge=0)


class TrainConfig(Strict):
    epochs: int = Field(240, gt=0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    seed: int = 0
    grad_clip: float | None = Field(None, gt=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"


class AugmentConfig(Strict):
    crop_padding: int = Field(4, ge=0)
    flip: bool = True


class DataConfig(Strict):
    name: Literal["digits", "digits_video", "cifar10", "cifar100", "image_folder", "fashion_mnist",
                  "ucf101"] = "digits"
    root: str | None = None
    frames: int = Field(8, gt=0)  # clips: frames per clip (digits_video, ucf101)
    label_noise: float = Field(0.0, ge=0, lt=1)  # digits_video: share of training labels flipped
    fold: int = Field(1, ge=1, le=3)  # ucf101: which ucfTrainTestlist split
    batch_size: int = Field(64, gt=0)
    eval_batch_size: int = Field(512, gt=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    train_limit: int | None = Field(None, gt=0)
    image_size: int | None = Field(None, gt=0)
    split_seed: int = 0
    download: bool = False
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class ResourcesConfig(Strict):
    workers: int = Field(1, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float | Literal["auto"] = "auto"
    max_failures: int = Field(0, ge=0)


class CascadeLink(Strict):
    model: str
    model_kwargs: dict[str, Any] = Field(default_factory=dict)


class NodeConfig(Strict):
    model: str | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    method: dict[str, Any] = Field(default_factory=lambda: {"name": "vanilla"})
    teacher: str | None = None
    init: str | None = None
    cascade: list[str | CascadeLink] | None = Field(None, min_length=1)
    members: list[str] | None = Field(None, min_length=2)
    dataset: str | None = None  # train on the package set this node built (method: packages)
    train: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)


class TrackingConfig(Strict):
    uri: str | None = None
    experiment: str | None = None
    register_as: str | None = None

    @field_validator("register_as")
    @classmethod
    def _registrable(cls, v: str | None) -> str | None:
        """MLflow refuses these names only when it registers, after training: refuse them here."""
        if v is not None and (not v.strip() or any(c in v for c in "/:") or ".." in v or v != v.strip()
                              or not v.isprintable() or len(v) > 256):
            raise ValueError("a registered model name must be printable text without '/', ':', '..' or edge spaces")
        return v


class ExperimentConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    storage: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    nodes: dict[str, NodeConfig]
    final: str | None = None


class ResolvedNode(BaseModel):
    """One node with its shared sections merged in and its method config validated."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    model: str
    model_kwargs: dict[str, Any]
    method: Any  # the method's own pydantic config (raykd.methods.MethodConfig)
    teacher: str | None
    init: str | None = None
    members: tuple[str, ...] = ()  # an integration node's inputs (method ensemble | weight_average)
    dataset: str | None = None  # a packages node whose clips this node trains on
    branch: str | None = None  # the cascade this node is a link of, and its level (1 = nearest the teacher)
    level: int | None = None
    train: TrainConfig
    data: DataConfig
    resources: ResourcesConfig

    @property
    def integrates(self) -> bool:
        return bool(self.members)

    @property
    def builds_packages(self) -> bool:
        return self.method.name == "packages"

    @property
    def trains(self) -> bool:
        """False for nodes that only evaluate finished models (integration, packages): they run as
        one plain process, not a Train run, and have no student of their own to check."""
        return not (self.integrates or self.builds_packages)

    def semantic_dict(self) -> dict[str, Any]:
        """What determines the trained weights; resources and names are left out on purpose."""
        return {
            "model": self.model,
            "model_kwargs": self.model_kwargs,
            "method": self.method.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json", exclude={"device"}),
            "data": self.data.model_dump(mode="json", exclude={"eval_batch_size", "download"}),
        }


class Experiment(BaseModel):
    """A validated experiment: the raw schema plus each node resolved."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: ExperimentConfig
    nodes: dict[str, ResolvedNode]
    source: str | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def storage(self) -> Path:
        return Path(self.config.storage).expanduser().resolve()

    @property
    def final(self) -> str:
        """`final:` if set, else the last node (in config order) that no other node learns from."""
        if self.config.final:
            return self.config.final
        used = {p for n in self.nodes.values() for p in (n.teacher, n.init, n.dataset, *n.members)}
        used |= {n for n, node in self.nodes.items() if node.builds_packages}
        return [name for name in self.nodes if name not in used][-1]

    def to_yaml(self) -> str:
        """The resolved config, every default filled in, as `--print-config` shows it."""
        out = self.config.model_dump(mode="json", exclude={"nodes"})
        out["storage"] = str(self.storage)
        out["final"] = self.final
        out["nodes"] = {}
        for name, node in self.nodes.items():
            out["nodes"][name] = {
                **({"members": list(node.members)} if node.members else {"model": node.model}),
                "model_kwargs": node.model_kwargs,
                "teacher": node.teacher,
                "init": node.init,
                **({"dataset": node.dataset} if node.dataset else {}),
                "method": node.method.model_dump(mode="json"),
                "train": node.train.model_dump(mode="json"),
                "data": node.data.model_dump(mode="json"),
                "resources": node.resources.model_dump(mode="json"),
            }
        return yaml.safe_dump(out, sort_keys=False)


# ---------------------------------------------------------------------------------------------
# Loading and overrides


def load_experiment(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Experiment:
    """Read a YAML experiment, apply `a.b.c=value` overrides, validate everything."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        conf = Path("conf")
        if conf.is_dir():
            options = sorted(str(p) for p in conf.rglob("*.yaml"))
            close = difflib.get_close_matches(str(path), options, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else f" Configs here: {', '.join(options[:8])}."
        raise ConfigError(f"config file not found: '{path}'.{hint}")
    raw = _read_with_bases(path, ())
    raw.setdefault("name", path.stem)
    return build_experiment(raw, overrides, source=str(path))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {e.start}: {e.reason}).") from None
    except OSError as e:
        raise ConfigError(f"config file '{path}' cannot be read: {e.strerror or e}.") from None
    try:
        raw = load_yaml(text)
    except ConfigShapeError as e:
        raise ConfigError(f"config file '{path}': {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys at top level.")
    return raw


class ConfigShapeError(yaml.YAMLError):
    """Valid YAML that raykd still refuses to read (a key given twice, an alias bomb); the text says why."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the
    last one silently, so the first is lost without a word)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, typing.Hashable) and key in seen:
                    raise ConfigShapeError(f"key '{key}' appears twice in one mapping (lines {seen[key]} and {line}); "
                                            f"keep one.")
                if isinstance(key, typing.Hashable):
                    seen[key] = line
        return super().construct_mapping(node, deep)


YAML_MAX_NODES = 1_000_000  # after aliases are expanded: a real config has a few hundred


def load_yaml(text: str) -> Any:
    """YAML as configs and overrides are read: safe types only, duplicate keys refused, and a bounded size
    once aliases are expanded (nine nested aliases of nine make 9^9 values: an "alias bomb" that would
    exhaust memory when the config is merged and validated)."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            size = _expanded_size(node, {})
        except RecursionError:
            size = YAML_MAX_NODES + 1
        if size > YAML_MAX_NODES:
            raise ConfigShapeError(f"it expands to more than {YAML_MAX_NODES:,} values once its aliases (*name) are "
                                    f"resolved; a config is far smaller, so it is refused")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    if id(node) not in memo:
        if isinstance(node, yaml.SequenceNode):
            memo[id(node)] = 1 + sum(_expanded_size(n, memo) for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[id(node)] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
        else:
            memo[id(node)] = 1
    return memo[id(node)]


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """A config may start from `base: <file>` (relative to itself): the base's keys, deep-merged
    under its own. Presets share one training recipe this way."""
    raw = _read_yaml(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"'{path}': base: must be a path to another YAML file, got {base!r}.")
    base_path = (path.parent / base).resolve()
    if base_path in chain or base_path == path.resolve():
        raise ConfigError(f"'{path}': base: '{base}' includes itself.")
    if not base_path.is_file():
        raise ConfigError(f"'{path}': base: file '{base_path}' not found.")
    return _deep_merge(_read_with_bases(base_path, chain + (path.resolve(),)), raw, null_deletes=True)


def build_experiment(raw: dict[str, Any], overrides=(), source: str | None = None) -> Experiment:
    raw = copy.deepcopy(raw)
    for item in overrides:
        apply_override(raw, item)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        message = _format(e, ExperimentConfig, (), source)
        per_node = [k for k in raw if k in NodeConfig.model_fields and k not in ExperimentConfig.model_fields]
        if per_node and isinstance(raw.get("nodes"), dict):
            names = list(raw["nodes"])
            message += (f"\n  '{per_node[0]}' belongs to a node: write nodes.<node>.{per_node[0]}..., e.g. "
                        f"nodes.{names[-1]}.{per_node[0]} (nodes: {', '.join(names)}).")
        raise ConfigError(message) from None
    nodes = _resolve_nodes(cfg, raw, source)
    return Experiment(config=cfg, nodes=nodes, source=source)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in the raw dict; the value is parsed as YAML (`3`, `0.1`, `[1, 2]`);
    `null` removes the key, as `key: null` does over a base file. `nodes.<name>...` must name an existing
    node (a misspelt one would silently add a node and train it); `+nodes.<new>.model=...` adds one."""
    key, sep, value = item.partition("=")
    adding = key.startswith("+")
    key = key.removeprefix("+")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{item}' must look like 'section.key=value' (e.g. train.epochs=3).")
    try:
        parsed = load_yaml(value) if value != "" else ""
    except ConfigShapeError as e:
        raise ConfigError(f"override '{item}': {e}") from None
    except yaml.YAMLError:
        parsed = value
    parts = key.split(".")
    nodes = raw.get("nodes")
    if parts[0] == "nodes" and len(parts) > 1 and isinstance(nodes, dict) and parts[1] not in nodes and not adding:
        close = difflib.get_close_matches(parts[1], list(nodes), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else f" Nodes: {', '.join(nodes)}."
        raise ConfigError(f"override '{item}': no node named '{parts[1]}'.{hint} To add a node from the command "
                          f"line, start the override with '+': +{key}.")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"override '{item}': '{where}' is a value, not a section, so it has no key '{parts[i + 1]}'.")
        node = child
    if parsed is None:
        node.pop(parts[-1], None)  # `key=null` drops the key (back to its default; a node is removed)
    else:
        node[parts[-1]] = parsed


def _resolve_nodes(cfg: ExperimentConfig, raw: dict[str, Any], source: str | None) -> dict[str, ResolvedNode]:
    from raykd import integrate, methods, models  # deferred: config stays importable without torch work

    problems: list[str] = []
    resolved: dict[str, ResolvedNode] = {}
    if not cfg.nodes:
        raise ConfigError(_where(source) + "'nodes' is empty: define at least one training run.")
    problems.extend(_bad_node_name(name) for name in cfg.nodes if not NODE_NAME.fullmatch(name))
    if problems:
        raise ConfigError(_where(source) + "invalid config:\n  " + "\n  ".join(problems))
    nodes, lineage = _expand_cascades(cfg.nodes, problems)
    section_types = {"train": TrainConfig, "data": DataConfig, "resources": ResourcesConfig}
    known_models = models.list_models()

    def unknown_node(name: str, key: str, ref: str) -> str:
        return _unknown_node(nodes, name, key, ref)

    for name, node in nodes.items():
        prefix = ("nodes", name)
        merged: dict[str, Any] = {}
        for section, typ in section_types.items():
            base = raw.get(section) or {}
            data = _deep_merge(base, getattr(node, section))
            try:
                merged[section] = typ.model_validate(data)
            except ValidationError as e:
                problems.append(_format(e, typ, prefix + (section,), None))
        if node.members is not None:
            try:
                method_cfg = integrate.validate_integration_config(node.method, where=f"nodes.{name}.method")
            except ConfigError as e:
                problems.append(str(e))
            problems.extend(_keys_not_allowed(name, node, ("teacher", "init", "model"),
                                              "an integration node (members: ...) combines finished students"))
            problems.extend(unknown_node(name, "members", m) for m in node.members if m not in nodes)
            if problems:
                continue
            resolved[name] = ResolvedNode(
                name=name, model=_integrated_model(node, nodes, method_cfg.name), model_kwargs={},
                method=method_cfg, teacher=None, members=tuple(node.members), **merged)
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
        branch, level = lineage.get(name, (None, None))
        resolved[name] = ResolvedNode(
            name=name, model=node.model, model_kwargs=node.model_kwargs, method=method_cfg,
            teacher=node.teacher, init=node.init, dataset=node.dataset, branch=branch, level=level, **merged,
        )
    if cfg.final is not None and cfg.final not in nodes:
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
        raise ConfigError(_where(source) + "invalid config:\n  " + "\n  ".join(problems))
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


def _deep_merge(base: dict[str, Any], over: dict[str, Any], null_deletes: bool = False) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None and null_deletes:
            out.pop(k, None)  # `key: null` over a base drops the base's entry (e.g. a node)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v, null_deletes)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ---------------------------------------------------------------------------------------------
# Error formatting


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "dict_type": "a mapping of keys",
    "model_type": "a mapping of keys", "list_type": "a list", "tuple_type": "a list",
}


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def _format(err: ValidationError, root: type[BaseModel], prefix: tuple, source: str | None) -> str:
    lines = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        path = ".".join(str(p) for p in loc)
        kind = e["type"]
        if kind == "extra_forbidden":
            valid = _fields_at(root, tuple(e["loc"])[:-1])
            key = str(loc[-1])
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"{path}: unknown key '{key}'.{hint} Valid keys here: {', '.join(valid)}.")
        elif kind == "missing":
            lines.append(f"{path}: required key is missing.")
        elif kind in _EXPECTED:
            lines.append(f"{path}: expected {_EXPECTED[kind]}, got {e.get('input')!r}.")
        elif kind == "value_error" and isinstance(e.get("input"), dict):  # a check across fields: its own words
            lines.append(f"{path}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{path}: {e['msg'].removeprefix('Value error, ')}, got {e.get('input')!r}.")
    head = _where(source) + "invalid config:\n  "
    return head + "\n  ".join(lines)


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid keys of the schema section at `loc` (used to suggest the closest one)."""
    typ: Any = model
    for part in loc:
        typ = _unwrap(typ)
        if isinstance(typ, type) and issubclass(typ, BaseModel):
            field = typ.model_fields.get(str(part))
            if field is None:
                return []
            typ = field.annotation
        elif typing.get_origin(typ) is dict:
            typ = typing.get_args(typ)[1]
        else:
            return []
    typ = _unwrap(typ)
    if isinstance(typ, type) and issubclass(typ, BaseModel):
        return list(typ.model_fields)
    return []


def _unwrap(typ: Any) -> Any:
    if typing.get_origin(typ) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        models = [a for a in typing.get_args(typ) if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            return models[0]
    return typ


def format_validation_error(err: ValidationError, model: type[BaseModel], where: str) -> str:
    """Format a method config's validation error with the node path in front."""
    prefix = tuple(where.split("."))
    return _format(err, model, prefix, None).removeprefix("invalid config:\n  ")
