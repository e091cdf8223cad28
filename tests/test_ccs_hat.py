"""CCS (channel correlation structure) and H-AT (hybrid attention transfer): losses against independent float64
numpy computations, the methods' modules, weights and gradients, and one digits epoch through the engine."""

import numpy as np
import pytest
import torch

from conftest import REPO
from raykd import methods, models
from raykd.config import load_experiment
from raykd.losses.attention import at_loss
from raykd.losses.channel_correlation import ccs_inter_loss, ccs_intra_loss
from raykd.losses.hybrid_attention import channel_attention_loss, spatial_attention_loss
from raykd.methods.base import MethodContext

rng = np.random.default_rng(0)


def t64(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def avgpool(a, size):
    b, c, h, w = a.shape
    f = h // size
    return a.reshape(b, c, size, f, size, f).mean(axis=(3, 5))


def pooled(s, t):
    if s.shape[-1] > t.shape[-1]:
        s = avgpool(s, t.shape[-1])
    elif t.shape[-1] > s.shape[-1]:
        t = avgpool(t, s.shape[-1])
    return s, t


def unit(v):
    n = np.sqrt((v * v).sum())
    return v / max(n, 1e-12)


def features(b, c, h, dead=True):
    """Post-ReLU-like maps, with one all-zero map (a silenced channel) when `dead`."""
    a = np.maximum(rng.normal(size=(b, c, h, h)), 0) + 0.1 * rng.normal(size=(b, c, h, h))
    if dead:
        a[1, 2] = 0.0
    return a


# --- CCS loss vs numpy ---------------------------------------------------------------------------

def hand_intra(s, t, centered):
    s, t = pooled(s, t)
    b, c = s.shape[:2]
    total = 0.0
    for i in range(b):
        for m in range(c):
            for n in range(c):
                cors = []
                for a in (s, t):
                    x, y = a[i, m].ravel(), a[i, n].ravel()
                    if centered:
                        x, y = x - x.mean(), y - y.mean()
                    cors.append(float(np.dot(unit(x), unit(y))))
                total += (cors[0] - cors[1]) ** 2
    return total / (b * c * c)


def hand_inter(s, t, centered):
    s, t = pooled(s, t)
    b, c = s.shape[:2]
    total = 0.0
    for ch in range(c):
        for i in range(b):
            for j in range(b):
                cors = []
                for a in (s, t):
                    x, y = a[i, ch].ravel(), a[j, ch].ravel()
                    if centered:
                        x, y = x - x.mean(), y - y.mean()
                    cors.append(float(np.dot(unit(x), unit(y))))
                total += (cors[0] - cors[1]) ** 2
    return total / (c * b * b)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("hs,ht", [(4, 4), (8, 4), (2, 4)])
def test_ccs_losses_match_hand_computation(centered, hs, ht):
    s, t = features(3, 5, hs), features(3, 5, ht)
    assert ccs_intra_loss(t64(s), t64(t), centered).item() == pytest.approx(hand_intra(s, t, centered), rel=1e-9)
    assert ccs_inter_loss(t64(s), t64(t), centered).item() == pytest.approx(hand_inter(s, t, centered), rel=1e-9)


def test_ccs_losses_vanish_for_equal_structures_and_see_the_right_invariances():
    t = features(4, 6, 4, dead=False)
    assert ccs_intra_loss(t64(t), t64(t)).item() == pytest.approx(0.0, abs=1e-12)
    assert ccs_inter_loss(t64(t), t64(t)).item() == pytest.approx(0.0, abs=1e-12)
    # intra compares channels within a sample, so any positive per-(sample, channel) scale leaves both unchanged;
    # a map's cosine to the others is all either term reads
    scale = rng.uniform(0.5, 3.0, size=(4, 6, 1, 1))
    assert ccs_intra_loss(t64(t * scale), t64(t)).item() == pytest.approx(0.0, abs=1e-12)
    assert ccs_inter_loss(t64(t * scale), t64(t)).item() == pytest.approx(0.0, abs=1e-12)
    # centred (Pearson) also ignores a constant added to a map; cosine does not
    shift = rng.uniform(0.5, 3.0, size=(4, 6, 1, 1))
    assert ccs_intra_loss(t64(t + shift), t64(t), centered=True).item() == pytest.approx(0.0, abs=1e-12)
    assert ccs_intra_loss(t64(t + shift), t64(t)).item() > 1e-4
    # mixing two of the student's channels changes both structures
    mixed = t.copy()
    mixed[:, 0] = t[:, 0] + t[:, 1]
    assert ccs_intra_loss(t64(mixed), t64(t)).item() > 1e-4
    assert ccs_inter_loss(t64(mixed), t64(t)).item() > 1e-4


def test_ccs_losses_need_connected_channels_and_send_gradient_to_the_student_only():
    with pytest.raises(ValueError, match="connect the student"):
        ccs_intra_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 5, 4, 4))
    with pytest.raises(ValueError, match="connect the student"):
        ccs_inter_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 5, 4, 4))
    s, t = t64(features(3, 4, 4), grad=True), t64(features(3, 4, 4))
    (ccs_intra_loss(s, t) + ccs_inter_loss(s, t)).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0 and t.grad is None


