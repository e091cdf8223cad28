"""FRSKD: its losses against numpy in float64, the self-teacher BiFPN built from probe shapes (3- and
4-stage zoo models), where each term's gradients go, export, and one digits epoch through the engine."""

import numpy as np
import pytest
import torch

from raykd import methods, models
from raykd.losses.feature_refine import refined_attention_loss, self_teacher_kd_loss
from raykd.methods.base import MethodContext
from raykd.methods.bifpn import Resample, SelfTeacherBiFPN

rng = np.random.default_rng(0)


def t64(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


# --- losses vs numpy ---------------------------------------------------------------------------------

def np_attention(f, p):
    a = (np.abs(f) ** p).mean(axis=1).reshape(f.shape[0], -1)
    return a / np.maximum(np.sqrt((a * a).sum(axis=1, keepdims=True)), 1e-12)


@pytest.mark.parametrize("p", [2.0, 1.0])
def test_refined_attention_loss_matches_numpy(p):
    # three stages; the refined maps have twice the channels (width 2), same spatial sizes
    shapes = [(3, 4, 8, 8), (3, 6, 4, 4), (3, 8, 2, 2)]
    s = [np.maximum(rng.normal(size=sh), 0) for sh in shapes]
    t = [np.maximum(rng.normal(size=(sh[0], 2 * sh[1], *sh[2:])), 0) for sh in shapes]
    expected = sum(((np_attention(a, p) - np_attention(b, p)) ** 2).mean() for a, b in zip(s, t))
    got = refined_attention_loss([t64(a) for a in s], [t64(b) for b in t], p)
    assert got.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("T", [4.0, 1.0, 2.5])
def test_self_teacher_kd_matches_numpy(T):
    s, t = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3

    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    ls, lt = log_softmax(s / T), log_softmax(t / T)
    expected = (np.exp(lt) * (lt - ls)).sum(axis=1).mean() * T * T  # kl_div(sum) * T^2 / batch
    assert self_teacher_kd_loss(t64(s), t64(t), T).item() == pytest.approx(expected, rel=1e-9)


def test_losses_are_zero_at_the_target_and_never_train_the_self_teacher_side():
    s = [t64(np.abs(rng.normal(size=(2, 3, 4, 4))), grad=True)]
    t = [t64(s[0].detach().numpy().repeat(2, axis=1), grad=True)]  # same attention map, 6 channels
    assert refined_attention_loss(s, t).item() == pytest.approx(0.0, abs=1e-15)
    zs, zt = t64(rng.normal(size=(3, 5)), grad=True), t64(rng.normal(size=(3, 5)), grad=True)
    assert self_teacher_kd_loss(zs, zs.detach(), 4.0).item() == pytest.approx(0.0, abs=1e-12)
    t[0].data.mul_(torch.rand_like(t[0]))
    (refined_attention_loss(s, t) + self_teacher_kd_loss(zs, zt, 4.0)).backward()
    assert s[0].grad.abs().sum() > 0 and zs.grad.abs().sum() > 0
    assert t[0].grad is None and zt.grad is None  # the self-teacher's maps and logits are targets


def test_refined_attention_loss_rejects_mismatched_maps():
    with pytest.raises(ValueError, match="refined map"):
        refined_attention_loss([torch.zeros(1, 2, 4, 4)], [torch.zeros(1, 2, 2, 2)])


# --- the self-teacher ---------------------------------------------------------------------------------

def make(student="resnet8", classes=4, **cfg):
    torch.manual_seed(0)
    s = models.create(student, classes)
    d = methods.build_distiller(methods.validate_method_config({"name": "frskd", **cfg}), s, None)
    d.setup(MethodContext(num_classes=classes, train_labels=torch.arange(16) % classes, image_shape=(3, 32, 32),
                          epochs=10, steps_per_epoch=4))
    return d


def batch(classes=4, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 32, 32, generator=g), "label": torch.arange(n) % classes,
            "index": torch.arange(n)}


@pytest.mark.parametrize("student", ["resnet8", "cifar_resnet18"])  # 3 and 4 stages
def test_self_teacher_refines_every_stage_at_its_size_with_twice_its_channels(student):
    d = make(student)
    out = d.student(torch.zeros(2, 3, 32, 32))
    refined, logits = d.self_teacher(out.features)
    assert len(refined) == len(out.features) == len(d.student.stage_channels)
    for r, f in zip(refined, out.features):
        assert r.shape == (2, 2 * f.shape[1], *f.shape[2:]) and (r >= 0).all()
    assert logits.shape == (2, 4)
    assert d.eval_heads(out).keys() == {"self_teacher"}
    assert torch.equal(d.eval_heads(out)["self_teacher"], logits)


# Training-only parameters on CIFAR-100 (100 classes); cifar_resnet18's equals the official BiFPNc
# (width 2, depth 2, channels 64/128/256/512): 6,375,794.
DTSKD_TABLE1 = {"vgg11_dtskd": 13_488_754, "vgg16_dtskd": 13_488_754, "cifar_resnet18": 6_375_794,
                "resnext18_dtskd": 6_375_794, "seresnet34_dtskd": 6_375_794, "shufflev2_dtskd": 23_318_114}


