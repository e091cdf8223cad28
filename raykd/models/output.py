"""The one output type every backbone returns, so methods never need forward hooks."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class ModelOutput(NamedTuple):
    """Logits plus the stage taps distillation methods read.

    features: post-activation output of each stage, shallow to deep.
    pre_features: the same stages before their final ReLU (for methods such as AB / OFD).
    embedding: the pooled vector the classifier reads (for CRD, SP, linear probes).
    stage_logits: classifiers on every stage but the last, shallow to deep, where the model carries
        them (a `stage_probes` node's teacher, models/stage_heads.py); the last stage's are `logits`.
    """

    logits: Tensor
    features: tuple[Tensor, ...]
    pre_features: tuple[Tensor, ...] = ()
    embedding: Tensor | None = None
    stage_logits: tuple[Tensor, ...] = ()
