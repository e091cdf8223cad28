"""Clean-up after a driver that dies without Ray's own shutdown (SIGKILL, the OOM killer, a lost session).

When raykd starts a local Ray, it also starts this small watcher in a session of its own. A normal exit
stops the watcher, and Ray's own shutdown runs (its session folder, with its logs, stays as Ray leaves
it). If the driver dies without that, the watcher kills every process of that Ray it has seen (GCS,
raylet, dashboard, monitors, and what they started: workers, agents) and removes the session's folder
under /tmp/ray. A cluster raykd only connects to is never touched. Descendants are found through /proc
(Linux); elsewhere only the processes Ray reported are stopped.

    python raykd/pipeline/ray_reaper.py DRIVER_PID SESSION_DIR PID [PID ...]   (standard library only)
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.5


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: state, ppid, ..., start time (Linux); [] elsewhere."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _stat(pid)
    return not stat or stat[0] not in ("Z", "X")  # a zombie is dead for our purpose


def _tree(pids: list[int]) -> dict[int, str]:
    """The processes and all their descendants, as {pid: start time} (so a reused pid is never mistaken
    for one of them); only the given pids where /proc is missing."""
    kids: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for d in Path("/proc").glob("[0-9]*"):
        stat = _stat(int(d.name))
        if len(stat) > 19:
            kids.setdefault(int(stat[1]), []).append(int(d.name))
            starts[int(d.name)] = stat[19]
    found: dict[int, str] = {}

    def visit(pid: int) -> None:
        if pid in found:
            return
        found[pid] = starts.get(pid, "")
        for c in kids.get(pid, ()):
            visit(c)

    for pid in pids:
        visit(pid)
    return found


def reap(driver: int, session: Path, pids: list[int]) -> None:
    """Remember every process of the local Ray while the driver lives (children of Ray's processes move to
    init once their parent dies, so they must be known before); when the driver is gone, kill those still
    alive and remove the session folder. Reached only when the driver died without stopping the watcher
    (see `start`)."""
    known: dict[int, str] = {}
    while _alive(driver):
        known.update(_tree(pids))
        time.sleep(POLL_SECONDS)
    for pid, started in known.items():
        stat = _stat(pid)
        if _alive(pid) and (not started or (len(stat) > 19 and stat[19] == started)):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    shutil.rmtree(session, ignore_errors=True)
    latest = session.parent / "session_latest"
    if latest.is_symlink() and not latest.exists():
        latest.unlink(missing_ok=True)


def start(session: Path, pids: list[int]) -> None:
    """Watch this process (the driver) from a detached watcher. A normal exit stops the watcher first (atexit),
    so Ray's own shutdown runs and its session folder, with its logs, stays as Ray leaves it."""
    import atexit
    import subprocess

    # Run as a script, not `-m raykd.pipeline...`: the package would import torch, MLflow and Ray (half a GB and
    # seconds of CPU) into a watcher that needs only the standard library.
    watcher = subprocess.Popen([sys.executable, "-I", __file__, str(os.getpid()), str(session), *map(str, pids)],
                               start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    atexit.register(watcher.kill)


if __name__ == "__main__":
    reap(int(sys.argv[1]), Path(sys.argv[2]), [int(p) for p in sys.argv[3:]])
