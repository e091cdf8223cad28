"""Top-k accuracy and loss over a loader, summed across DDP ranks."""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn.functional as F


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hit = pred.eq(labels[:, None])
    return [hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks]


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, autocast=contextlib.nullcontext, heads=None) -> dict[str, float]:
    """Returns top1/top5 in percent and mean CE loss; the model's mode is restored after. With `heads` (a
    distiller), each of its training-only classifiers' top-1 too, as `<head>_top1`."""
    modules = [m for m in (model, heads) if m is not None]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    device = loader.device
    sums, names = None, []  # top1, top5, loss, count, then each head's top1
    for batch in loader:
        with autocast():
            out = model(batch["image"])
            extra = heads.eval_heads(out) if heads is not None else {}
        logits = out.logits.float()
        c1, c5 = topk_correct(logits, batch["label"])
        row = [c1.double(), c5.double(), F.cross_entropy(logits, batch["label"], reduction="sum").double(),
               torch.tensor(float(len(batch["label"])), device=device, dtype=torch.float64)]
        row += [topk_correct(z.float(), batch["label"], ks=(1,))[0].double() for z in extra.values()]
        names = list(extra)
        sums = torch.stack(row) if sums is None else sums + torch.stack(row)
    if sums is None:
        sums = torch.zeros(4 + len(names), device=device, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    for m, mode in zip(modules, modes):
        m.train(mode)
    n = max(1.0, sums[3].item())
    result = {"top1": 100.0 * sums[0].item() / n, "top5": 100.0 * sums[1].item() / n, "loss": sums[2].item() / n}
    result.update({f"{name}_top1": 100.0 * v / n for name, v in zip(names, sums[4:].tolist())})
    return result
