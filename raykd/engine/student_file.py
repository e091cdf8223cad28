"""The exported student (`final.pt`): weights plus what is needed to rebuild and feed it.

It is what a later node loads as its teacher and what `raykd eval` opens, so it carries the
model name, class count and the normalisation the model was trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from raykd import models
from raykd.engine.checkpoint import load, save_atomic
from raykd.errors import RaykdError

FORMAT = 1


def save_student(path: Path, model: torch.nn.Module, *, model_name: str, num_classes: int,
                 model_kwargs: dict[str, Any], mean, std, data: dict[str, Any], metrics: dict[str, float]) -> None:
    save_atomic(
        {
            "format": FORMAT,
            "model": model_name,
            "num_classes": num_classes,
            "model_kwargs": dict(model_kwargs),
            "mean": list(mean),
            "std": list(std),
            "data": data,
            "metrics": dict(metrics),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
        path,
    )


def load_student(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the student from `final.pt`; returns (model in eval mode, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise RaykdError(f"student file not found: '{path}'.")
    try:
        blob = load(path)
    except Exception as e:  # a truncated or foreign file: say which file
        raise RaykdError(f"'{path}' is not a raykd student file ({type(e).__name__}: {e}).") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise RaykdError(f"'{path}' is not a raykd student file (no format {FORMAT} header).")
    model = models.create(blob["model"], blob["num_classes"], **blob["model_kwargs"])
    model.load_state_dict(blob["state_dict"])
    model.to(device).eval()
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return model, meta
