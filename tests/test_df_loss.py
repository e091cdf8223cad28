"""SKD's DF loss: a numpy reference, the per-sample top-K selection, and its edge cases."""

import numpy as np
import pytest
import torch

from raykd import losses

rng = np.random.default_rng(1)


def hand_df(s, t, k):
    """Loop-by-loop float64 DF: per sample, teacher's top-K channels by mean A^2."""
    total = 0.0
    for b in range(s.shape[0]):
        energy = (t[b] ** 2).mean(axis=(1, 2))
        top = np.argsort(-energy, kind="stable")[:k]
        for c in top:
            ms, mt = (s[b, c] ** 2).ravel(), (t[b, c] ** 2).ravel()
            total += ((ms / np.linalg.norm(ms) - mt / np.linalg.norm(mt)) ** 2).mean()
    return total / s.shape[0]


@pytest.mark.parametrize("k", [1, 3, 6])
def test_df_matches_hand_computation(k):
    s, t = rng.normal(size=(4, 6, 5, 5)), rng.normal(size=(4, 6, 5, 5))
    got = losses.df_loss(torch.tensor(s), torch.tensor(t), k).item()
    assert got == pytest.approx(hand_df(s, t, k), rel=1e-10)


def test_df_selects_the_top_channels_per_sample():
    # Sample 0's teacher is loud on channel 0, sample 1's on channel 3: only those channels count.
    t = torch.ones(2, 4, 3, 3, dtype=torch.float64) * 0.1
    t[0, 0] = 5.0
    t[1, 3] = 5.0
    t[0, 0, 0, 0] = 9.0
    t[1, 3, 1, 1] = 9.0
    s = t.clone()
    assert losses.df_loss(s, t, 1).item() == pytest.approx(0.0, abs=1e-12)
    s_wrong = t.clone()
    s_wrong[0, 0] = torch.rand(3, 3, dtype=torch.float64)  # sample 0's selected channel differs
    per_sample = losses.df_loss(s_wrong, t, 1).item()
    assert per_sample > 0
    s_other = t.clone()
    s_other[0, 3] = torch.rand(3, 3, dtype=torch.float64)  # a channel sample 0 did not select
    assert losses.df_loss(s_other, t, 1).item() == pytest.approx(0.0, abs=1e-12)


def test_df_is_invariant_to_the_order_of_non_selected_channels():
    s, t = torch.randn(3, 8, 4, 4, dtype=torch.float64), torch.randn(3, 8, 4, 4, dtype=torch.float64)
    t[:, :2] *= 10  # channels 0 and 1 are the top-2 in every sample
    perm = torch.tensor([0, 1, 7, 5, 2, 6, 3, 4])
    assert losses.df_loss(s[:, perm], t[:, perm], 2).item() == pytest.approx(losses.df_loss(s, t, 2).item(), rel=1e-12)
    s2 = s.clone()
    s2[:, 2:] = torch.randn(3, 6, 4, 4, dtype=torch.float64)  # student's unselected channels: no effect
    assert losses.df_loss(s2, t, 2).item() == pytest.approx(losses.df_loss(s, t, 2).item(), rel=1e-12)


def test_df_with_k_equal_to_all_channels_ignores_the_ranking():
    s, t = rng.normal(size=(2, 5, 4, 4)), rng.normal(size=(2, 5, 4, 4))
    at_per_channel = [losses.at_loss(torch.tensor(s[:, c:c + 1]), torch.tensor(t[:, c:c + 1])).item() for c in range(5)]
    expected = sum(at_per_channel)  # with K = C, DF is AT applied to every channel on its own, summed
    assert losses.df_loss(torch.tensor(s), torch.tensor(t), 5).item() == pytest.approx(expected, rel=1e-10)


def test_df_is_scale_invariant_and_pools_the_larger_map():
    s, t = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 4, 4, 4, dtype=torch.float64)
    a = losses.df_loss(s, t, 2).item()
    assert losses.df_loss(3 * s, 0.5 * t, 2).item() == pytest.approx(a, rel=1e-10)
    pooled = torch.nn.functional.adaptive_avg_pool2d(s, 4)
    assert a == pytest.approx(losses.df_loss(pooled, t, 2).item(), rel=1e-12)


@pytest.mark.parametrize("k", [0, 9])
def test_df_rejects_k_outside_the_channel_count(k):
    with pytest.raises(ValueError, match="k must be in 1..8"):
        losses.df_loss(torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4), k)


def test_df_needs_connected_channels_and_sends_gradient_to_the_student_only():
    with pytest.raises(ValueError, match="connect the student"):
        losses.df_loss(torch.randn(2, 4, 4, 4), torch.randn(2, 8, 4, 4), 2)
    s = torch.randn(2, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    losses.df_loss(s, t.detach(), 3).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
