"""A local Ray started by a raykd driver goes away with it: a SIGKILLed driver leaves no Ray process and no
/tmp/ray session folder behind (pipeline/ray_reaper.py); a clean exit leaves Ray's logs, as Ray does."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raykd.pipeline.ray_reaper import _alive

pytestmark = pytest.mark.slow

DRIVER = """
import sys, time
from raykd.pipeline.ray_executor import ensure_ray
import ray
ensure_ray(num_cpus=1)
node = ray._private.worker._global_node
pids = [p.process.pid for procs in node.all_processes.values() for p in procs]
print(node.get_session_dir_path(), *pids, flush=True)
if sys.argv[1] == "wait":
    time.sleep(600)
"""


def start_driver(mode):
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, mode], stdout=subprocess.PIPE, text=True)
    session, *pids = proc.stdout.readline().split()
    return proc, Path(session), [int(p) for p in pids]


def wait_until(cond, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.5)
    return cond()


def test_a_killed_driver_leaves_no_ray_processes_and_no_session_folder():
    proc, session, pids = start_driver("wait")
    assert session.is_dir() and pids and all(_alive(p) for p in pids)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert wait_until(lambda: not any(_alive(p) for p in pids)), "Ray's processes outlived the driver"
    assert wait_until(lambda: not session.exists()), f"{session} was left behind"
    assert wait_until(lambda: not _mentioning(session.name)), "a process of that Ray session is still running"


def _mentioning(text):
    """Pids whose command line names `text` (Ray's agents carry their session folder in theirs)."""
    found = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if text in (d / "cmdline").read_bytes().decode(errors="replace") and _alive(int(d.name)):
                found.append(int(d.name))
        except OSError:
            continue
    return found


def test_a_clean_exit_leaves_rays_logs_as_ray_does():
    proc, session, pids = start_driver("exit")
    assert proc.wait(timeout=120) == 0
    assert wait_until(lambda: not any(_alive(p) for p in pids))
    time.sleep(2)  # the watcher has looked by now
    assert session.is_dir(), "after a normal exit Ray's session folder (its logs) stays"
