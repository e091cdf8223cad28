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
def evaluate(model: torch.nn.Module, loader, autocast=contextlib.nullcontext) -> dict[str, float]:
    """Returns top1/top5 in percent and mean CE loss; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    device = loader.device
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # top1, top5, loss, count
    for batch in loader:
        with autocast():
            logits = model(batch["image"]).logits
        logits = logits.float()
        c1, c5 = topk_correct(logits, batch["label"])
        sums += torch.stack([c1.double(), c5.double(),
                             F.cross_entropy(logits, batch["label"], reduction="sum").double(),
                             torch.tensor(float(len(batch["label"])), device=device, dtype=torch.float64)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    model.train(was_training)
    n = max(1.0, sums[3].item())
    return {"top1": 100.0 * sums[0].item() / n, "top5": 100.0 * sums[1].item() / n, "loss": sums[2].item() / n}
