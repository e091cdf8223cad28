"""ReviewKD: the HCL loss against numpy float64, the ABF review chain's shapes and behaviour, the warm-up,
export, and one epoch on digits through the engine."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from raykd import methods, models
from raykd.config import load_experiment
from raykd.losses.review import hcl_loss
from raykd.methods.base import MethodContext

rng = np.random.default_rng(0)


# --- hcl_loss vs numpy ---------------------------------------------------------------------------

def np_adaptive_avg_pool(a, size):
    """Adaptive average pooling from its definition: bin i covers [floor(i*H/l), ceil((i+1)*H/l))."""
    b, c, h, w = a.shape
    out = np.zeros((b, c, size, size))
    for i in range(size):
        h0, h1 = (i * h) // size, -((-(i + 1) * h) // size)
        for j in range(size):
            w0, w1 = (j * w) // size, -((-(j + 1) * w) // size)
            out[:, :, i, j] = a[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def np_hcl(student, teacher):
    total = 0.0
    for s, t in zip(student, teacher):
        h = s.shape[2]
        levels = [size for size in (4, 2, 1) if size < h]
        weights = [1.0] + [0.5 ** (k + 1) for k in range(len(levels))]
        terms = [np.mean((s - t) ** 2)] + [np.mean((np_adaptive_avg_pool(s, l) - np_adaptive_avg_pool(t, l)) ** 2)
                                           for l in levels]
        total += sum(w * x for w, x in zip(weights, terms)) / sum(weights)
    return total


SHAPES = [(2, 3, 8, 8), (2, 4, 6, 6), (3, 2, 5, 7), (2, 5, 4, 4), (2, 3, 3, 3), (2, 6, 2, 2), (2, 7, 1, 1)]


def test_hcl_loss_matches_numpy_float64():
    s = [rng.normal(size=sh) for sh in SHAPES]
    t = [rng.normal(size=sh) for sh in SHAPES]
    got = hcl_loss([torch.tensor(a) for a in s], [torch.tensor(a) for a in t])
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(np_hcl(s, t), rel=1e-9)


@pytest.mark.parametrize("h,kept", [(8, [4, 2, 1]), (5, [4, 2, 1]), (4, [2, 1]), (3, [2, 1]), (2, [1]), (1, [])])
def test_hcl_pyramid_skips_sizes_not_below_the_map_and_halves_weights(h, kept):
    shape = (2, 3, h, h)
    # a constant difference d gives MSE d^2 at every pyramid level: the normalised stage loss is d^2
    assert hcl_loss([torch.full(shape, 3.0)], [torch.full(shape, 1.0)]).item() == pytest.approx(4.0)
    d = torch.randn(shape)
    weights = [1.0, 0.5, 0.25, 0.125][:1 + len(kept)]
    terms = [d.pow(2).mean().item()] + [F.adaptive_avg_pool2d(d, k).pow(2).mean().item() for k in kept]
    expect = sum(w * x for w, x in zip(weights, terms)) / sum(weights)
    assert hcl_loss([d], [torch.zeros(shape)]).item() == pytest.approx(expect, rel=1e-6)


def test_hcl_zero_when_equal_sums_stages_and_pulls_student_to_teacher():
    a = [torch.randn(2, 3, 8, 8), torch.randn(2, 4, 1, 1)]
    assert hcl_loss(a, [x.clone() for x in a]).item() == 0.0
    s = [torch.randn(2, 3, 8, 8, requires_grad=True)]
    t = [torch.randn(2, 3, 8, 8)]
    two = hcl_loss(s + s, t + t)
    assert two.item() == pytest.approx(2 * hcl_loss(s, t).item(), rel=1e-6)
    loss = hcl_loss(s, t)
    loss.backward()
    with torch.no_grad():
        stepped = [s[0] - 0.1 * s[0].grad]
    assert hcl_loss(stepped, t) < loss


def test_hcl_half_inputs_computed_in_float32_and_shape_errors():
    s, t = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    assert hcl_loss([s.half()], [t.half()]).dtype == torch.float32
    with pytest.raises(ValueError, match="differ"):
        hcl_loss([s], [t[:, :2]])
    with pytest.raises(ValueError, match="maps"):
        hcl_loss([s], [t, t])


# --- the method ----------------------------------------------------------------------------------

def make(student="resnet8", teacher="resnet20", classes=4, **cfg):
    torch.manual_seed(0)
    s, t = models.create(student, classes), models.create(teacher, classes).eval()
    d = methods.build_distiller(methods.validate_method_config({"name": "reviewkd", **cfg}), s, t)
    labels = torch.arange(64) % classes
    d.setup(MethodContext(num_classes=classes, train_labels=labels, image_shape=(3, 32, 32), epochs=10,
                          steps_per_epoch=4))
    return d, labels


def batch(labels, idx):
    g = torch.Generator().manual_seed(int(idx[0]))
    return {"image": torch.randn(len(idx), 3, 32, 32, generator=g), "label": labels[idx], "index": idx}


def abf_layout(d):
    return [(a.conv1[0].in_channels, a.conv1[0].out_channels, a.conv2[0].out_channels, a.att_conv is not None)
            for a in d.abfs]


def extra_params(d):
    return sum(p.numel() for p in d.parameters()) - sum(p.numel() for p in d.student.parameters())


def test_abfs_for_a_3_stage_pair_match_the_official_layout_and_parameter_count():
    d, labels = make()  # resnet20 -> resnet8: stages 16/32/64 + 64-d embedding, mid min(512, 64)
    assert abf_layout(d) == [(16, 64, 16, True), (32, 64, 32, True), (64, 64, 64, True), (64, 64, 64, False)]
    # official ABF: 1x1 conv + BN to mid, 3x3 conv + BN to the teacher width, 1x1 attention conv (with bias)
    expect = sum(ci * 64 + 2 * 64 + 64 * co * 9 + 2 * co + (2 * 64 * 2 + 2 if fuse else 0)
                 for ci, _, co, fuse in abf_layout(d))
    assert extra_params(d) == expect == 114278
    d.eval()
    with torch.no_grad():
        x = batch(labels, torch.arange(2))["image"]
        outs, targets = d.review(d.student(x), d.teacher(x))
    assert [tuple(o.shape) for o in outs] == [tuple(t.shape) for t in targets] == \
        [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8), (2, 64, 1, 1)]


def test_resnet32x4_to_resnet8x4_training_only_parameters():
    d, _ = make("resnet8x4", "resnet32x4", classes=100)
    assert abf_layout(d) == [(64, 256, 64, True), (128, 256, 128, True), (256, 256, 256, True),
                             (256, 256, 256, False)]
    assert extra_params(d) == 1808774


def test_4_stage_pair_and_spatial_mismatch_follow_the_official_resizing():
    # cifar_resnet34 -> cifar_resnet18: four stages + embedding, mid 512
    d, labels = make("cifar_resnet18", "cifar_resnet34", classes=100)
    assert abf_layout(d) == [(64, 512, 64, True), (128, 512, 128, True), (256, 512, 256, True),
                             (512, 512, 512, True), (512, 512, 512, False)]
    assert extra_params(d) == 7552904
    # vgg8 (4 stages at 16/8/4/4) <- resnet20 (3 stages at 32/16/8): paired from the deepest, each fused
    # student map resized (nearest) to the teacher's size before the 3x3 conv, as build_review_kd's out_shapes
    d, labels = make("vgg8", "resnet20")
    assert [(p.s, p.t) for p in d.pairs] == [(1, 0), (2, 1), (3, 2)]
    d.eval()
    with torch.no_grad():
        x = batch(labels, torch.arange(2))["image"]
        outs, targets = d.review(d.student(x), d.teacher(x))
    assert [tuple(o.shape) for o in outs] == [tuple(t.shape) for t in targets] == \
        [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8), (2, 64, 1, 1)]


def test_abf_fuses_with_two_attention_maps_and_nearest_upsampling():
    from raykd.methods.reviewkd import ABF
    torch.manual_seed(0)
    abf = ABF(3, 4, 5, fuse=True).eval()
    x, res = torch.randn(2, 3, 4, 4), torch.randn(2, 4, 2, 2)
    out, fused = abf(x, res, (8, 8))
    with torch.no_grad():
        x1 = abf.conv1(x)
        up = res.repeat_interleave(2, 2).repeat_interleave(2, 3)  # nearest x2
        att = torch.sigmoid(F.conv2d(torch.cat([x1, up], 1), abf.att_conv[0].weight, abf.att_conv[0].bias))
        expect = x1 * att[:, :1] + up * att[:, 1:]
        expect = expect.repeat_interleave(2, 2).repeat_interleave(2, 3)  # to the teacher's 8x8
    assert torch.allclose(fused, expect, atol=1e-6)
    assert torch.allclose(out, abf.conv2(expect), atol=1e-6)
    assert out.shape == (2, 5, 8, 8)


def test_terms_weight_warmup_and_gradients():
    d, labels = make(kd_loss_weight=3.0, warmup_epochs=20)
    b = batch(labels, torch.arange(8))
    d.train()
    factors = []
    for e in (0, 10, 20, 30):
        d.start_epoch(e)
        factors.append(d.warmup_factor())
    assert factors == [0.0, 0.5, 1.0, 1.0]  # official train.py: epochs from 0, min(1, epoch / 20)
    d.start_epoch(10)
    torch.manual_seed(1)
    logits, losses = d(b)
    assert set(losses) == {"ce", "review"} and logits.shape == (8, 4)
    torch.manual_seed(1)
    with torch.no_grad():
        outs, targets = d.review(d.student(b["image"]), d.teacher(b["image"]))
    assert losses["review"].item() == pytest.approx(0.5 * 3.0 * hcl_loss(outs, targets).item(), rel=1e-5)
    assert losses["ce"].item() == pytest.approx(F.cross_entropy(logits, b["label"]).item(), rel=1e-6)
    losses["review"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.abfs.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.student.parameters())
    assert all(p.grad is None for p in d.teacher.parameters())
    d0, _ = make(warmup_epochs=0)
    assert d0.warmup_factor() == 1.0


def test_review_loss_decreases_and_teacher_stays_frozen():
    d, labels = make(warmup_epochs=0)
    before = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    opt = torch.optim.SGD(d.parameters(), lr=0.01, momentum=0.9)
    d.train()
    b = batch(labels, torch.arange(16))
    seen = []
    for _ in range(8):
        _, losses = d(b)
        seen.append(losses["review"].item())
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert seen[-1] < seen[0]
    assert all(torch.equal(v, before[k]) for k, v in d.teacher.state_dict().items())


def test_student_preact_reads_pre_activation_maps():
    post, labels = make()
    pre, _ = make(student_preact=True)
    pre.load_state_dict(post.state_dict())
    post.eval(), pre.eval()
    x = batch(labels, torch.arange(2))["image"]
    with torch.no_grad():
        s, t = post.student(x), post.teacher(x)
        a, _ = post.review(s, t)
        b, _ = pre.review(s, t)
        c, _ = pre.review(s._replace(pre_features=s.features), t)
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[0], c[0])
    assert torch.equal(a[-1], b[-1])  # the embedding level is the same either way


def test_export_drops_the_abfs():
    d, _ = make()
    plain = models.create("resnet8", 4)
    assert set(d.student.state_dict()) == set(plain.state_dict())
    assert sum(p.numel() for p in d.student.parameters()) == sum(p.numel() for p in plain.parameters())
    assert any(k.startswith("abfs.") for k in d.state_dict())


# --- presets and the engine ----------------------------------------------------------------------

CIFAR = sorted((REPO / "conf" / "cifar100" / "reviewkd").glob("*.yaml"))


def test_cifar_presets_cover_the_kd_pairs_and_load():
    assert {p.name for p in CIFAR} == {p.name for p in (REPO / "conf" / "cifar100" / "kd").glob("*.yaml")}
    weights = {p.stem: load_experiment(p).nodes["student"].method.kd_loss_weight for p in CIFAR}
    # script/reviewKD.sh
    assert weights["resnet32x4_resnet8x4"] == 5 and weights["resnet32x4_shufflev2"] == 8
    assert weights["resnet56_resnet20"] == 0.6 and weights["wrn_40_2_wrn_16_2"] == 5
