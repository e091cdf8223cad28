"""Reading an experiment: YAML (safe, duplicate keys and alias bombs refused), `base:` files, dotted
overrides, and validation into an `Experiment` whose every mistake names its file and dotted path."""

from __future__ import annotations

import copy
import difflib
import os
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raykd.config.resolve import deep_merge, resolve_nodes
from raykd.config.schema import Experiment, ExperimentConfig, NodeConfig
from raykd.errors import ConfigError
from raykd.strict import format_errors

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
    return deep_merge(_read_with_bases(base_path, chain + (path.resolve(),)), raw, null_deletes=True)


def build_experiment(raw: dict[str, Any], overrides=(), source: str | None = None) -> Experiment:
    raw = copy.deepcopy(raw)
    for item in overrides:
        apply_override(raw, item)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        message = format_errors(e, ExperimentConfig, (), source)
        per_node = [k for k in raw if k in NodeConfig.model_fields and k not in ExperimentConfig.model_fields]
        if per_node and isinstance(raw.get("nodes"), dict):
            names = list(raw["nodes"])
            message += (f"\n  '{per_node[0]}' belongs to a node: write nodes.<node>.{per_node[0]}..., e.g. "
                        f"nodes.{names[-1]}.{per_node[0]} (nodes: {', '.join(names)}).")
        raise ConfigError(message) from None
    nodes = resolve_nodes(cfg, raw, source)
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
