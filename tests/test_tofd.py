"""TOFD: its losses against float64 numpy, the auxiliary classifiers and links built from probe shapes
(3- and 4-stage pairs of different widths), where gradients go, the temperature ramp, export, and one
digits epoch through the engine."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from raykd import methods, models
from raykd.losses.kd import kd_loss
from raykd.losses.task_oriented import orthogonal_loss, task_feature_distance, tofd_kd_loss
from raykd.methods.aux_classifiers import SepConv
from raykd.methods.base import MethodContext

rng = np.random.default_rng(0)
TERMS = {"ce", "aux", "teacher_aux", "kd", "feature", "orth"}


def t64(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- losses ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1.0, 1.3, 4.0])
def test_soft_target_ce_matches_numpy(T):
    s, t = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
    log_ps = np.log(np_softmax(s / T))
    want = np.mean([-sum(np_softmax(t / T)[b, c] * log_ps[b, c] for c in range(7)) for b in range(5)])
    assert tofd_kd_loss(t64(s), t64(t), T).item() == pytest.approx(want, rel=1e-9)


def test_soft_target_ce_has_kls_gradient_and_differs_by_the_teacher_entropy():
    s, t, T = rng.normal(size=(4, 6)), rng.normal(size=(4, 6)), 2.5
    a, b = t64(s, grad=True), t64(s, grad=True)
    ce, kl = tofd_kd_loss(a, t64(t), T), kd_loss(b, t64(t), T) / T ** 2
    ce.backward(), kl.backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-12, atol=1e-15)
    p = np_softmax(t / T)
    assert (ce - kl).item() == pytest.approx(-(p * np.log(p)).sum(1).mean(), rel=1e-9)


def test_feature_distance_matches_numpy_and_is_torch_dist_over_sqrt_batch():
    s, t = rng.normal(size=(6, 9)), rng.normal(size=(6, 9))
    want = math.sqrt(sum(((s[b] - t[b]) ** 2).sum() for b in range(6)) / 6)
    got = task_feature_distance(t64(s), t64(t))
    assert got.item() == pytest.approx(want, rel=1e-9)
    assert (got * math.sqrt(6)).item() == pytest.approx(torch.dist(t64(s), t64(t), p=2).item(), rel=1e-12)


def test_feature_distance_is_zero_with_zero_gradient_when_features_agree():
    s = t64(rng.normal(size=(3, 4)), grad=True)
    d = task_feature_distance(s, s.detach().clone())
    d.backward()
    assert d.item() == 0.0 and torch.equal(s.grad, torch.zeros_like(s))


@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (8, 4)])
def test_orthogonal_loss_matches_numpy(shape):
    w = rng.normal(size=shape) * 0.5
    want = math.sqrt(((w @ w.T - np.eye(shape[0])) ** 2).sum()) + math.sqrt(((w.T @ w - np.eye(shape[1])) ** 2).sum())
    assert orthogonal_loss(t64(w)).item() == pytest.approx(want, rel=1e-9)


def test_orthogonal_loss_of_orthonormal_rows():
    q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    assert orthogonal_loss(t64(q)).item() == pytest.approx(0.0, abs=1e-12)
    # 3 orthonormal rows of 7: W W^T = I, W^T W a rank-3 projection, ||P - I||_F = sqrt(7 - 3)
    assert orthogonal_loss(t64(q[:3])).item() == pytest.approx(2.0, rel=1e-9)


# --- the method ------------------------------------------------------------------------------------

def make(student="resnet8", teacher="resnet20", classes=4, epochs=10, **cfg):
    torch.manual_seed(0)
    s, t = models.create(student, classes), models.create(teacher, classes).eval()
    d = methods.build_distiller(methods.validate_method_config({"name": "tofd", **cfg}), s, t)
    labels = torch.arange(64) % classes
    d.setup(MethodContext(num_classes=classes, train_labels=labels, image_shape=(3, 32, 32), epochs=epochs,
                          steps_per_epoch=4))
    return d, labels


def batch(labels, idx):
    g = torch.Generator().manual_seed(int(idx[0]))
    return {"image": torch.randn(len(idx), 3, 32, 32, generator=g), "label": labels[idx], "index": idx}


def chain(head):
    """(c_in, c_out, stride) of each SepConv of an auxiliary classifier."""
    return [(sc[0].in_channels, sc[5].out_channels, sc[0].stride[0]) for sc in head.convs]


def test_three_stage_pair_builds_official_shaped_heads_and_links():
    d, _ = make()  # resnet20 (16, 32, 64 @ 32, 16, 8) -> resnet8 (same widths)
    assert d.stages == [(0, 0), (1, 1)]
    assert [chain(h) for h in d.student_heads] == [[(16, 32, 2), (32, 64, 2)], [(32, 64, 2)]]
    assert [chain(h) for h in d.teacher_heads] == [[(16, 32, 2), (32, 64, 2)], [(32, 64, 2)]]
    assert all(isinstance(m, SepConv) for h in d.student_heads for m in h.convs)
    assert [tuple(link.weight.shape) for link in d.links] == [(64, 64)] * 3
    assert all(link.bias is None for link in d.links)
    assert [h.fc.out_features for h in d.student_heads] == [4, 4]


def test_four_stage_pair_of_different_widths():
    # vgg8 teacher: 128@16, 256@8, 512@4, 512@4 (last stage not downsampled); mobilenetv2 student: 12@16 ... 160@2
    d, labels = make("mobilenetv2", "vgg8")
    assert d.stages == [(0, 0), (1, 1), (2, 2)]
    assert chain(d.teacher_heads[0]) == [(128, 256, 2), (256, 512, 2), (512, 512, 1)]
    assert chain(d.student_heads[0]) == [(12, 16, 2), (16, 48, 2), (48, 160, 2)]
    # links: student aux features 160 and embedding 1280 -> teacher 512 (aux) and 512 (embedding)
    assert [tuple(link.weight.shape) for link in d.links] == [(512, 160)] * 3 + [(512, 1280)]
    d.train()
    _, losses = d(batch(labels, torch.arange(8)))
    assert set(losses) == TERMS and all(torch.isfinite(v) for v in losses.values())


def test_different_stage_counts_pair_from_the_deepest():
    d, labels = make("resnet8", "vgg8")  # 3 student stages under 4 teacher stages
    assert d.stages == [(0, 1), (1, 2)]
    assert chain(d.teacher_heads[0]) == [(256, 512, 2), (512, 512, 1)]
    d.train()
    assert set(d(batch(labels, torch.arange(8)))[1]) == TERMS


def test_terms_are_the_official_sums():
    d, labels = make(epochs=10)
    d.start_epoch(4)
    assert d.current_temperature() == pytest.approx(1 + 3 * 5 / 10)
    d.train()
    b = batch(labels, torch.arange(16))
    _, losses = d(b)
    with torch.no_grad():
        t, s = d.teacher(b["image"]), d.student(b["image"])
        ss = [h(s.features[i]) for h, (i, _) in zip(d.student_heads, d.stages)] + [(s.embedding, s.logits)]
        tt = [h(t.features[j]) for h, (_, j) in zip(d.teacher_heads, d.stages)] + [(t.embedding, t.logits)]
        T = 2.5
        kd = sum(tofd_kd_loss(zs, zt, T) for (_, zs), (_, zt) in zip(ss, tt))
        # official: alpha * torch.dist over the batch, at its batch of 128 = alpha * sqrt(128) * RMS
        feat = 0.05 * math.sqrt(128) * sum(torch.dist(link(fs), ft) / math.sqrt(16)
                                           for link, (fs, _), (ft, _) in zip(d.links, ss, tt))
        orth = 0.03 * sum(torch.dist(w @ w.t(), torch.eye(w.shape[0])) + torch.dist(w.t() @ w, torch.eye(w.shape[1]))
                          for w in (link.weight for link in d.links))
        aux = sum(nn.functional.cross_entropy(z, b["label"]) for _, z in ss[:-1])
    # BN in train mode: the second forward (same batch, same weights) gives the same numbers
    assert losses["kd"].item() == pytest.approx(kd.item(), rel=1e-5)
    assert losses["feature"].item() == pytest.approx(feat.item(), rel=1e-5)
    assert losses["orth"].item() == pytest.approx(orth.item(), rel=1e-5)
    assert losses["aux"].item() == pytest.approx(aux.item(), rel=1e-5)


def test_temperature_ramps_from_near_one_to_one_plus_t():
    d, _ = make(epochs=250)
    d.start_epoch(0)
    assert d.current_temperature() == pytest.approx(1 + 3 / 250)  # distill.py: 1 + (t/250) * (1 + epoch)
    d.start_epoch(249)
    assert d.current_temperature() == pytest.approx(4.0)


def test_teacher_heads_learn_only_from_their_own_ce():
    """(The teacher staying unchanged through training steps is test_methods' test, run for every teacher method.)"""
    d, labels = make()
    d.train()
    b = batch(labels, torch.arange(16))
    _, losses = d(b)
    losses["teacher_aux"].backward(retain_graph=True)
    assert all(p.grad is None for p in d.student.parameters())
    assert all(p.grad is None for p in [*d.student_heads.parameters(), *d.links.parameters()])
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.teacher_heads.parameters() if p.dim() > 1)
    d.zero_grad(set_to_none=True)
    sum(v for k, v in losses.items() if k != "teacher_aux").backward()
    assert all(p.grad is None for p in d.teacher_heads.parameters()), "student terms must not reach the teacher heads"
    assert all(p.grad is not None for p in [*d.student.parameters(), *d.student_heads.parameters(),
                                            *d.links.parameters()])
    assert all(p.grad is None for p in d.teacher.parameters())


