"""The base of every config schema (experiment sections, method configs, integration and package nodes): a
value that is not what the field means is an error, never a quiet conversion. Unknown keys are refused (a
typo never falls back to a default), booleans are not numbers (`epochs: true` is not 1), a flag is true or
false (`flip: 1` is refused), and numbers are finite (`lr: .inf` and `grad_clip: .nan` are refused)."""

from __future__ import annotations

import types
import typing
from typing import Any

import difflib

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator


def _is_number(tp: Any) -> bool:
    if tp in (int, float):
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _is_number(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return bool not in args and any(_is_number(a) for a in args)
    return False


def _numbers_inside(tp: Any) -> bool:
    """list[float], tuple[float, float] and the like."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _numbers_inside(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_numbers_inside(a) for a in typing.get_args(tp))
    return origin in (list, tuple) and any(_is_number(a) for a in typing.get_args(tp) if a is not Ellipsis)


def _is_flag(tp: Any) -> bool:
    """bool or bool | None: `flip: 1` or `flip: "no"` is a mistake, not a flag."""
    return tp is bool or (typing.get_origin(tp) in (typing.Union, types.UnionType)
                          and set(typing.get_args(tp)) <= {bool, type(None)} and bool in typing.get_args(tp))


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is None:
            return value
        if isinstance(value, bool) and _is_number(field.annotation):
            raise ValueError("expected a number (true and false are not numbers)")
        if isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value) and _numbers_inside(field.annotation):
            raise ValueError("expected numbers (true and false are not numbers)")
        if value is not None and not isinstance(value, bool) and _is_flag(field.annotation):
            raise ValueError("expected true or false")
        return value


# ---------------------------------------------------------------------------------------------
# How a validation error reads: one line per problem, its dotted path first, the closest valid key for a
# typo. Here, beside the base every schema shares, so that methods, integration and package nodes format
# their own sections without importing the experiment config (which imports them).

_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "dict_type": "a mapping of keys",
    "model_type": "a mapping of keys", "list_type": "a list", "tuple_type": "a list",
}


def where(source: str | None) -> str:
    """The file a message is about, as its prefix."""
    return f"{source}: " if source else ""


def format_errors(err: ValidationError, root: type[BaseModel], prefix: tuple, source: str | None) -> str:
    """Every problem of `err`, one line each, under '<source>: invalid config:'."""
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
    head = where(source) + "invalid config:\n  "
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
    return format_errors(err, model, prefix, None).removeprefix("invalid config:\n  ")
