"""Runs the DAG one node after another in this process: for debugging, tests and laptops."""

from __future__ import annotations

import time

from raykd.errors import RaykdError
from raykd.pipeline.events import Events, blocked_by_failure
from raykd.pipeline.task import NodeTask, run_task


POLL_SECONDS = 1.0


class LocalExecutor:
    name = "local"

    def __init__(self, log=print):
        self.log = log

    def check(self, nodes) -> None:
        """In-process runs use one worker; asking for more is a mistake worth stopping on."""
        many = [n for n, node in nodes.items() if node.resources.workers > 1 and node.trains]
        if many:
            raise RaykdError(f"the local executor runs one worker per node, but {', '.join(many)} ask(s) for "
                             f"resources.workers > 1: use --executor ray for DDP.")

    def execute(self, tasks: dict[str, NodeTask], parents: dict[str, tuple[str, ...]], events: Events) -> None:
        failed: set[str] = set()
        for name, task in tasks.items():  # already in topological order
            blocker = blocked_by_failure(name, parents, failed)
            if blocker:
                failed.add(name)
                events.on_fail(name, RaykdError(f"skipped: its ancestor '{blocker}' failed"))
                continue
            claim = events.claim(name)
            while claim == "wait":  # another run trains it: one node at a time here, so wait for it
                time.sleep(POLL_SECONDS)
                claim = events.claim(name)
            if claim == "done":
                continue
            events.on_start(name)
            try:
                result = run_task(task, log=self.log)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                failed.add(name)
                events.on_fail(name, e)
                continue
            events.on_done(name, result)
