"""The base of every config schema (experiment sections, method configs, integration and package nodes): a
value that is not what the field means is an error, never a quiet conversion. Unknown keys are refused (a
typo never falls back to a default), booleans are not numbers (`epochs: true` is not 1), a flag is true or
false (`flip: 1` is refused), and numbers are finite (`lr: .inf` and `grad_clip: .nan` are refused)."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


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
