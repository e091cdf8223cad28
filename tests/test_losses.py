"""kd_loss against an independent float64 computation, and where its gradients go."""

import math

import numpy as np
import pytest
import torch

from raykd.losses import kd_loss


def hand_kd(s, t, T):
    """T^2 * mean_b sum_c p_t log(p_t / p_s), with p = softmax(logits / T), in plain numpy."""
    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    ps, pt = softmax(s / T), softmax(t / T)
    return T * T * float(np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1)))


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_matches_hand_computation(T):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
    got = kd_loss(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64), T).item()
    assert got == pytest.approx(hand_kd(s, t, T), rel=1e-6)


def test_small_worked_example():
    # Two classes, T = 1: p_t = (0.5, 0.5), p_s = softmax(0, ln 3) = (0.25, 0.75).
    s = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    t = torch.zeros(1, 2, dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kd_loss(s, t, 1.0).item() == pytest.approx(expected, rel=1e-9)
    assert kd_loss(s, t, 2.0).item() > 0


def test_zero_iff_same_distribution_and_shift_invariant():
    t = torch.randn(4, 10, dtype=torch.float64)
    assert kd_loss(t.clone(), t, 4.0).item() == pytest.approx(0.0, abs=1e-12)
    assert kd_loss(t + 5.0, t, 4.0).item() == pytest.approx(0.0, abs=1e-12)
    assert kd_loss(torch.randn(4, 10, dtype=torch.float64), t, 4.0).item() > 0


def test_gradient_flows_to_student_only():
    s = torch.randn(6, 5, requires_grad=True)
    t = torch.randn(6, 5, requires_grad=True)
    kd_loss(s, t.detach(), 4.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    # Softmax gradients sum to zero across classes.
    assert torch.allclose(s.grad.sum(dim=1), torch.zeros(6), atol=1e-6)


def test_batch_mean_not_sum():
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    doubled = kd_loss(torch.cat([s, s]), torch.cat([t, t]), 2.0)
    assert doubled.item() == pytest.approx(kd_loss(s, t, 2.0).item(), rel=1e-6)