def test_ccs_losses_promote_half_precision():
    s, t = torch.rand(2, 3, 4, 4).half(), torch.rand(2, 3, 4, 4).half()
    assert ccs_intra_loss(s, t).dtype == torch.float32 and ccs_inter_loss(s, t).dtype == torch.float32


# --- H-AT losses vs numpy ------------------------------------------------------------------------

def hand_channel(s, t):
    total = 0.0
    for i in range(s.shape[0]):
        a, b = unit(s[i].mean(axis=(1, 2))), unit(t[i].mean(axis=(1, 2)))
        total += (1 - float(np.dot(unit(a), unit(b)))) ** 2
    return total / s.shape[0]


def hand_at(s, t, p):
    s, t = pooled(s, t)
    total = 0.0
    for i in range(s.shape[0]):
        qs, qt = unit((np.abs(s[i]) ** p).mean(axis=0).ravel()), unit((np.abs(t[i]) ** p).mean(axis=0).ravel())
        total += ((qs - qt) ** 2).sum()
    return total / (s.shape[0] * qs.size)


@pytest.mark.parametrize("hs,ht", [(4, 4), (8, 4), (2, 4)])
def test_hat_losses_match_hand_computation(hs, ht):
    s, t = features(4, 5, hs) - 0.2, features(4, 5, ht)
    assert channel_attention_loss(t64(s), t64(t)).item() == pytest.approx(hand_channel(s, t), rel=1e-9)
    assert spatial_attention_loss(t64(s), t64(t), 2).item() == pytest.approx(hand_at(s, t, 2), rel=1e-9)
    s3 = features(4, 3, hs)  # AT: channels may differ
    assert spatial_attention_loss(t64(s3), t64(t), 3).item() == pytest.approx(hand_at(s3, t, 3), rel=1e-9)


def test_channel_attention_loss_properties():
    t = features(4, 6, 4, dead=False)
    # zero for equal channel attention, whatever the spatial layout or the overall scale
    s = 2.5 * t[:, :, ::-1, :].copy()
    assert channel_attention_loss(t64(s), t64(t)).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="connect the student"):
        channel_attention_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 5, 4, 4))
    s = t64(features(4, 6, 4), grad=True)
    channel_attention_loss(s, t64(t)).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


# --- the methods ---------------------------------------------------------------------------------

def make(method, student="resnet8", teacher="resnet20", classes=4, **cfg):
    torch.manual_seed(0)
    s = models.create(student, classes)
    t = models.create(teacher, classes).eval()
    d = methods.build_distiller(methods.validate_method_config({"name": method, **cfg}), s, t)
    d.setup(MethodContext(num_classes=classes, train_labels=torch.arange(16) % classes, image_shape=(3, 32, 32),
                          epochs=2, steps_per_epoch=2))
    return d


def batch(n=8, seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 32, 32, generator=g), "label": torch.arange(n) % classes,
            "index": torch.arange(n)}


def extra_params(d):
    return sum(p.numel() for p in d.parameters()) - sum(p.numel() for p in d.student.parameters())


def connector_shapes(d):
    return [None if isinstance(c, torch.nn.Identity) else (c[0][0].in_channels, c[0][0].out_channels)
            for c in d.connectors]


@pytest.mark.parametrize("method", ["ccs", "hat"])
def test_connectors_only_where_widths_differ(method):
    same = make(method)  # resnet20 -> resnet8: 16/32/64 both
    assert connector_shapes(same) == [None, None, None] and extra_params(same) == 0
    three = make(method, teacher="wrn_40_2")  # 32/64/128 teacher, 16/32/64 student
    assert connector_shapes(three) == [(16, 32), (32, 64), (64, 128)]
    assert extra_params(three) == sum(ci * co + 2 * co for ci, co in [(16, 32), (32, 64), (64, 128)])
    four = make(method, student="mobilenetv2", teacher="cifar_resnet18")  # 4 stages, other spatial sizes too
    assert connector_shapes(four) == [(12, 64), (16, 128), (48, 256), (160, 512)]
    d = four.train()
    _, losses = d(batch())
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.connectors.parameters())
    assert set(d.student.state_dict()) == set(models.create("mobilenetv2", 4).state_dict())


