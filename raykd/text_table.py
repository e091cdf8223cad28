"""Every table raykd prints (the run summary, a sweep's configs and live trials, a report): columns padded to
their widest cell, a rule under the header, two spaces between columns."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def aligned(head: Sequence[str], body: Iterable[Sequence[str]], right: Iterable[int] = ()) -> list[str]:
    """The table's lines; columns whose index is in `right` are right-aligned (numbers)."""
    body = [list(r) for r in body]
    right = set(right)
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [line(head), line(["-" * w for w in widths])] + [line(r) for r in body]
