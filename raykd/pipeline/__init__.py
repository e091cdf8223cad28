"""Pipelines: a DAG of nodes, content-hashed and cached, run by a Ray or in-process executor."""

from raykd.pipeline.plan import PlanNode, make_plan, node_hash
from raykd.pipeline.run import PipelineResult, run_pipeline

__all__ = ["PipelineResult", "PlanNode", "make_plan", "node_hash", "run_pipeline"]
