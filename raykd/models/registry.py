"""Name -> constructor registry, so configs and the CLI refer to models by name."""

from __future__ import annotations

from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def deco(fn: Callable[..., nn.Module]):
        if name in _MODELS:
            raise ValueError(f"model '{name}' registered twice")
        _MODELS[name] = fn
        return fn

    return deco


def create(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model; it returns `ModelOutput` and exposes `stage_channels`."""
    if name not in _MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise KeyError(f"unknown model '{name}'.{hint} Known: {', '.join(sorted(_MODELS))}")
    model = _MODELS[name](num_classes=num_classes, **kwargs)
    model.raykd_name = name
    return model


def list_models() -> list[str]:
    return sorted(_MODELS)
