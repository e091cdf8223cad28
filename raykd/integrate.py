"""Final students made from finished ones, as pipeline nodes (`members: [...]`):

  ensemble        average of the members' softmax outputs (SKD's integration of its branches)
  weight_average  one model whose weights are the members' mean: only for one architecture trained
                  from one shared initialisation (same seed, same init node), else a clear error

The third integration, `distill`, is an ordinary node: a student with `teacher: <ensemble node>`.
Each integration node is evaluated like a trained one (top-1/top-5, parameters, latency).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ValidationError

from raykd.strict import StrictModel, format_validation_error
from raykd.errors import ConfigError, RaykdError

INTEGRATIONS = ("ensemble", "weight_average")


class IntegrationConfig(StrictModel):

    name: Literal["ensemble", "weight_average"]


def validate_integration_config(raw: dict[str, Any] | str, where: str) -> IntegrationConfig:

    raw = {"name": raw} if isinstance(raw, str) else raw
    name = raw.get("name")
    if name not in INTEGRATIONS:
        close = difflib.get_close_matches(str(name), INTEGRATIONS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{where}.name: a node with 'members' integrates them with one of "
                          f"{', '.join(INTEGRATIONS)}, got '{name}'.{hint} (For `distill`, train a student "
                          f"with 'teacher: <ensemble node>'.)")
    try:
        return IntegrationConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, IntegrationConfig, where)) from None


def check_members(nodes) -> list[str]:
    """Config-time checks: weight averaging needs one architecture and one initialisation."""
    problems = []
    for name, node in nodes.items():
        if not node.integrates:
            continue
        members = [nodes[m] for m in node.members]
        where = f"nodes.{name}.members"
        datasets = [m.name for m in members if m.builds_packages]
        if datasets:
            problems.append(f"{where}: '{datasets[0]}' builds a dataset, not a student.")
            continue
        if node.method.name != "weight_average":
            continue
        nested = [m.name for m in members if m.integrates]
        if nested:
            problems.append(f"{where}: weight averaging needs trained students, but '{nested[0]}' is itself an "
                            f"integration node.")
            continue
        archs = {(m.model, str(m.model_kwargs)) for m in members}
        if len(archs) > 1:
            problems.append(f"{where}: weight averaging needs one architecture, but the members train "
                            + ", ".join(f"{m.name}={m.model}" for m in members)
                            + ". Use 'method: ensemble' for different architectures.")
            continue
        starts = {(m.train.seed, m.init) for m in members}
        if len(starts) > 1:
            problems.append(f"{where}: weight averaging needs members trained from one shared initialisation "
                            f"(same train.seed and init node), but they start from "
                            + ", ".join(f"{m.name}=(seed {m.train.seed}, init {m.init})" for m in members) + ".")
    return problems


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of floating-point tensors (weights and BN statistics); counters are taken from the first."""
    out = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            out[k] = torch.stack([s[k].to(torch.float64) for s in states]).mean(0).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def weight_average_blob(blobs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """The student blob of the members' averaged weights; refuses members it cannot average."""
    first = blobs[0]
    for name, b in zip(names, blobs):
        if (b["model"], b["model_kwargs"], b.get("video")) != (first["model"], first["model_kwargs"], first.get("video")):
            raise RaykdError(f"weight averaging: member '{name}' is {b['model']} {b['model_kwargs'] or ''} but "
                             f"'{names[0]}' is {first['model']} {first['model_kwargs'] or ''}; averaging needs one "
                             f"architecture (use ensemble).")
        if b.get("init_fingerprint") != first.get("init_fingerprint") or b.get("init_fingerprint") is None:
            raise RaykdError(f"weight averaging: member '{name}' did not start from the same weights as "
                             f"'{names[0]}' (initial-weight fingerprints differ), so their weights do not "
                             f"correspond; use ensemble, or train the members with one seed and init.")
    return {**first, "state_dict": average_state_dicts([b["state_dict"] for b in blobs]), "metrics": {}}


@torch.no_grad()
def recompute_batch_norm(model: torch.nn.Module, loader) -> int:
    """Re-estimate BN running statistics for averaged weights (as SWA does): the members' averaged
    statistics do not describe the averaged network's activations. Returns the BN layers reset."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the whole pass
    was_training = model.training
    model.train()
    for batch in loader:
        model(batch["image"])
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.train(was_training)
    return len(bns)


def run_integration(node, member_paths: dict[str, str], out_dir: Path, device: torch.device,
                    data_cache: Path | None, log=print) -> dict[str, Any]:
    """Build, evaluate and save one integration node's final student."""
    from raykd import models
    from raykd.data import load_data, make_loader
    from raykd.engine.evaluate import evaluate
    from raykd.engine.latency import latency_ms
    from raykd.engine.student_file import build_student, read_student, save_atomic, save_ensemble

    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(node.data, data_cache)
    names = list(member_paths)
    blobs = [read_student(member_paths[n]) for n in names]
    for name, b in zip(names, blobs):
        if b["num_classes"] != data.num_classes:
            raise RaykdError(f"nodes.{node.name}: member '{name}' predicts {b['num_classes']} classes but the data "
                             f"has {data.num_classes}.")
        if [round(x, 6) for x in b["mean"] + b["std"]] != [round(x, 6) for x in blobs[0]["mean"] + blobs[0]["std"]]:
            raise RaykdError(f"nodes.{node.name}: member '{name}' was trained with a different input normalisation "
                             f"from '{names[0]}' (different data); integrate members of one dataset.")
    blob = weight_average_blob(blobs, names) if node.method.name == "weight_average" else None
    model = build_student(blob if blob is not None else {"model": "ensemble", "members": blobs}).to(device)
    common = dict(cfg=node.data, batch_size=node.data.eval_batch_size, device=device, mean=blobs[0]["mean"],
                  std=blobs[0]["std"], train=False, cpus=node.resources.cpus_per_worker, log=log)
    if blob is not None:
        recompute_batch_norm(model, make_loader(data.train, **common))
        blob["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    test = evaluate(model, make_loader(data.test, **common))
    val = evaluate(model, make_loader(data.val, **common))
    member_top1 = {f"member/{n}/test_top1": b["metrics"].get("test/top1", float("nan")) for n, b in zip(names, blobs)}
    result = {
        "params": models.count_parameters(model), "epochs": 0, "world_size": 1,
        "val/top1": val["top1"], "test/top1": test["top1"], "test/top5": test["top5"],
        "best/test_top1": test["top1"], "best/test_top5": test["top5"],
        "latency_ms": latency_ms(model, data.sample_shape, device), **member_top1,
    }
    if blob is not None:
        save_atomic({**blob, "metrics": result, "data": node.data.model_dump(mode="json")}, out_dir / "final.pt")
    else:
        save_ensemble(out_dir / "final.pt", blobs, data=node.data.model_dump(mode="json"), metrics=result)
    log(f"[{node.name}] {node.method.name} of {', '.join(names)}: test top-1 {test['top1']:.2f}% "
        f"(members {', '.join(f'{v:.2f}' for v in member_top1.values())}), {result['params'] / 1e6:.3f}M params, "
        f"{result['latency_ms']:.2f} ms/input")
    return result
