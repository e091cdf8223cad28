"""Experiment config: a typed schema (schema.py), YAML loading and dotted overrides (loading.py), and
node resolution (resolve.py); every mistake is reported with its file and dotted path (and the closest
valid key for a typo) before any training starts. How validation errors read lives with the strict base
every schema shares (raykd/strict.py), so methods format theirs without importing this package.

Imports flow one way: this package may import methods, models and integration (to validate node
sections), never the reverse.
"""

from raykd.config.loading import apply_override, build_experiment, load_experiment, load_yaml
from raykd.config.schema import (SHARED_SECTIONS, AugmentConfig, CascadeLink, DataConfig, Experiment, ExperimentConfig,
                                 NodeConfig, OptimizerConfig, ResolvedNode, ResourcesConfig, ScheduleConfig, Strict,
                                 TrackingConfig, TrainConfig)
from raykd.strict import format_validation_error

__all__ = [
    "SHARED_SECTIONS", "AugmentConfig", "CascadeLink", "DataConfig", "Experiment", "ExperimentConfig", "NodeConfig",
    "OptimizerConfig", "ResolvedNode", "ResourcesConfig", "ScheduleConfig", "Strict", "TrackingConfig", "TrainConfig",
    "apply_override", "build_experiment", "format_validation_error", "load_experiment", "load_yaml",
]
