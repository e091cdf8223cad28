"""Distillation methods, one per file, registered by name."""

from raykd.methods import (  # noqa: F401  (each module registers its method)
    ab,
    at,
    byot,
    ccs,
    crd,
    cskd,
    dkd,
    dks,
    dtskd,
    fitnet,
    frskd,
    fsp,
    hat,
    kd,
    mixskd,
    mtkd_ssr,
    pskd,
    reviewkd,
    rskd,
    skd,
    sp,
    stage_probes,
    tfkd,
    tofd,
    vanilla,
    vid,
)
from raykd.methods.base import Distiller, MethodConfig, MethodContext
from raykd.methods.registry import build_distiller, get_method, list_methods, register_method, validate_method_config

__all__ = [
    "Distiller", "MethodConfig", "MethodContext", "build_distiller", "get_method", "list_methods",
    "register_method", "validate_method_config",
]
