"""The live view of a sweep: a compact table of trials (config, epoch, metric, status), printed when a trial
finishes or stops and at most every `every` seconds otherwise, instead of Tune's full-width reporter."""

from __future__ import annotations

import time

from ray.tune import Callback

from raykd.sweep.space import unpack
from raykd.text_table import aligned


class TrialTable(Callback):
    def __init__(self, metric: str, epochs: int, log=print, every: float = 20.0):
        self.metric, self.epochs, self.log, self.every = metric, epochs, log, every
        self.rows: dict[str, dict] = {}
        self._printed = 0.0

    def __getstate__(self):  # Tune pickles its callbacks with the experiment state; the log function stays here
        return {**self.__dict__, "log": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.log = self.log or print

    def _update(self, trial, status: str, result: dict | None = None) -> None:
        row = self.rows.setdefault(trial.trial_id, {"config": "", "epoch": 0, "value": None, "status": status})
        if result:
            row["config"] = result.get("config_key", row["config"])
            seed = unpack(trial.config or {}).get("train.seed")
            if seed is not None and "seed" not in row["config"]:
                row["config"] += f" seed {seed}"
            row["epoch"] = result.get("epoch", row["epoch"])
            row["value"] = result.get(self.metric, row["value"])
            if result.get("cached"):
                status = "cached"
        row["status"] = status

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._update(trial, "running", result)
        if time.time() - self._printed > self.every:
            self.print(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = self.rows.get(trial.trial_id, {})
        done = row.get("epoch", 0) >= self.epochs
        self._update(trial, row.get("status") if row.get("status") == "cached" else "done" if done else "stopped")
        self.print(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._update(trial, "failed")
        self.print(trials)

    def print(self, trials=()) -> None:
        self._printed = time.time()
        if not self.rows:
            return
        pending = sum(1 for t in trials if t.trial_id not in self.rows)
        body = [(tid[-5:], r["config"], f"{r['epoch']}/{self.epochs}",
                 f"{r['value']:.2f}" if isinstance(r["value"], (int, float)) else "-", r["status"])
                for tid, r in self.rows.items()]
        head = ("trial", "config", "epoch", self.metric, "status")
        counts = {s: sum(1 for r in self.rows.values() if r["status"] == s) for s in
                  ("running", "done", "cached", "stopped", "failed")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) + (f", {pending} pending" if pending else "")
        self.log("\n".join([f"raykd tune: {summary}", *aligned(head, body)]))
