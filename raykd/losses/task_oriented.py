"""Task-Oriented Feature Distillation (Zhang et al., NeurIPS 2020): the three terms of the official
distill.py (github.com/ArchipLab-LinfengZhang/Task-Oriented-Feature-Distillation), as pure functions.

- `tofd_kd_loss`: utils.py `CrossEntropy(outputs, targets, T)`, the soft-target cross-entropy
  -sum_c softmax(t/T)_c log softmax(s/T)_c, batch mean, no T^2 (its gradient is KL's; its value is KL's
  plus the teacher's entropy at T).
- `task_feature_distance`: the official `torch.dist(link(f_s), f_t, p=2)` is the Frobenius norm of the
  [B, D] difference, sum over the batch inside the root; here divided by sqrt(B), i.e. the root of the
  batch mean of per-sample squared L2 distances, so the value does not grow with the batch (the method
  multiplies by sqrt(128), the official batch, to keep the official weight; see methods/tofd.py).
- `orthogonal_loss`: ||W W^T - I||_F + ||W^T W - I||_F on a linkage layer's weight (distill.py, two
  `torch.dist(..., eye, p=2)` per link; unsquared norms, not utils.get_orth_loss's squared sums, which
  distill.py never calls).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.losses.kd import at_least_float32


def tofd_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """-sum_c softmax(t/T)_c * log softmax(s/T)_c, averaged over the batch (no T^2)."""
    t = float(temperature)
    log_p_s = F.log_softmax(at_least_float32(student_logits) / t, dim=1)
    p_t = F.softmax(at_least_float32(teacher_logits) / t, dim=1)
    return -(p_t * log_p_s).sum(1).mean()


def task_feature_distance(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """sqrt(mean_b ||s_b - t_b||^2) over [B, D] features: torch.dist(s, t, 2) / sqrt(B)."""
    s, t = at_least_float32(student_feature), at_least_float32(teacher_feature)
    diff = (s - t).flatten(1)
    # vector_norm's backward is 0 (not NaN) where the difference is exactly zero
    return torch.linalg.vector_norm(diff) / diff.shape[0] ** 0.5


def orthogonal_loss(weight: torch.Tensor) -> torch.Tensor:
    """||W W^T - I||_F + ||W^T W - I||_F for a [out, in] weight (both Gram matrices against identity)."""
    w = at_least_float32(weight).flatten(1)
    eye_out = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
    eye_in = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
    return torch.linalg.matrix_norm(w @ w.t() - eye_out) + torch.linalg.matrix_norm(w.t() @ w - eye_in)
