"""The table printed at the end of `raykd run`."""

from __future__ import annotations

from raykd.pipeline.run import PipelineResult

COLUMNS = ("node", "method", "model", "from", "params", "test top-1 (last)", "test top-1 (best val)",
           "ms/input", "seconds", "status", "MLflow run")


def rows(result: PipelineResult) -> list[tuple[str, ...]]:
    out = []
    for name, o in result.nodes.items():
        r = o.result
        pct = (lambda k: f"{r[k]:.2f}" if k in r else "-")
        node = o.plan.node
        source = node.teacher or ("+".join(node.members) if node.members else f"init:{node.init}" if node.init else "-")
        out.append((
            name, node.method.name + (f" ({node.method.substage})" if hasattr(node.method, "substage") else ""),
            node.model, source,
            f"{r['params'] / 1e6:.3f}M" if "params" in r else "-",
            pct("test/top1"), pct("best/test_top1"),
            f"{r['latency_ms']:.2f}" if "latency_ms" in r else "-",
            f"{r.get('seconds', o.seconds):.0f}" if r or o.seconds else "-",
            o.status, o.run_id or "-",
        ))
    return out


def format_table(result: PipelineResult) -> str:
    body = rows(result)
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(COLUMNS)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(COLUMNS), line(["-" * w for w in widths])] + [line(r) for r in body]
    if result.registered:
        out.append(f"\nregistered: models:/{result.registered[0]}@final (version {result.registered[1]})")
    out.append(f"MLflow: {result.tracking_uri}  parent run {result.parent_run_id}  (browse with `raykd ui`)")
    for o in result.nodes.values():
        if o.error:
            out.append(f"{o.name}: {o.error}")
    return "\n".join(out)
