"""A training epoch's running numbers, kept on the device so that a step never waits for it.

Each step writes one row (total loss, each loss term, correct predictions) into a buffer on the training
device: one tensor op, no read-back. Every `every` steps, and at the end of the epoch, the rows come back to
the host in one transfer. That read-back is also the finite check: a NaN or inf total names the first bad
step and its terms, as a per-step check would, only up to `every` steps later (the checkpoint of the last
finished epoch is untouched either way).
"""

from __future__ import annotations

import math

import torch

from raykd.errors import NonFiniteLossError

CHECK_EVERY = 32  # steps between read-backs: one device sync per this many steps


class StepStats:
    def __init__(self, device: torch.device, every: int = CHECK_EVERY):
        self.device, self.every = device, every
        self.keys: tuple[str, ...] = ()
        self.buf: torch.Tensor | None = None
        self.steps: list[int] = []  # the global step and batch size of each row not yet read back
        self.sizes: list[int] = []
        self.sums: dict[str, float] = {}
        self.correct = 0.0
        self.seen = 0
        self.last_loss: float | None = None  # the mean loss of the last rows read back (the live progress line)

    def add(self, step: int, total: torch.Tensor, terms: dict[str, torch.Tensor], correct: torch.Tensor, n: int,
            *, epoch: int, tag: str) -> None:
        keys = tuple(terms)
        if keys != self.keys:  # the first step, or a method whose terms change: read back what the old rows hold
            self.flush(epoch=epoch, tag=tag)
            self.keys = keys
            self.buf = torch.empty((self.every, len(keys) + 2), device=self.device, dtype=torch.float32)
        with torch.no_grad():
            torch.stack([total, *terms.values(), correct], out=self.buf[len(self.steps)])
        self.steps.append(step)
        self.sizes.append(n)
        if len(self.steps) == self.every:
            self.flush(epoch=epoch, tag=tag)

    def flush(self, *, epoch: int, tag: str) -> None:
        """Read the pending rows back (one device sync); raise on the first non-finite total."""
        if not self.steps:
            return
        rows = self.buf[: len(self.steps)].to("cpu", torch.float64)
        finite = torch.isfinite(rows[:, 0])
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0])
            _raise_non_finite(self.steps[i], dict(zip(self.keys, rows[i, 1:-1].tolist())), epoch=epoch, tag=tag)
        sizes = torch.tensor(self.sizes, dtype=torch.float64)
        weighted = (rows[:, :-1] * sizes[:, None]).sum(0).tolist()
        self.sums["loss"] = self.sums.get("loss", 0.0) + weighted[0]
        for k, v in zip(self.keys, weighted[1:]):
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.correct += float(rows[:, -1].sum())
        self.seen += sum(self.sizes)
        self.last_loss = weighted[0] / sum(self.sizes)
        self.steps, self.sizes = [], []

    def metrics(self) -> dict[str, float]:
        """`train/<term>` means over the epoch's images (`train/loss` the total), and `train/top1`."""
        seen = max(1, self.seen)
        out = {f"train/{k}": v / seen for k, v in self.sums.items() if k != "loss"}
        out["train/loss"] = self.sums.get("loss", float("nan")) / seen
        out["train/top1"] = 100.0 * self.correct / seen
        return out

    def term_names(self) -> list[str]:
        return [k for k in self.sums if k != "loss"]


def _raise_non_finite(step: int, values: dict[str, float], *, epoch: int, tag: str) -> None:
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    raise NonFiniteLossError(
        f"[{tag}] loss became non-finite at step {step} (epoch {epoch + 1}): term(s) {', '.join(bad) or 'total'} "
        f"({shown}). Training stopped; the last good checkpoint is kept. Lower the learning rate, "
        f"enable grad_clip, or check the inputs."
    )
