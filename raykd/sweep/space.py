"""A sweep's space: Ray Tune's sampling objects for the free dimensions, the tied ones computed from them, the
overrides a sampled config makes, and the check that every value the space can produce is a valid config
(before anything trains, naming the field and the value)."""

from __future__ import annotations

import ast
import itertools
import json
import math
import operator
from typing import Any

from raykd.config.sweep import Dimension, SweepConfig
from raykd.errors import ConfigError

SEED = "train.seed"  # the replicate axis when the sweep has `seeds:`
GRID_CHECK_LIMIT = 64  # grids up to this many combinations are checked whole; larger ones per dimension


def fields(sweep: SweepConfig) -> dict[str, Dimension]:
    """The space keyed by the node's own dotted fields, in the config's order."""
    return {sweep.field(k): d for k, d in sweep.space.items()}


def free(sweep: SweepConfig) -> dict[str, Dimension]:
    return {f: d for f, d in fields(sweep).items() if d.kind != "expr"}


def tune_space(sweep: SweepConfig) -> dict[str, Any]:
    """Ray Tune's param_space: grids are searched whole, the rest sampled; seeds are a grid of replicates."""
    from ray import tune

    out: dict[str, Any] = {}
    for f, d in free(sweep).items():
        if sweep.search != "optuna" and (d.grid is not None or (d.choice is not None and sweep.search == "grid")):
            out[f] = tune.grid_search(d.values)
        elif d.values is not None:  # Optuna samples a grid as a categorical
            out[f] = tune.choice(d.values)
        elif d.uniform is not None:
            out[f] = tune.uniform(*d.uniform)
        elif d.loguniform is not None:
            out[f] = tune.loguniform(*d.loguniform)
        else:
            out[f] = tune.randint(d.randint[0], d.randint[1] + 1)  # ours includes the high end
    if sweep.seeds:
        out[SEED] = tune.grid_search(list(sweep.seeds))
    if sweep.scheduler == "asha":
        out = _shuffled_grid(out, sweep.seed)
    return out


GRID_POINT = "grid_point"  # the shuffled grid's combinations, as one Tune grid (see _shuffled_grid)


def _shuffled_grid(space: dict[str, Any], seed: int) -> dict[str, Any]:
    """ASHA promotes a trial that reaches a rung while few others have: the first trials always go on. Tune
    walks a grid in order (the last field fastest), so a grid whose later configs are better (a rising
    learning rate) has each newcomer beat the few before it, and ASHA stops almost nothing. The grid's
    combinations in a seeded random order make the early trials a fair sample."""
    import random

    from ray import tune

    grids = {f: v["grid_search"] for f, v in space.items() if isinstance(v, dict) and "grid_search" in v}
    if len(grids) < 1:
        return space
    points = [dict(zip(grids, vs)) for vs in itertools.product(*grids.values())]
    random.Random(seed).shuffle(points)
    return {**{f: v for f, v in space.items() if f not in grids}, GRID_POINT: tune.grid_search(points)}


def unpack(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's config with its grid point spread back into fields."""
    if GRID_POINT not in config:
        return dict(config)
    return {**{k: v for k, v in config.items() if k != GRID_POINT}, **config[GRID_POINT]}


def complete(sweep: SweepConfig, sampled: dict[str, Any]) -> dict[str, Any]:
    """Every field's value for one trial: the sampled ones and the tied ones (in the config's order, so a tie
    may use an earlier tie)."""
    sampled = unpack(sampled)
    values = {f: sampled[f] for f in free(sweep)}
    for f, d in fields(sweep).items():
        if d.kind == "expr":
            values[f] = evaluate(d.expr, values, where=f"sweep.space.{f}")
    if SEED in sampled:
        values[SEED] = sampled[SEED]
    return values


def overrides(sweep: SweepConfig, values: dict[str, Any]) -> list[str]:
    """A replicate is the node with `seeds: [s]`, so it is <node>.seed<s>, the very node (name and hash) that
    `seeds:` on the node makes when the best config is retrained with the same seeds."""
    return [f"nodes.{sweep.node}.seeds=[{v}]" if f == SEED else f"nodes.{sweep.node}.{f}={json.dumps(v)}"
            for f, v in values.items()]


def node_name(sweep: SweepConfig, values: dict[str, Any]) -> str:
    return f"{sweep.node}.seed{values[SEED]}" if SEED in values else sweep.node


def config_key(values: dict[str, Any]) -> str:
    """The config a trial tries, without its seed: replicates share it."""
    return ", ".join(f"{f}={_short(v)}" for f, v in values.items() if f != SEED)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def check(sweep: SweepConfig, build) -> int:
    """Build (validate) the configs the space can produce; `build(overrides)` raises ConfigError. Finite
    spaces up to GRID_CHECK_LIMIT combinations are checked whole; otherwise each dimension at each of its
    values (a range at both ends and at a point between, which catches a fractional value for an integer
    field) with the others at their first. Returns how many configs were checked."""
    dims = free(sweep)
    candidates = {f: _candidates(d) for f, d in dims.items()}
    if sweep.seeds:
        candidates[SEED] = list(sweep.seeds[:1])
    combos = math.prod(len(c) for c in candidates.values())
    if combos <= GRID_CHECK_LIMIT:
        points = [dict(zip(candidates, vs)) for vs in itertools.product(*candidates.values())]
    else:
        first = {f: c[0] for f, c in candidates.items()}
        points = [{**first, f: v} for f, c in candidates.items() for v in c]
    for point in points:
        values = complete(sweep, point)
        try:
            build(overrides(sweep, values))
        except ConfigError as e:
            shown = ", ".join(f"{f}={v!r}" for f, v in values.items())
            raise ConfigError(f"sweep.space can produce an invalid config, so nothing was started. With {shown}:\n"
                              f"  {str(e).split(':', 1)[-1].strip() if 'invalid config' in str(e) else e}\n"
                              f"Narrow the space (or fix the tie) so every value is valid.") from None
    return len(points)


def _candidates(d: Dimension) -> list[Any]:
    if d.values is not None:
        return list(d.values)
    lo, hi = d.uniform or d.loguniform or d.randint
    if d.randint is not None:
        return [lo, hi]
    between = math.exp(math.log(lo) + 0.37 * (math.log(hi) - math.log(lo))) if d.loguniform else lo + 0.37 * (hi - lo)
    return [lo, hi, between]


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCS = {"min": min, "max": max, "round": round, "int": int, "abs": abs}


def evaluate(expr: str, values: dict[str, Any], where: str) -> Any:
    """Arithmetic (+ - * / **, min, max, round, int, abs) on numbers and the space's fields, e.g.
    `1 - method.alpha1`; nothing else is evaluated."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise ConfigError(f"{where}: expr '{expr}' is not an arithmetic expression.") from None

    def name(node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            base = name(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS \
                and not node.keywords:
            return _FUNCS[node.func.id](*(ev(a) for a in node.args))
        ref = name(node)
        if ref is not None:
            field = ref.split(".", 2)[2] if ref.startswith("nodes.") and ref.count(".") >= 2 else ref
            if field not in values:
                raise ConfigError(f"{where}: expr '{expr}' uses '{ref}', which is not an earlier field of the "
                                  f"space (fields: {', '.join(values) or 'none'}).")
            return values[field]
        raise ConfigError(f"{where}: expr '{expr}': only numbers, the space's fields, + - * / ** and "
                          f"{', '.join(_FUNCS)} are allowed.")

    try:
        return ev(tree)
    except ZeroDivisionError:
        raise ConfigError(f"{where}: expr '{expr}' divides by zero with {values}.") from None
