"""raykd: knowledge distillation pipelines on Ray, tracked in MLflow."""

__version__ = "0.1.0"