def test_terms_and_zero_weights():
    assert set(make("ccs")(batch())[1]) == {"ce", "ccs_intra", "ccs_inter"}
    assert set(make("ccs", inter_weight=0)(batch())[1]) == {"ce", "ccs_intra"}
    d = make("ccs", intra_weight=0, inter_weight=0, teacher="wrn_40_2")
    assert set(d(batch())[1]) == {"ce"} and extra_params(d) == 0
    assert set(make("hat")(batch())[1]) == {"ce", "hat_spatial", "hat_channel"}
    d = make("hat", channel_weight=0, teacher="wrn_40_2")
    assert set(d(batch())[1]) == {"ce", "hat_spatial"} and extra_params(d) == 0


def test_hat_weights_follow_the_official_stage_multipliers():
    d3 = make("hat")
    assert d3.stage_scale == pytest.approx([0.01, 0.1, 1.0])  # x DELTA 10: channel 0.1/1/10, spatial 10/100/1000
    d4 = make("hat", student="cifar_resnet18", teacher="cifar_resnet18")
    assert d4.stage_scale == pytest.approx([0.001, 0.01, 0.1, 1.0])
    # the logged terms are exactly the weighted per-stage losses
    d3.eval()
    b = batch()
    _, losses = d3(b)
    with torch.no_grad():
        s, t = d3.student(b["image"]), d3.teacher(b["image"])
    spatial = sum(w * at_loss(s.features[k], t.features[k]) for k, w in enumerate([10, 100, 1000]))
    channel = sum(w * channel_attention_loss(s.features[k], t.features[k]) for k, w in enumerate([0.1, 1, 10]))
    assert losses["hat_spatial"].item() == pytest.approx(spatial.item(), rel=1e-5)
    assert losses["hat_channel"].item() == pytest.approx(channel.item(), rel=1e-5)


def test_ccs_logged_terms_are_the_summed_stage_losses():
    d = make("ccs", intra_weight=2.0, inter_weight=3.0, centered=True).eval()
    b = batch()
    _, losses = d(b)
    with torch.no_grad():
        s, t = d.student(b["image"]), d.teacher(b["image"])
    intra = sum(ccs_intra_loss(s.features[k], t.features[k], True) for k in range(3))
    inter = sum(ccs_inter_loss(s.features[k], t.features[k], True) for k in range(3))
    assert losses["ccs_intra"].item() == pytest.approx(2.0 * intra.item(), rel=1e-5)
    assert losses["ccs_inter"].item() == pytest.approx(3.0 * inter.item(), rel=1e-5)


@pytest.mark.parametrize("method,terms", [("ccs", ("ccs_intra", "ccs_inter")), ("hat", ("hat_spatial", "hat_channel"))])
def test_distillation_terms_fall_and_the_teacher_stays_frozen(method, terms):
    d = make(method, teacher="wrn_40_2", ce_weight=0.0)
    before = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    opt = torch.optim.SGD(d.parameters(), lr=0.05, momentum=0.9)
    b = batch(16, seed=1)
    d.train()
    history = []
    for _ in range(8):
        _, losses = d(b)
        history.append({k: losses[k].item() for k in terms})
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    for k in terms:
        assert history[-1][k] < history[0][k], (k, history)
    assert all(p.grad is None for p in d.teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in d.teacher.state_dict().items())



def test_every_cifar100_pair_has_ccs_and_hat_presets():
    kd = {p.name for p in (REPO / "conf" / "cifar100" / "kd").glob("*.yaml")}
    for method in ("ccs", "hat"):
        presets = sorted((REPO / "conf" / "cifar100" / method).glob("*.yaml"))
        assert {p.name for p in presets} == kd
        for p in presets:
            exp, ref = load_experiment(p), load_experiment(REPO / "conf" / "cifar100" / "kd" / p.name)
            assert exp.nodes["student"].method.name == method
            for node in ("teacher", "student"):
                assert exp.nodes[node].model == ref.nodes[node].model
            assert exp.nodes["student"].train == ref.nodes["student"].train  # the pair's learning rate
