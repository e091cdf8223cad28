"""The quickstart's wall time on the Ray executor vs the in-process one, from a fresh store each (what
`make quickstart` costs after install). Targets: Ray <= 4 minutes on a 2-core machine, and not slower than
in-process.

Writes its section of bench/RESULTS.md.   python bench/quickstart_time.py [ROUNDS]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from timing import measured_on, write_section

ROOT = Path(__file__).resolve().parent
CONFIG = ROOT.parent / "conf" / "quickstart.yaml"


def timed_run(executor: str, storage: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "raykd.cli", "run", str(CONFIG), "--executor", executor,
                           f"storage={storage}"], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"the quickstart failed on {executor}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def _minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s"


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2  # alternating, as this machine's speed drifts
    runs: dict[str, list[float]] = {"ray": [], "local": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for ex in runs:
                runs[ex].append(timed_run(ex, f"{tmp}/{ex}{r}"))
                print(ex, r, f"{runs[ex][-1]:.0f} s", flush=True)
    times = {ex: statistics.median(v) for ex, v in runs.items()}
    lines = ["## The quickstart, end to end (`cpu`)", "",
             measured_on("bench/quickstart_time.py", torch.device("cpu")) + f" `raykd run conf/quickstart.yaml` on "
             f"{os.cpu_count()} CPUs from a fresh store (17 nodes; Ray runs two 1-CPU nodes at a time, in-process one "
             "node at a time on all threads); the Ray time includes starting Ray.", "",
             f"| executor | wall (median of {rounds}, alternating) | each run |", "| --- | --- | --- |",
             f"| ray | **{_minutes(times['ray'])}** (target <= 4 min) | {', '.join(map(_minutes, runs['ray']))} |",
             f"| local (in-process) | {_minutes(times['local'])} | {', '.join(map(_minutes, runs['local']))} |",
             "", f"Ray / in-process: **{times['ray'] / times['local']:.2f}** (target <= 1)."]
    write_section(ROOT / "RESULTS.md", "quickstart-cpu", lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
