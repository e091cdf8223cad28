"""Backbones returning `ModelOutput(logits, features, ...)`, created by name."""

from raykd.models import (  # noqa: F401  (each module registers its models)
    cifar_resnet,
    cifar_resnet4,
    mobilenet_v1,
    mobilenetv2,
    seresnet_dtskd,
    shufflenet,
    shufflenetv2_dtskd,
    torchvision_models,
    vgg,
    vgg_dtskd,
    wrn,
)
from raykd.models.output import ModelOutput
from raykd.models.registry import create, list_models, register_model
from raykd.models.video import VideoClassifier

__all__ = ["ModelOutput", "VideoClassifier", "create", "list_models", "register_model", "count_parameters"]


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
