"""Distillation methods, one per file, registered by name."""

from raykd.methods import kd, vanilla  # noqa: F401  (registers the methods)
from raykd.methods.base import Distiller, MethodConfig
from raykd.methods.registry import build_distiller, get_method, list_methods, register_method, validate_method_config

__all__ = [
    "Distiller", "MethodConfig", "build_distiller", "get_method", "list_methods",
    "register_method", "validate_method_config",
]
