"""Inference latency of an exported model: what a deployment of one input would wait for."""

from __future__ import annotations

import statistics
import time

import torch


@torch.no_grad()
def latency_ms(model: torch.nn.Module, input_shape: tuple[int, ...], device: torch.device, runs: int = 20,
               warmup: int = 3) -> float:
    """Median wall time of one batch-1 forward in eval mode, in milliseconds."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape, device=device)
    times = []
    for i in range(warmup + runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    model.train(was_training)
    return 1000.0 * statistics.median(times)