def test_loss_decreases_on_a_fixed_batch():
    d, labels = make()
    d.train()
    b = batch(labels, torch.arange(32))
    opt = torch.optim.SGD(d.parameters(), lr=0.02, momentum=0.9)
    totals = []
    for _ in range(8):
        _, losses = d(b)
        total = sum(losses.values())
        totals.append(total.item())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert totals[-1] < totals[0]


def test_export_is_the_plain_student_and_eval_heads_report_the_aux_classifiers():
    d, labels = make()
    plain = models.create("resnet8", 4)
    assert set(d.student.state_dict()) == set(plain.state_dict())
    assert sum(p.numel() for p in d.student.parameters()) == sum(p.numel() for p in plain.parameters())
    d.eval()
    heads = d.eval_heads(d.student(batch(labels, torch.arange(4))["image"]))
    assert set(heads) == {"stage1", "stage2"} and all(z.shape == (4, 4) for z in heads.values())


def test_switched_off_terms_build_nothing():
    d, labels = make(alpha=0)
    assert d.links is None
    d.train()
    assert set(d(batch(labels, torch.arange(8)))[1]) == {"ce", "aux", "teacher_aux", "kd"}
    d, labels = make(alpha=0, kd_weight=0)
    assert d.teacher_heads is None and d.links is None
    assert set(d(batch(labels, torch.arange(8)))[1]) == {"ce", "aux"}
    assert make(beta=0)[0].links is not None


def test_check_models():
    cls = methods.get_method("tofd")
    cfg = methods.validate_method_config({"name": "tofd"})
    with torch.device("meta"):
        s, t = models.create("mobilenetv2", 10), models.create("cifar_resnet50", 10)
    assert cls.check_models(cfg, s, t) is None
    msg = cls.check_models(cfg, s, nn.Linear(3, 3))
    assert "teacher" in msg and "stage_channels" in msg
