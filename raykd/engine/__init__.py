"""One training run, independent of Ray and MLflow."""

from raykd.engine.student_file import load_student, save_student
from raykd.engine.trainer import FINAL, RunContext, fit, pick_device

__all__ = ["FINAL", "RunContext", "fit", "load_student", "pick_device", "save_student"]
