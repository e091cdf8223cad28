"""DKS (Sun et al. 2019): the synergy loss against numpy in float64 and where its gradients go; the shared
stage-branch module (backward-compatible basic branches, branches repeating the backbone's own blocks); the
method's branch layout on 3- and 4-stage models and the six DTSKD Table 1 backbones, export, and one digits
epoch through the engine."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import REPO
from raykd import methods, models
from raykd.config import load_experiment
from raykd.losses.synergy import synergy_loss, synergy_pairs
from raykd.methods.base import MethodContext, probe
from raykd.methods.dks import DKSConfig, branch_plan, default_stages
from raykd.methods.stage_branch import (StageBranch, _Block, _Relu, backbone_stages, basic_stage, plain_stage,
                                        pointwise_stage, stage_branches, stage_shapes)
from raykd.models.cifar_resnet4 import Basic, Bottleneck, DoubledBasic
from raykd.models.seresnet_dtskd import SEBasic
from raykd.models.shufflenetv2_dtskd import ShuffleUnit

rng = np.random.default_rng(0)


def t64(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def np_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_synergy(zs, T, pairs):
    """sum over ordered pairs (teacher m, learner n) of T^2 * mean_b sum_c p_m (log p_m - log p_n)."""
    n = len(zs)
    keep = {"all": lambda m, k: m != k, "top_down": lambda m, k: m > k, "bottom_up": lambda m, k: m < k}[pairs]
    total = 0.0
    for m in range(n):
        for k in range(n):
            if keep(m, k):
                lm, lk = np_log_softmax(zs[m] / T), np_log_softmax(zs[k] / T)
                total += (np.exp(lm) * (lm - lk)).sum(axis=1).mean()
    return total * T * T


# --- the synergy loss -----------------------------------------------------------------------------------

@pytest.mark.parametrize("pairs", ["all", "top_down", "bottom_up"])
@pytest.mark.parametrize("T", [1.0, 3.0])
def test_synergy_loss_matches_numpy(pairs, T):
    zs = [rng.normal(size=(5, 7)) * 2 for _ in range(3)]
    got = synergy_loss([t64(z) for z in zs], T, pairs).item()
    assert got == pytest.approx(np_synergy(zs, T, pairs), rel=1e-9)


def test_synergy_pairs_enumerate_the_directions():
    assert synergy_pairs(3) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]  # official: every ordered pair
    assert synergy_pairs(3, "top_down") == [(1, 0), (2, 0), (2, 1)]  # deeper teaches shallower
    assert synergy_pairs(3, "bottom_up") == [(0, 1), (0, 2), (1, 2)]


def test_synergy_loss_is_zero_for_agreeing_or_single_classifiers_and_half_precision_is_promoted():
    z = torch.randn(4, 5)
    assert synergy_loss([z, z.clone(), z.clone()]).item() == pytest.approx(0.0, abs=1e-6)
    assert synergy_loss([z]).item() == 0.0
    out = synergy_loss([z.half(), (2 * z).half()])
    assert out.dtype == torch.float32 and out.item() > 0


def test_synergy_targets_are_constants_so_each_learner_gets_sum_of_p_k_minus_p_m():
    zs = [rng.normal(size=(3, 4)) for _ in range(3)]
    ts = [t64(z, grad=True) for z in zs]
    synergy_loss(ts).backward()
    ps = [np.exp(np_log_softmax(z)) for z in zs]
    for k in range(3):  # d/dz_k KL(p_m || p_k) = (p_k - p_m) / B when p_m is a constant
        want = sum(ps[k] - ps[m] for m in range(3) if m != k) / 3
        np.testing.assert_allclose(ts[k].grad.numpy(), want, rtol=1e-9, atol=1e-12)


def test_top_down_leaves_the_deepest_classifier_untaught_and_bottom_up_the_shallowest():
    for pairs, untaught in (("top_down", 2), ("bottom_up", 0)):
        ts = [t64(rng.normal(size=(3, 4)), grad=True) for _ in range(3)]
        synergy_loss(ts, 2.0, pairs).backward()
        assert ts[untaught].grad is None or ts[untaught].grad.abs().max() == 0
        assert all(ts[k].grad.abs().max() > 0 for k in range(3) if k != untaught)


# --- the shared stage-branch module ---------------------------------------------------------------------

def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_stage_branches_default_is_unchanged_one_basic_block_per_later_stage():
    shapes = [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    branches = stage_branches(shapes, [0, 1], 10)
    assert [len(b.body) for b in branches] == [2, 1]
    assert all(isinstance(blk, _Block) for b in branches for stage in b.body for blk in stage)
    x = torch.randn(2, 16, 32, 32)
    logits, m = branches[0](x)
    assert logits.shape == (2, 10) and m.shape == (2, 64, 8, 8) and (m >= 0).all()
    assert branches[1](torch.randn(2, 32, 16, 16))[1].shape == (2, 64, 8, 8)
    two = stage_branches(shapes, [0], 10, blocks=[1, 2, 3])
    assert [len(stage) for stage in two[0].body] == [2, 3]
    assert stage_shapes(probe(models.create("resnet8", 10), (3, 32, 32))) == shapes


def test_stage_branch_errors_name_the_problem():
    shapes = [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    with pytest.raises(ValueError, match="before the last"):
        stage_branches(shapes, [2], 10)
    with pytest.raises(ValueError, match="blocks has 2 entries"):
        stage_branches(shapes, [0], 10, blocks=[1, 1])
    with pytest.raises(ValueError, match="at least one block"):
        StageBranch(shapes, 0, 10, [1, 0, 1])
    with pytest.raises(ValueError, match="one entry for each"):
        StageBranch(shapes, 0, 10, [1, 1, 1], widths=[16, 32])


def test_stage_branch_takes_per_stage_makers_and_widths():
    shapes = [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    b = StageBranch(shapes, 0, 5, [1, 1, 2], [basic_stage, plain_stage, pointwise_stage], widths=[16, 48, 96])
    assert isinstance(b.body[0][0], nn.Conv2d) and b.body[0][0].out_channels == 48  # plain (VGG) stage
    assert b.body[1][0].kernel_size == (1, 1) and b.body[1][0].stride == (2, 2)  # pointwise, strided
    logits, m = b(torch.randn(2, 16, 32, 32))
    assert logits.shape == (2, 5) and m.shape == (2, 96, 8, 8) and b.fc.in_features == 96


BACKBONE_COUNTS = {
    "resnet8": [1, 1, 1], "resnet20": [3, 3, 3], "wrn_16_2": [2, 2, 2], "cifar_resnet18": [2, 2, 2, 2],
    "cifar_resnet50": [3, 4, 6, 3], "seresnet18": [2, 2, 2, 2], "resnext18_dtskd": [2, 2, 2, 2],
    "seresnet34_dtskd": [3, 4, 6, 3], "vgg11_dtskd": [1, 2, 2, 2], "vgg16_dtskd": [2, 3, 3, 3],
    "shufflev2_dtskd": [4, 8, 4, 1], "resnet18": [2, 2, 2, 2],
}


@pytest.mark.parametrize("name", sorted(BACKBONE_COUNTS))
def test_backbone_stages_count_the_blocks_and_rebuild_a_stage_parameter_for_parameter(name):
    model = models.create(name, 10)
    spec = backbone_stages(model)
    assert [n for _, n in spec] == BACKBONE_COUNTS[name]
    shapes = stage_shapes(probe(model, (3, 32, 32)))
    j = 2  # rebuild stage 2 from stage 1's map with the backbone's own blocks
    make, n = spec[j]
    (c0, h0, _), (c1, h1, _) = shapes[j - 1], shapes[j]
    stage = make(c0, c1, h0 // h1, n)
    original = (model.stages[j] if hasattr(model, "stages") else model.net.layer3)
    extra = 2 * c1 if name.startswith("wrn") else 0  # the closing BN + ReLU that activates a pre-act stage
    assert n_params(stage) == n_params(original) + extra
    y = stage(torch.randn(2, c0, h0, h0))
    assert y.shape == (2, c1, h1, h1) and (y >= 0).all()


def test_backbone_stages_is_none_for_unknown_blocks():
    assert backbone_stages(models.create("mobilenetv2", 10)) is None


# --- the method ---------------------------------------------------------------------------------------

def make(student="resnet8", classes=4, n=16, shape=(3, 32, 32), **cfg):
    torch.manual_seed(0)
    s = models.create(student, classes)
    d = methods.build_distiller(methods.validate_method_config({"name": "dks", **cfg}), s, None)
    labels = torch.arange(n) % classes
    d.setup(MethodContext(num_classes=classes, train_labels=labels, image_shape=shape, epochs=2, steps_per_epoch=1))
    return d, labels


def batch(labels, size=32):
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(len(labels), 3, size, size, generator=g), "label": labels,
            "index": torch.arange(len(labels))}


def test_defaults_are_the_official_ones_and_stages_are_validated():
    c = DKSConfig()
    assert (c.stages, c.width_multiplier, c.block, c.branch_ce_weight, c.synergy_weight, c.temperature,
            c.pairs) == (None, 2.0, "backbone", 1.0, 1.0, 1.0, "all")
    assert DKSConfig(stages=[2, 0]).stages == (0, 2)
    with pytest.raises(Exception, match="distinct"):
        DKSConfig(stages=[1, 1])
    assert default_stages(3) == (0, 1) and default_stages(4) == (1, 2) and default_stages(2) == (0,)


def test_branch_plan_follows_the_official_wrn_layout():
    # wrn_DKS/resnet.py, n blocks a group: ep1 on group 0 -> group1 n, group2 n // 2; ep2 on group 1 -> group2 n, 2x
    assert branch_plan([4, 4, 4], [160, 320, 640], 0, 2.0) == ([4, 4, 2], [160, 320, 640])
    assert branch_plan([4, 4, 4], [160, 320, 640], 1, 2.0) == ([4, 4, 4], [160, 320, 1280])
    assert branch_plan([2, 2, 2, 2], [64, 128, 256, 512], 1, 2.0) == ([2, 2, 2, 1], [64, 128, 256, 512])
    assert branch_plan([2, 2, 2, 2], [64, 128, 256, 512], 2, 1.0) == ([2, 2, 2, 2], [64, 128, 256, 512])


def test_three_stage_branches_on_resnet8():
    d, labels = make("resnet8")
    assert d.starts == (0, 1)
    b0, b1 = d.branches
    assert [len(s) for s in b0.body] == [1, 1] and [len(s) for s in b1.body] == [1]
    assert all(isinstance(blk, _Relu) and type(blk.block).__name__ == "BasicBlock" for s in b0.body for blk in s)
    out = d.student(batch(labels)["image"])
    (_, m0), (_, m1) = b0(out.features[0]), b1(out.features[1])
    assert m0.shape[1:] == (64, 8, 8) and m1.shape[1:] == (128, 8, 8)  # the deepest branch is 2x wide
    assert set(d.eval_heads(out)) == {"branch1", "branch2"}
    assert all(v.shape == (16, 4) for v in d.eval_heads(out).values())


def test_four_stage_branches_on_cifar_resnet18_repeat_its_blocks():
    d, labels = make("cifar_resnet18", classes=100, n=2)
    assert d.starts == (1, 2)
    b2, b3 = d.branches
    assert [len(s) for s in b2.body] == [2, 1] and [len(s) for s in b3.body] == [2]
    assert all(type(blk.block) is Basic for b in d.branches for s in b.body for blk in s)
    assert b2.fc.in_features == 512 and b3.fc.in_features == 1024
    out = d.student(batch(labels)["image"])
    assert set(d.eval_heads(out)) == {"branch2", "branch3"}
    # the training-only parameters reported for the CIFAR-100 preset
    assert n_params(d) - n_params(d.student) == 36_869_832


def test_custom_stages_basic_blocks_and_no_widening():
    d, _ = make("seresnet34", classes=10, n=2, stages=[0, 1, 2], block="basic", width_multiplier=1)
    assert d.starts == (0, 1, 2)
    assert [[len(s) for s in b.body] for b in d.branches] == [[4, 6, 1], [6, 1], [3]]
    assert all(isinstance(blk, _Block) for b in d.branches for s in b.body for blk in s)  # no SE: basic forced
    assert [b.fc.in_features for b in d.branches] == [512, 512, 512]
    # the 2x-wide last stage of a bottleneck backbone: bottlenecks of 4096 / 4 planes
    make_stage, _ = backbone_stages(models.create("cifar_resnet50", 10))[3]
    wide = make_stage(1024, 4096, 2, 1)
    assert type(wide[0].block) is Bottleneck and wide[0].block.conv2.out_channels == 1024
    assert wide(torch.randn(2, 1024, 8, 8)).shape == (2, 4096, 4, 4)


def test_terms_gradients_loss_decrease_and_export():
    d, labels = make("resnet8")
    b = batch(labels)
    logits, terms = d(b)
    assert set(terms) == {"ce", "branch_ce", "synergy"} and logits.shape == (16, 4)
    assert all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())
    out = d.student(b["image"])
    heads = [br(out.features[s])[0] for s, br in zip(d.starts, d.branches)]
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(out.logits, labels).item(), rel=1e-5)
    assert terms["branch_ce"].item() == pytest.approx(sum(F.cross_entropy(z, labels) for z in heads).item(), rel=1e-5)
    assert terms["synergy"].item() == pytest.approx(synergy_loss([*heads, out.logits]).item(), rel=1e-5)
    sum(terms.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.branches.parameters() if p.dim() > 1)
    assert d.student.conv1.weight.grad.abs().sum() > 0
    opt = torch.optim.SGD(d.parameters(), lr=0.05, momentum=0.9)
    first = None
    for _ in range(6):
        opt.zero_grad()
        loss = sum(d(b)[1].values())
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert sum(d(b)[1].values()).item() < first
    assert set(d.student.state_dict()) == set(models.create("resnet8", 4).state_dict())


def test_weights_scale_their_terms_and_zero_synergy_is_deep_supervision():
    d, labels = make("resnet8", branch_ce_weight=0.5, synergy_weight=0.0, temperature=4.0, pairs="top_down")
    d1, _ = make("resnet8")
    b = batch(labels)
    t, t1 = d(b)[1], d1(b)[1]
    assert t["branch_ce"].item() == pytest.approx(0.5 * t1["branch_ce"].item(), rel=1e-5)
    assert t["synergy"].item() == 0.0 and t["ce"].item() == pytest.approx(t1["ce"].item(), rel=1e-6)


def test_check_models_messages():
    class OneStage(nn.Module):
        stage_channels = (8,)

    assert "2 stages or more" in methods.get_method("dks").check_models(DKSConfig(), OneStage(), None)
    msg = methods.get_method("dks").check_models(DKSConfig(stages=[0, 3]), models.create("cifar_resnet18", 10), None)
    assert "stages: [3] out of range" in msg and "0..2" in msg
    assert methods.get_method("dks").check_models(DKSConfig(), models.create("resnet8", 10), None) is None


DTSKD_TABLE1 = {  # training-only parameters at 100 classes (reported to the lead), and each branch's block type
    "vgg11_dtskd": (20_218_568, nn.Conv2d), "vgg16_dtskd": (32_019_656, nn.Conv2d),
    "cifar_resnet18": (36_869_832, Basic), "resnext18_dtskd": (73_150_152, DoubledBasic),
    "seresnet34_dtskd": (60_963_592, SEBasic), "shufflev2_dtskd": (2_246_624, ShuffleUnit),
}


@pytest.mark.parametrize("name", sorted(DTSKD_TABLE1))
def test_dtskd_table1_backbones_build_and_train_a_step(name):
    # the ResNets step on 16x16 images (a quarter of the CPU time; the parameters do not depend on it); VGG's
    # and ShuffleNet's deepest maps are 1x1 / 4x4 at 32x32, so they keep 32
    size = 32 if name.startswith(("vgg", "shuffle")) else 16
    d, labels = make(name, classes=100, n=2, shape=(3, size, size))
    params, block = DTSKD_TABLE1[name]
    assert n_params(d) - n_params(d.student) == params
    first = d.branches[0].body[0][0]
    assert isinstance(getattr(first, "block", first), block)
    logits, terms = d(batch(labels, size))
    assert logits.shape == (2, 100) and all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in d.branches.parameters())


@pytest.mark.parametrize("preset", ["cifar_resnet18", "cifar_resnet50", "seresnet18"])
def test_cifar100_presets_load(preset):
    exp = load_experiment(REPO / "conf" / "cifar100" / "dks" / f"{preset}.yaml")
    node = exp.nodes["student"]
    assert node.model == preset and node.method.name == "dks" and node.method.width_multiplier == 2
