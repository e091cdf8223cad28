"""This process's peak resident memory, for the streaming path's `data/peak_rss_mb`.

`ru_maxrss` will not do: on Linux a child inherits its parent's peak through fork, and Ray keeps worker
processes for the next node, so it would report whatever ran before. The kernel's `VmHWM` can be reset
(`/proc/self/clear_refs`, "5"), so a run measures its own peak.
"""

from __future__ import annotations

import sys


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # elsewhere (macOS): the lifetime peak, in bytes there

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
