"""Round-robin step timing shared by the benches: every variant runs once per round, so drift (thermal,
other processes) hits all of them alike; the median over rounds is reported. Also the line that says
where a bench measured."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def round_robin(steps: dict[str, Callable[[], None]], iters: int, device: torch.device, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each step."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    for _ in range(iters):
        for k, fn in steps.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def sgd_step(distiller, batch) -> Callable[[], None]:
    """One training step of `distiller` (forward, summed losses, backward, SGD) as a closure."""
    opt = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def step():
        loss = sum(distiller(batch)[1].values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measured_on(script: str, device: torch.device) -> str:
    """The machine, device and versions behind a results file, as its opening line."""
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return (f"Measured by `{script}` on {platform.machine()} ({os.cpu_count()} CPUs) with {torch.get_num_threads()} "
            f"torch threads, device `{device}`{gpu}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. "
            "Every number in a table comes from the same run.")


def write_section(path, key: str, lines: list[str]) -> None:
    """Replace this script's section of a results file shared by several benches (or append it), so each bench
    rewrites its own numbers and leaves the others'."""
    from pathlib import Path

    path = Path(path)
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = "\n".join([start, *lines, end])
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)
