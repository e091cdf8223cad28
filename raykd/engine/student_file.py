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
from raykd.models.ensemble import Ensemble
from raykd.models.stage_heads import WithStageHeads, heads_from_blob
from raykd.models.video import VideoClassifier

FORMAT = 1


def save_student(path: Path, model: torch.nn.Module, *, model_name: str, num_classes: int,
                 model_kwargs: dict[str, Any], mean, std, data: dict[str, Any], metrics: dict[str, float],
                 video: bool = False, init_fingerprint: str | None = None,
                 extras: dict[str, Any] | None = None) -> None:
    """`video`: the weights are a 2D backbone the loader wraps in `VideoClassifier`.
    `init_fingerprint`: digest of the weights training started from (weight averaging checks it).
    `extras`: what the method exports beside the student (`Distiller.export_extras`, e.g. the
    `stage_heads` a stage_probes node fits), rebuilt around the model by `build_student`."""
    if isinstance(model, VideoClassifier):
        model, video = model.backbone, True
    save_atomic(
        {
            "format": FORMAT,
            "model": model_name,
            "num_classes": num_classes,
            "model_kwargs": dict(model_kwargs),
            "video": video,
            "init_fingerprint": init_fingerprint,
            "mean": list(mean),
            "std": list(std),
            "data": data,
            "metrics": dict(metrics),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            **(extras or {}),
        },
        path,
    )


def save_ensemble(path: Path, members: list[dict[str, Any]], *, data: dict[str, Any], metrics: dict[str, float]) -> None:
    """An ensemble file holds its members' own student blobs (as `read_student` returns them)."""
    first = members[0]
    save_atomic({"format": FORMAT, "model": "ensemble", "num_classes": first["num_classes"], "model_kwargs": {},
                 "video": False, "members": members, "mean": first["mean"], "std": first["std"], "data": data,
                 "metrics": dict(metrics)}, path)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of a model's parameters and buffers, in state-dict order."""
    import hashlib

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_student(path: str | Path) -> dict[str, Any]:
    """The raw contents of a student file, checked to be one."""
    path = Path(path)
    if not path.is_file():
        raise RaykdError(f"student file not found: '{path}'.")
    try:
        blob = load(path)
    except Exception as e:  # a truncated or foreign file: say which file
        raise RaykdError(f"'{path}' is not a raykd student file ({type(e).__name__}: {e}).") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise RaykdError(f"'{path}' is not a raykd student file (no format {FORMAT} header).")
    problem = _blob_problem(blob)
    if problem:
        raise RaykdError(f"'{path}' is not a usable raykd student file: {problem}.")
    return blob


_FIELDS = {"model": str, "num_classes": int, "model_kwargs": dict, "mean": list, "std": list, "data": dict}


def _blob_problem(blob: dict[str, Any]) -> str | None:
    """What is wrong with a student file's header (a damaged or hand-made file), or None."""
    for key, typ in _FIELDS.items():
        if not isinstance(blob.get(key), typ):
            return f"its '{key}' is {'missing' if key not in blob else f'a {type(blob[key]).__name__}, not a {typ.__name__}'}"
    if blob["model"] == "ensemble":
        members = blob.get("members")
        if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
            return "an ensemble without its members"
        return next((p for p in map(_blob_problem, members) if p), None)
    if blob["model"] not in models.list_models():
        return f"it names the model '{blob['model']}', which this raykd does not have"
    if not isinstance(blob.get("state_dict"), dict):
        return "it holds no weights"
    return None


def build_student(blob: dict[str, Any]) -> torch.nn.Module:
    """The module a student blob describes (ensembles and video wrappers included), in eval mode."""
    if blob["model"] == "ensemble":
        return Ensemble([build_student(m) for m in blob["members"]]).eval()
    model = models.create(blob["model"], blob["num_classes"], **blob["model_kwargs"])
    model.load_state_dict(blob["state_dict"])
    if blob.get("stage_heads"):
        model = WithStageHeads(model, heads_from_blob(blob["stage_heads"]))
    if blob.get("video"):
        model = VideoClassifier(model)
    return model.eval()


def load_student(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the student from `final.pt`; returns (model in eval mode, metadata)."""
    blob = read_student(path)
    try:
        model = build_student(blob).to(device)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:  # weights that do not fit the model it names
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RaykdError(f"'{path}' is not a usable raykd student file: its weights do not build a "
                         f"{blob['model']} ({first[:300]}).") from None
    meta = {k: v for k, v in blob.items() if k not in ("state_dict", "members", "stage_heads")}
    meta["stage_heads"] = len(blob["stage_heads"]["channels"]) if blob.get("stage_heads") else 0
    return model, meta


def plain_backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The 2D model inside the wrappers `build_student` may add (clips, stage heads): what `init:` copies."""
    while isinstance(model, (VideoClassifier, WithStageHeads)):
        model = model.backbone
    return model
