"""How an executor reports progress back to the pipeline (which tracks and caches it)."""

from __future__ import annotations

from typing import Any, Protocol


class Events(Protocol):
    def claim(self, name: str) -> str:
        """'run' (start it now), 'wait' (another run holds it: ask again later) or 'done' (finished elsewhere)."""
        ...

    def on_start(self, name: str) -> None: ...

    def on_done(self, name: str, result: dict[str, Any]) -> None: ...

    def on_fail(self, name: str, error: BaseException) -> None: ...


def blocked_by_failure(name: str, parents: dict[str, tuple[str, ...]], failed: set[str]) -> str | None:
    """The failed ancestor that blocks `name`, if any."""
    for p in parents.get(name, ()):
        if p in failed:
            return p
        up = blocked_by_failure(p, parents, failed)
        if up:
            return up
    return None
