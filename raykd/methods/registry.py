"""Method registry: config `method.name` -> Distiller class with its own config schema."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from raykd.errors import ConfigError
from raykd.methods.base import Distiller, MethodConfig
from raykd.strict import format_validation_error

_METHODS: dict[str, type[Distiller]] = {}


def register_method(cls: type[Distiller]) -> type[Distiller]:
    if cls.name in _METHODS:
        raise ValueError(f"method '{cls.name}' registered twice")
    _METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Distiller]:
    return _METHODS[name]


def list_methods() -> list[str]:
    return sorted(_METHODS)


def validate_method_config(raw: dict[str, Any] | str, where: str = "method") -> MethodConfig:
    """Validate a method section against the chosen method's schema, naming bad fields."""

    if isinstance(raw, str):
        raw = {"name": raw}
    name = raw.get("name")
    if name is None:
        raise ConfigError(f"{where}.name: required key is missing. Methods: {', '.join(list_methods())}.")
    if name not in _METHODS:
        close = difflib.get_close_matches(str(name), list(_METHODS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{where}.name: unknown method '{name}'.{hint} Methods: {', '.join(list_methods())}.")
    cls = _METHODS[name]
    try:
        return cls.Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, cls.Config, where)) from None


def build_distiller(cfg: MethodConfig, student, teacher=None) -> Distiller:
    return _METHODS[cfg.name](student, teacher, cfg)