@pytest.mark.parametrize("student", sorted(DTSKD_TABLE1))
def test_self_teacher_builds_for_every_dtskd_backbone(student):
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        d = make(student, classes=100)
    n = len(d.student.stage_channels)
    assert d.self_teacher.channels == tuple(2 * c for c in d.student.stage_channels)
    assert len(d.self_teacher.up) == len(d.self_teacher.down) == n - 1
    extra = sum(p.numel() for p in d.parameters()) - sum(p.numel() for p in d.student.parameters())
    assert extra == DTSKD_TABLE1[student]


def test_resamplers_follow_the_official_ones_where_sizes_halve_and_adapt_elsewhere():
    modes = lambda d: [m.mode for m in d.self_teacher.modules() if isinstance(m, Resample)]
    assert modes(make("resnet8")) == ["up2", "up2", "pool2", "pool2"]
    with torch.device("meta"):
        assert modes(make("shufflev2_dtskd")) == ["up2", "up2", "identity", "pool2", "pool2", "identity"]
    # TF "same" max-pool (3x3, stride 2, zero padding on the right/bottom for even sizes) as the official
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(Resample((4, 4), (2, 2))(x), torch.tensor([[[[10.0, 11.0], [14.0, 15.0]]]]))
    assert Resample((7, 7), (4, 4))(torch.rand(1, 1, 7, 7)).shape[-2:] == (4, 4)  # odd: still the official pool
    assert Resample((4, 4), (7, 7)).mode == "interpolate" and Resample((8, 8), (3, 3)).mode == "adaptive_max"
    net = SelfTeacherBiFPN([(3, 7, 7), (5, 4, 4), (7, 3, 3)], 10)  # sizes no zoo model has
    refined, logits = net([torch.rand(2, 3, 7, 7), torch.rand(2, 5, 4, 4), torch.rand(2, 7, 3, 3)])
    assert [tuple(r.shape[1:]) for r in refined] == [(6, 7, 7), (10, 4, 4), (14, 3, 3)] and logits.shape == (2, 10)


# --- the method ---------------------------------------------------------------------------------------

def grads(d, term):
    d.zero_grad(set_to_none=True)
    _, losses = d(batch())
    losses[term].backward()
    student = any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.student.parameters())
    teacher = any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.self_teacher.parameters())
    return student, teacher


def test_each_term_trains_what_the_official_code_trains():
    d = make()
    _, losses = d(batch())
    assert set(losses) == {"ce", "teacher_ce", "kd", "feature"}
    assert all(torch.isfinite(v) and v.item() > 0 for v in losses.values())
    assert grads(d, "ce") == (True, False)
    assert grads(d, "teacher_ce") == (True, True)  # its input is not detached: CE reaches the stages too
    assert grads(d, "kd") == (True, False)  # the self-teacher's logits are the target
    assert grads(d, "feature") == (True, False)  # its refined maps are the target
    assert grads(make(detach_input=True), "teacher_ce") == (False, True)


def test_weights_scale_the_terms():
    a, b = make(), make(alpha=1.0, beta=50.0)
    la, lb = a(batch())[1], b(batch())[1]
    assert lb["kd"].item() == pytest.approx(la["kd"].item() / 2, rel=1e-6)
    assert lb["feature"].item() == pytest.approx(la["feature"].item() / 2, rel=1e-6)
    assert lb["ce"].item() == pytest.approx(la["ce"].item(), rel=1e-6)


def test_training_lowers_the_loss_and_exports_only_the_student():
    d = make()
    opt = torch.optim.SGD(d.parameters(), lr=0.05, momentum=0.9)
    b = batch()
    first = None
    for _ in range(8):
        _, losses = d(b)
        loss = sum(losses.values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sum(d(b)[1].values()).item() < first
    plain = models.create("resnet8", 4)
    assert set(d.student.state_dict()) == set(plain.state_dict())
    assert sum(p.numel() for p in d.student.parameters()) == sum(p.numel() for p in plain.parameters())


def test_check_models_names_the_problem():
    cls = methods.get_method("frskd")
    cfg = methods.validate_method_config({"name": "frskd"})
    one_stage = torch.nn.Linear(2, 2)
    one_stage.stage_channels = (8,)
    assert "at least 2 stages" in cls.check_models(cfg, one_stage, None)
    with torch.device("meta"):
        assert cls.check_models(cfg, models.create("resnet8", 10), None) is None


def test_config_defaults_are_the_official_ones():
    cfg = methods.validate_method_config({"name": "frskd"})
    assert (cfg.alpha, cfg.beta, cfg.temperature, cfg.width, cfg.depth, cfg.attention_p, cfg.detach_input) == \
        (2.0, 100.0, 4.0, 2, 2, 2.0, False)
    assert not methods.get_method("frskd").needs_teacher


# --- the engine ---------------------------------------------------------------------------------------
