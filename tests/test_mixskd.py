"""MixSKD: its losses against float64 numpy computations, the branches / self-teacher / discriminators it builds
(stage_branch's rebuild of the later stages from the backbone's own blocks: the official branches, parameter for
parameter), the mixing drawn on the host, which parameters learn, the terms and their switches, export of the
backbone alone, and one epoch on digits."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raykd import methods, models
from raykd.losses.mixup_distill import discriminator_bce, feature_mse, mix, mixup_cross_entropy, mutual_kd_loss
from raykd.methods.base import MethodContext
from raykd.methods.stage_branch import StageBranch, _Block

rng = np.random.default_rng(0)
TERMS = {"ce", "mix_ce", "logit", "self_teacher", "feature", "adversarial"}


def t64(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def np_log_softmax(z, T=1.0):
    z = np.asarray(z, dtype=np.float64) / T
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def np_kl(student, teacher, T):
    """T^2 * mean_b sum_c q (log q - log p), q = softmax(teacher / T), p = softmax(student / T)."""
    lq, lp = np_log_softmax(teacher, T), np_log_softmax(student, T)
    return T * T * (np.exp(lq) * (lq - lp)).sum(1).mean()


# --- losses --------------------------------------------------------------------------------------

def test_mix_is_the_convex_combination_with_the_permuted_batch():
    x, perm = rng.normal(size=(5, 3, 2, 2)), np.array([3, 0, 4, 1, 2])
    got = mix(t64(x), torch.tensor(perm), 0.3).numpy()
    np.testing.assert_allclose(got, 0.3 * x + 0.7 * x[perm], rtol=1e-12)


def test_mixup_cross_entropy_matches_numpy_for_hard_and_soft_targets():
    z, perm, lam = rng.normal(size=(6, 5)) * 2, np.array([2, 5, 0, 1, 4, 3]), 0.37
    y = np.array([0, 1, 4, 2, 2, 3])
    lp = np_log_softmax(z)
    ce = lambda t: -lp[np.arange(6), t].mean()  # noqa: E731
    expected = lam * ce(y) + (1 - lam) * ce(y[perm])
    got = mixup_cross_entropy(t64(z), torch.tensor(y), torch.tensor(perm), lam).item()
    assert got == pytest.approx(expected, rel=1e-9)
    q = np.exp(np_log_softmax(rng.normal(size=(6, 5))))
    expected = lam * -(q * lp).sum(1).mean() + (1 - lam) * -(q[perm] * lp).sum(1).mean()
    assert mixup_cross_entropy(t64(z), t64(q), torch.tensor(perm), lam).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_mutual_kd_loss_matches_numpy_and_each_side_learns_only_from_the_other(T):
    a, b = rng.normal(size=(4, 7)) * 2, rng.normal(size=(4, 7))
    expected = np_kl(a, b, T) + np_kl(b, a, T)
    ta, tb = t64(a, grad=True), t64(b, grad=True)
    loss = mutual_kd_loss(ta, tb, T)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    loss.backward()
    # d/da comes from KL(sg b || a) alone: T * (softmax(a/T) - softmax(b/T)) / B
    ga = T * (np.exp(np_log_softmax(a, T)) - np.exp(np_log_softmax(b, T))) / 4
    np.testing.assert_allclose(ta.grad.numpy(), ga, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tb.grad.numpy(), -ga, rtol=1e-9, atol=1e-12)
    assert mutual_kd_loss(ta, ta.detach().clone(), T).item() == pytest.approx(0.0, abs=1e-12)


def test_feature_mse_matches_numpy_and_trains_both_sides():
    a, b = rng.normal(size=(3, 4, 2, 2)), rng.normal(size=(3, 4, 2, 2))
    ta, tb = t64(a, grad=True), t64(b, grad=True)
    loss = feature_mse(ta, tb)
    assert loss.item() == pytest.approx(((a - b) ** 2).mean(), rel=1e-9)
    loss.backward()
    np.testing.assert_allclose(ta.grad.numpy(), 2 * (a - b) / a.size, rtol=1e-9)
    np.testing.assert_allclose(tb.grad.numpy(), -2 * (a - b) / a.size, rtol=1e-9)


def test_discriminator_bce_labels_interpolated_10_and_mixed_01():
    d_i, d_m = rng.normal(size=(4, 2)) * 2, rng.normal(size=(4, 2)) * 2
    logits = np.concatenate([d_i, d_m])
    target = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)
    sig = 1 / (1 + np.exp(-logits))
    expected = -(target * np.log(sig) + (1 - target) * np.log(1 - sig)).mean()
    assert discriminator_bce(t64(d_i), t64(d_m)).item() == pytest.approx(expected, rel=1e-9)
    # a discriminator that separates them well has a small loss
    good = discriminator_bce(t64([[9.0, -9.0]] * 4), t64([[-9.0, 9.0]] * 4)).item()
    assert good < 1e-3


# --- method --------------------------------------------------------------------------------------

def make(student="resnet8", classes=4, **cfg):
    torch.manual_seed(0)
    s = models.create(student, classes)
    d = methods.build_distiller(methods.validate_method_config({"name": "mixskd", **cfg}), s, None)
    d.setup(MethodContext(num_classes=classes, train_labels=torch.arange(16) % classes, image_shape=(3, 32, 32),
                          epochs=2, steps_per_epoch=2))
    return d


def batch(n=4, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 32, 32, generator=g), "label": torch.arange(n) % classes,
            "index": torch.arange(n)}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("student,stages", [("resnet8", 3), ("cifar_resnet18", 4)])
def test_branches_rebuild_the_later_stages_and_the_self_teacher_fuses_every_last_map(student, stages):
    d = make(student)
    s = d.student
    assert len(d.branches) == stages - 1 and all(isinstance(b, StageBranch) for b in d.branches)
    for i, b in enumerate(d.branches):  # branch i repeats stages i+1.. with the backbone's own blocks, and an FC
        assert len(b.body) == stages - 1 - i and isinstance(b.fc, torch.nn.Linear)
        assert n_params(b) == sum(n_params(st) for st in s.stages[i + 1:]) + n_params(s.fc)
        assert not any(p is q for p in b.parameters() for q in s.parameters())
    c = s.stage_channels[-1]
    assert d.self_teacher.conv.weight.shape == (c, stages * c, 1, 1) and d.self_teacher.conv.bias is None
    assert d.self_teacher.fc.weight.shape == (4, c)
    assert len(d.discriminators) == stages
    linears = [m for m in d.discriminators[0] if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(128, c), (2, 128)]
    out = s(batch()["image"])
    heads = d.eval_heads(out)
    assert set(heads) == {f"branch{i}" for i in range(1, stages)} | {"self_teacher"}
    assert all(z.shape == (4, 4) for z in heads.values())


@pytest.mark.parametrize("student,branches,teacher", [("cifar_resnet18", 30060076, 1099876),
                                                      ("cifar_resnet50", 60925228, 16982116)])
def test_parameter_counts_equal_the_official_models(student, branches, teacher):
    """Self-KD-Lib models/resnet_mixskd.py, MixSKD_CIFAR_ResNet18/50(num_classes=100): auxiliary_classifier
    (layer2-4, layer3-4, layer4, an FC each) and final_aux_classifier (1x1 conv 4C -> C, no bias; FC)."""
    d = make(student, classes=100)
    assert n_params(d.branches) == branches and n_params(d.self_teacher) == teacher
    c = d.student.stage_channels[-1]
    assert n_params(d.discriminators) == 4 * (c * 128 + 128 + 128 * 2 + 2)


@pytest.mark.parametrize("student", ["vgg11_dtskd", "vgg16_dtskd", "cifar_resnet18", "resnext18_dtskd",
                                     "seresnet34_dtskd", "shufflev2_dtskd", "resnet8"])
def test_branches_are_the_later_stages_exactly(student):
    """A fresh branch ends in the last stage's map; given the backbone's own weights (stages i+1..B, then its
    classifier), branch i reproduces the backbone's last map and logits from stage i's map."""
    d = make(student, classes=10)
    s = d.student
    x = batch(n=2)["image"]
    with torch.no_grad():
        out = s(x)
        assert all(b(f)[1].shape == out.features[-1].shape for b, f in zip(d.branches, out.features[:-1]))
        d.eval()
        for m in s.modules():  # BN on running statistics that are not the identity
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        out = s(x)
        stages = [*s.stages, *([s.conv5] if hasattr(s, "conv5") else [])]
        head = s.classifier if hasattr(s, "classifier") else s.fc
        for i, b in enumerate(d.branches):
            src = [t for m in (*stages[i + 1:], head) for t in m.state_dict().values()]
            dst = [*b.body.state_dict().values(), *b.fc.state_dict().values()]
            assert [t.shape for t in src] == [t.shape for t in dst]
            for a, t in zip(src, dst):
                t.copy_(a)
            z, m = b(out.features[i])
            torch.testing.assert_close(m, out.features[-1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(z, out.logits, atol=1e-5, rtol=1e-5)


def test_dtskd_vgg_branches_carry_its_mlp_classifier():
    d = make("vgg11_dtskd", classes=10)  # the official MixSKD VGG variant: the 3-layer MLP on every branch
    for b in d.branches:
        assert [type(m).__name__ for m in b.fc] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
        assert [tuple(m.weight.shape) for m in b.fc if isinstance(m, torch.nn.Linear)] == [(512, 512), (512, 512),
                                                                                             (10, 512)]


def test_unknown_blocks_and_block_basic_get_basic_residual_blocks():
    d = make("vgg8")  # the CRD zoo's VGG: blocks unknown to stage_branch -> one basic block per later stage
    assert all(isinstance(b, StageBranch) and isinstance(b.fc, torch.nn.Linear) for b in d.branches)
    assert all(len(st) == 1 and isinstance(st[0], _Block) for b in d.branches for st in b.body)
    basic = make("resnet8", block="basic")  # the backbone's block counts (one per stage in resnet8), basic blocks
    assert all(isinstance(blk, _Block) for b in basic.branches for st in b.body for blk in st)
    assert [[len(st) for st in b.body] for b in basic.branches] == [[1, 1], [1]]
    own = make("resnet8").branches  # by default the backbone's own CIFAR blocks
    assert not any(isinstance(blk, _Block) for b in own for st in b.body for blk in st)


@pytest.mark.parametrize("student", ["vgg11_dtskd", "vgg16_dtskd", "cifar_resnet18", "resnext18_dtskd",
                                     "seresnet34_dtskd", "shufflev2_dtskd"])
def test_dtskd_table1_backbones_build_and_train(student):
    d = make(student, classes=100)
    logits, losses = d(batch(n=2, classes=100))
    assert logits.shape == (2, 100) and set(losses) == TERMS
    sum(losses.values()).backward()
    missing = [n for n, p in d.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_returned_logits_are_the_backbones_on_the_unmixed_images():
    d = make()
    b = batch()
    d.eval()  # BN on running statistics, so mixing the batch cannot change the originals' outputs
    logits, _ = d(b)
    torch.testing.assert_close(logits, d.student(b["image"]).logits)


def test_lambda_and_pairing_come_from_the_cpu_generator():
    d = make()
    torch.manual_seed(5)
    lam1, perm1 = d.draw(8, torch.device("cpu"))
    torch.manual_seed(5)
    lam2, perm2 = d.draw(8, torch.device("cpu"))
    assert isinstance(lam1, float) and 0 < lam1 < 1 and lam1 == lam2 and torch.equal(perm1, perm2)
    assert sorted(perm1.tolist()) == list(range(8))
    torch.manual_seed(0)
    lams = np.array([d.draw(2, torch.device("cpu"))[0] for _ in range(4000)])
    # Beta(0.4, 0.4): mean 1/2, variance 1 / (4 * 1.8)
    assert lams.mean() == pytest.approx(0.5, abs=0.02) and lams.var() == pytest.approx(1 / (4 * 1.8), abs=0.01)
    assert make(mixup_alpha=0).draw(4, torch.device("cpu"))[0] == 0.5  # official: alpha 0 -> lam 0.5


def test_terms_match_a_hand_computation_for_a_fixed_draw(monkeypatch):
    d = make()
    b = batch()
    lam, perm = 0.3, torch.tensor([2, 0, 3, 1])
    monkeypatch.setattr(d, "draw", lambda n, device: (lam, perm))
    d.eval()
    _, losses = d(b)
    x = b["image"]
    out = d.student(torch.cat([x, lam * x + (1 - lam) * x[perm]]))
    heads = [br(f) for br, f in zip(d.branches, out.features[:-1])] + [(out.logits, out.features[-1])]
    maps = [m for _, m in heads]
    ip = [lam * m[:4] + (1 - lam) * m[:4][perm] for m in maps]
    feature = sum(((a - m[4:]) ** 2).mean() for a, m in zip(ip, maps))
    torch.testing.assert_close(losses["feature"], feature)
    y = b["label"]
    t_i, t_m = d.self_teacher(ip), d.self_teacher([m[4:] for m in maps])
    mce = lambda z: lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y[perm])  # noqa: E731
    torch.testing.assert_close(losses["mix_ce"], sum(mce(z[4:]) for z, _ in heads) + mce(t_i) + mce(t_m))
    torch.testing.assert_close(losses["ce"], sum(F.cross_entropy(z[:4], y) for z, _ in heads))
    zb = out.logits
    kd = lambda s, t: 9 * F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="batchmean")  # noqa: E731
    torch.testing.assert_close(losses["self_teacher"],
                               kd(lam * zb[:4] + (1 - lam) * zb[:4][perm], t_m) + kd(zb[4:], t_i))


def test_switches_drop_terms_and_modules():
    assert set(make(feature_weight=0, adversarial_weight=0)(batch())[1]) == TERMS - {"feature", "adversarial"}
    d = make(self_teacher_weight=0, adversarial_weight=0)
    assert d.self_teacher is None and d.discriminators is None
    assert set(d(batch())[1]) == TERMS - {"self_teacher", "adversarial"}
    assert set(d.eval_heads(d.student(batch()["image"]))) == {"branch1", "branch2"}


def test_frozen_discriminators_and_the_cifar_scripts_untrained_self_teacher():
    d = make()  # official: discriminators never optimised, but the network minimises their BCE
    assert not any(p.requires_grad for p in d.discriminators.parameters())
    assert all(p.requires_grad for p in d.self_teacher.parameters())
    _, losses = d(batch())
    losses["adversarial"].backward()
    assert d.student.stages[0].blocks[0].conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in d.discriminators.parameters())
    trained = make(discriminator="trained")
    assert all(p.requires_grad for p in trained.discriminators.parameters())
    literal = make(mix_ce_weight=0)  # main_mixskd_cifar.py as written: loss_mixcls logged, never summed
    assert "mix_ce" not in literal(batch())[1]
    assert not any(p.requires_grad for p in literal.self_teacher.parameters())


def test_training_steps_reduce_the_loss_on_a_fixed_batch():
    d = make()
    opt = torch.optim.SGD([p for p in d.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    b, totals = batch(n=4), []
    for _ in range(10):
        torch.manual_seed(0)  # the same lam and pairing every step
        total = sum(d(b)[1].values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert totals[-1] < 0.7 * totals[0]


def test_soft_targets_feed_both_cross_entropies():
    d = make()
    b = batch()
    b["target"] = torch.softmax(torch.randn(4, 4), 1)
    _, losses = d(b)
    assert torch.isfinite(sum(losses.values()))


def test_only_the_student_is_exported_and_check_models_explains():
    d = make("cifar_resnet18", classes=100)
    assert set(d.student.state_dict()) == set(models.create("cifar_resnet18", 100).state_dict())
    assert n_params(d.student) == n_params(models.create("cifar_resnet18", 100))
    cls, cfg = methods.get_method("mixskd"), methods.validate_method_config({"name": "mixskd"})
    with torch.device("meta"):
        vgg, rn = models.create("vgg8", 100), models.create("cifar_resnet50", 100)
    assert cls.check_models(cfg, vgg, None) is None and cls.check_models(cfg, rn, None) is None
    one = torch.nn.Module()
    one.stage_channels = (64,)
    assert "at least 2 stages" in cls.check_models(methods.validate_method_config({"name": "mixskd"}), one, None)


# --- engine --------------------------------------------------------------------------------------
