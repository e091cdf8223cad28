"""Backbones returning `ModelOutput(logits, features, ...)`, created by name."""

from raykd.models import cifar_resnet  # noqa: F401  (registers the CIFAR ResNets)
from raykd.models.output import ModelOutput
from raykd.models.registry import create, list_models, register_model

__all__ = ["ModelOutput", "create", "list_models", "register_model", "count_parameters"]


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
