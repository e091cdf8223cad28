"""Every loss in raykd.losses against an independent numpy computation in float64 on small tensors,
plus where the gradients go (student only)."""

import numpy as np
import pytest
import torch

from raykd import losses

rng = np.random.default_rng(0)


def t64(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def softmax(z, axis=1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def avgpool(a, size):
    """Exact average pooling by an integer factor, in numpy."""
    b, c, h, w = a.shape
    f = h // size
    return a.reshape(b, c, size, f, size, f).mean(axis=(3, 5))


# --- DKD -----------------------------------------------------------------------------------------

def hand_dkd(s, t, y, alpha, beta, T):
    total_t, total_n = 0.0, 0.0
    for i in range(len(y)):
        ps, pt = softmax(s[i:i + 1] / T)[0], softmax(t[i:i + 1] / T)[0]
        bs, bt = np.array([ps[y[i]], 1 - ps[y[i]]]), np.array([pt[y[i]], 1 - pt[y[i]]])
        total_t += np.sum(bt * np.log(bt / bs))
        mask = np.arange(len(ps)) != y[i]
        qs, qt = ps[mask] / ps[mask].sum(), pt[mask] / pt[mask].sum()
        total_n += np.sum(qt * np.log(qt / qs))
    n = len(y)
    return (alpha * total_t / n + beta * total_n / n) * T * T


@pytest.mark.parametrize("alpha,beta,T", [(1.0, 8.0, 4.0), (1.0, 2.0, 1.0), (0.5, 0.0, 2.0)])
def test_dkd_matches_hand_computation(alpha, beta, T):
    s, t, y = rng.normal(size=(4, 6)) * 2, rng.normal(size=(4, 6)) * 2, np.array([0, 3, 5, 3])
    got = losses.dkd_loss(t64(s), t64(t), torch.tensor(y), alpha, beta, T).item()
    assert got == pytest.approx(hand_dkd(s, t, y, alpha, beta, T), rel=1e-9)


def test_dkd_tckd_plus_nckd_recovers_kd_when_target_probabilities_agree():
    # Zhao et al. eq. 4: KD = TCKD + (1 - p_t^T) NCKD; with equal target probabilities TCKD = 0.
    s = torch.tensor([[2.0, 0.3, -1.0, 0.5]], dtype=torch.float64)
    t = torch.tensor([[2.0, -0.7, 0.9, 0.2]], dtype=torch.float64)
    t[0, 0] = torch.log(torch.exp(t[0, 1:]).sum() / torch.exp(s[0, 1:]).sum()) + s[0, 0]  # same p_target
    y = torch.tensor([0])
    p_t = torch.softmax(t, 1)[0, 0]
    kd = losses.kd_loss(s, t, 1.0)
    assert losses.dkd_loss(s, t, y, 1.0, 0.0, 1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert kd.item() == pytest.approx(((1 - p_t) * losses.dkd_loss(s, t, y, 0.0, 1.0, 1.0)).item(), rel=1e-9)


# --- attention transfer ---------------------------------------------------------------------------

def hand_at(s, t, p=2):
    def am(f):
        a = (np.abs(f) ** p).mean(axis=1).reshape(f.shape[0], -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)
    if s.shape[-1] > t.shape[-1]:
        s = avgpool(s, t.shape[-1])
    elif t.shape[-1] > s.shape[-1]:
        t = avgpool(t, s.shape[-1])
    return float(np.mean((am(s) - am(t)) ** 2))


@pytest.mark.parametrize("s_hw,t_hw", [(4, 4), (8, 4), (2, 4)])
def test_at_matches_hand_computation_and_pools_the_larger_map(s_hw, t_hw):
    s, t = rng.normal(size=(3, 5, s_hw, s_hw)), rng.normal(size=(3, 7, t_hw, t_hw))
    assert losses.at_loss(t64(s), t64(t)).item() == pytest.approx(hand_at(s, t), rel=1e-9)


def test_at_is_invariant_to_feature_scale():
    s, t = torch.randn(2, 4, 4, 4, dtype=torch.float64), torch.randn(2, 4, 4, 4, dtype=torch.float64)
    assert losses.at_loss(3 * s, t).item() == pytest.approx(losses.at_loss(s, t).item(), rel=1e-9)
    assert losses.at_loss(s, s).item() == pytest.approx(0.0, abs=1e-15)


# --- FitNet -----------------------------------------------------------------------------------------

def test_fitnet_is_mean_squared_error():
    s, t = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    assert losses.fitnet_loss(t64(s), t64(t)).item() == pytest.approx(float(np.mean((s - t) ** 2)), rel=1e-12)


# --- FSP ----------------------------------------------------------------------------------------------

def hand_fsp_matrix(a, b):
    if a.shape[-1] > b.shape[-1]:
        a = avgpool(a, b.shape[-1])
    hw = a.shape[-1] * a.shape[-2]
    out = np.zeros((a.shape[0], a.shape[1], b.shape[1]))
    for n in range(a.shape[0]):
        for i in range(a.shape[1]):
            for j in range(b.shape[1]):
                out[n, i, j] = np.sum(a[n, i] * b[n, j]) / hw
    return out


def test_fsp_matches_hand_computation():
    s = [rng.normal(size=(2, 3, 8, 8)), rng.normal(size=(2, 4, 4, 4)), rng.normal(size=(2, 5, 2, 2))]
    t = [rng.normal(size=(2, 3, 8, 8)), rng.normal(size=(2, 4, 4, 4)), rng.normal(size=(2, 5, 2, 2))]
    expected = sum(np.mean((hand_fsp_matrix(s[i], s[i + 1]) - hand_fsp_matrix(t[i], t[i + 1])) ** 2)
                   for i in range(2))
    got = losses.fsp_loss([t64(x) for x in s], [t64(x) for x in t]).item()
    assert got == pytest.approx(expected, rel=1e-9)
    assert losses.fsp_matrix(t64(s[0]), t64(s[1])).shape == (2, 3, 4)


def test_fsp_needs_matching_stage_lists():
    with pytest.raises(ValueError, match="same number"):
        losses.fsp_loss([torch.zeros(1, 2, 2, 2)], [torch.zeros(1, 2, 2, 2)])


# --- SP -------------------------------------------------------------------------------------------------

def test_sp_matches_hand_computation():
    s, t = rng.normal(size=(4, 3, 2, 2)), rng.normal(size=(4, 6, 1, 1))
    def g(f):
        q = f.reshape(f.shape[0], -1)
        m = q @ q.T
        return m / np.linalg.norm(m, axis=1, keepdims=True)
    expected = float(np.sum((g(t) - g(s)) ** 2) / 16)
    assert losses.sp_loss(t64(s), t64(t)).item() == pytest.approx(expected, rel=1e-9)


# --- AB ----------------------------------------------------------------------------------------------------

def test_ab_matches_hand_computation_elementwise():
    s, t = rng.normal(size=(2, 3, 2, 2)), rng.normal(size=(2, 3, 2, 2))
    m = np.array([0.5, 1.0, 0.25])
    total = 0.0
    for idx in np.ndindex(s.shape):
        sv, tv, mv = s[idx], t[idx], m[idx[1]]
        if tv > 0 and sv <= mv:
            total += (sv - mv) ** 2
        elif tv <= 0 and sv > -mv:
            total += (sv + mv) ** 2
    got = losses.ab_loss(t64(s), t64(t), t64(m)).item()
    assert got == pytest.approx(total / 2, rel=1e-12)


def test_ab_is_zero_once_boundaries_agree_with_margin():
    t = torch.tensor([[1.0, -2.0, 0.5, -0.1]]).view(1, 4, 1, 1)
    s = torch.tensor([[1.5, -1.5, 2.0, -3.0]]).view(1, 4, 1, 1)
    assert losses.ab_loss(s, t, 1.0).item() == 0.0
    assert losses.ab_loss(-s, t, 1.0).item() > 0


# --- VID ----------------------------------------------------------------------------------------------------

def test_vid_matches_gaussian_nll():
    mu, tgt, alpha = rng.normal(size=(2, 3, 2, 2)), rng.normal(size=(2, 3, 2, 2)), rng.normal(size=3)
    var = np.log1p(np.exp(alpha)) + 1e-5
    expected = float(np.mean(0.5 * ((mu - tgt) ** 2 / var[None, :, None, None] + np.log(var)[None, :, None, None])))
    assert losses.vid_loss(t64(mu), t64(alpha), t64(tgt)).item() == pytest.approx(expected, rel=1e-9)


# --- CRD NCE -------------------------------------------------------------------------------------------------

def test_crd_nce_matches_hand_computation():
    scores = rng.uniform(0.01, 2.0, size=(3, 5))
    n_data = 50
    k, pn = 4, 1 / 50
    expected = 0.0
    for row in scores:
        expected -= np.log(row[0] / (row[0] + k * pn + 1e-7))
        expected -= np.sum(np.log(k * pn / (row[1:] + k * pn + 1e-7)))
    assert losses.crd_nce_loss(t64(scores), 1 / n_data).item() == pytest.approx(expected / 3, rel=1e-9)


def test_crd_nce_prefers_high_positive_low_negative_scores():
    good = torch.tensor([[5.0, 0.01, 0.01]])
    bad = torch.tensor([[0.01, 5.0, 5.0]])
    assert losses.crd_nce_loss(good, 0.01) < losses.crd_nce_loss(bad, 0.01)


# --- soft targets / PS-KD --------------------------------------------------------------------------------------

def test_pskd_targets_and_soft_cross_entropy():
    probs = softmax(rng.normal(size=(3, 4)))
    y = np.array([1, 0, 3])
    q = losses.pskd_targets(torch.tensor(y), t64(probs), 0.3).numpy()
    onehot = np.eye(4)[y]
    np.testing.assert_allclose(q, 0.7 * onehot + 0.3 * probs, rtol=1e-12)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-12)
    z = rng.normal(size=(3, 4))
    expected = float(np.mean(-np.sum(q * np.log(softmax(z)), axis=1)))
    assert losses.soft_cross_entropy(t64(z), t64(q)).item() == pytest.approx(expected, rel=1e-9)
    # with alpha 0 the soft target is the label: plain cross-entropy
    ce = torch.nn.functional.cross_entropy(t64(z), torch.tensor(y))
    assert losses.soft_cross_entropy(t64(z), losses.pskd_targets(torch.tensor(y), t64(probs), 0.0)).item() == \
        pytest.approx(ce.item(), rel=1e-12)


# --- gradients go to the student only --------------------------------------------------------------------------

def _feat(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


CASES = {
    "dkd": lambda s, t: losses.dkd_loss(s, t, torch.tensor([0, 1, 2]), 1.0, 8.0, 4.0),
    "kd": lambda s, t: losses.kd_loss(s, t, 4.0),
}
FEATURE_CASES = {
    "at": lambda s, t: losses.at_loss(s, t),
    "fitnet": lambda s, t: losses.fitnet_loss(s, t),
    "sp": lambda s, t: losses.sp_loss(s, t),
    "ab": lambda s, t: losses.ab_loss(s, t, 0.5),
    "fsp": lambda s, t: losses.fsp_loss([s, s * 2], [t, t + 1]),
    "vid": lambda s, t: losses.vid_loss(s, torch.zeros(4, dtype=torch.float64), t),
}


@pytest.mark.parametrize("name", sorted(CASES) + sorted(FEATURE_CASES))
def test_gradient_reaches_the_student_input_only(name):
    if name in CASES:
        s, t = _feat(3, 5), _feat(3, 5)
        fn = CASES[name]
    else:
        s, t = _feat(3, 4, 4, 4), _feat(3, 4, 4, 4)
        fn = FEATURE_CASES[name]
    fn(s, t.detach()).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
