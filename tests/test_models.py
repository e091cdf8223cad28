"""The model contract for every registered model, exact parameter counts, one training step."""

import pytest
import torch
import torch.nn.functional as F

from raykd import models
from raykd.models import ModelOutput

CIFAR_RESNETS = {
    # name: (depth, widths). Reference: RepDistiller models/resnet.py (CRD, Tian et al. 2020),
    # the same definitions DKD/mdistiller use.
    "resnet8": (8, (16, 16, 32, 64)), "resnet14": (14, (16, 16, 32, 64)), "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)), "resnet44": (44, (16, 16, 32, 64)), "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)), "resnet8x4": (8, (32, 64, 128, 256)), "resnet32x4": (32, (32, 64, 128, 256)),
}

# Published parameter counts at 100 classes (CRD / DKD tables, in millions, 2 decimals).
PUBLISHED_M = {"resnet8": 0.08, "resnet20": 0.28, "resnet32": 0.47, "resnet44": 0.67, "resnet56": 0.86,
               "resnet110": 1.74, "resnet8x4": 1.23, "resnet32x4": 7.43}


def reference_param_count(depth, widths, num_classes):
    """Counted by hand from the reference layer list, independently of raykd's modules."""
    conv = lambda cin, cout, k: cin * cout * k * k
    bn = lambda c: 2 * c
    n = (depth - 2) // 6
    total = conv(3, widths[0], 3) + bn(widths[0])
    cin = widths[0]
    for s, c in enumerate(widths[1:]):
        stride = 1 if s == 0 else 2
        for b in range(n):
            total += conv(cin, c, 3) + bn(c) + conv(c, c, 3) + bn(c)
            if b == 0 and (stride != 1 or cin != c):
                total += conv(cin, c, 1) + bn(c)
            cin = c
    return total + widths[3] * num_classes + num_classes


def test_registry_lists_the_cifar_resnets():
    assert set(CIFAR_RESNETS) <= set(models.list_models())


def test_unknown_model_suggests():
    with pytest.raises(KeyError, match="Did you mean 'resnet8'"):
        models.create("resnet9", 10)


IMAGENET = {"resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2", "shufflenet_v2_x1_0", "mobilenet_v1",
            "vgg16_bn"}
# Linear-bottleneck taps have no activation of their own: features and pre_features coincide.
LINEAR_TAPS = {"mobilenetv2", "mobilenet_v2"}


def _input(name, batch=3):
    size = 64 if name in IMAGENET else 32
    return torch.randn(batch, 3, size, size)


def _deepest_stride(name):
    if name in IMAGENET:
        return 32
    if name == "mobilenetv2":
        return 16
    if name in ("vgg11_dtskd", "vgg16_dtskd"):
        return 32  # the DTSKD code's VGG pools after every stage
    if name.startswith(("resnet", "wrn")):
        return 4
    return 8  # vgg, shufflev1/v2, the 4-stage CIFAR ResNets


def _classifier(m):
    net = getattr(m, "net", m)
    return net.fc if hasattr(net, "fc") else net.classifier


@pytest.mark.parametrize("name", models.list_models())
def test_contract_shapes(name):
    m = models.create(name, num_classes=7).eval()
    x = _input(name)
    out = m(x)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (3, 7)
    assert len(out.features) == len(m.stage_channels) == len(out.pre_features)
    for f, pre, c in zip(out.features, out.pre_features, m.stage_channels):
        assert f.shape[:2] == (3, c) and pre.shape == f.shape
        if name in LINEAR_TAPS:
            assert pre is f
        else:
            assert torch.all(f >= 0), "features are post-activation"
            assert torch.allclose(F.relu(pre), f), "pre_features are the same taps before the ReLU"
    sizes = [f.shape[-1] for f in out.features]
    assert sizes == sorted(sizes, reverse=True), "stages go shallow (large) to deep (small)"
    assert x.shape[-1] // sizes[-1] == _deepest_stride(name), "the deepest stage has the reference's stride"
    assert out.embedding.dim() == 2 and out.embedding.shape[0] == 3
    assert torch.allclose(_classifier(m)(out.embedding), out.logits, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CIFAR_RESNETS))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_exact_parameter_count(name, num_classes):
    depth, widths = CIFAR_RESNETS[name]
    m = models.create(name, num_classes=num_classes)
    assert models.count_parameters(m) == reference_param_count(depth, widths, num_classes)


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_matches_published_sizes(name):
    assert round(models.count_parameters(models.create(name, 100)) / 1e6, 2) == PUBLISHED_M[name]


def test_known_exact_counts():
    # resnet8x4 and resnet32x4 at 100 classes, the CRD/DKD headline pair.
    assert models.count_parameters(models.create("resnet8x4", 100)) == 1_233_540
    assert models.count_parameters(models.create("resnet32x4", 100)) == 7_433_860


@pytest.mark.parametrize("name", models.list_models())
def test_one_training_step_reduces_loss_on_a_fixed_batch(name):
    """A real step on CPU: every parameter gets a gradient and the loss falls on a fixed batch."""
    torch.manual_seed(0)
    m = models.create(name, num_classes=4)
    opt = torch.optim.SGD(m.parameters(), lr=0.002)
    x, y = _input(name, batch=8), torch.arange(8) % 4
    losses = []
    for _ in range(4):
        loss = F.cross_entropy(m(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in m.parameters())
    assert losses[-1] < losses[0]


# Exact counts at 100 classes, from the reference definitions these models reproduce layer for layer:
# RepDistiller (CRD, Tian et al. 2020; reused by DKD/mdistiller) models/wrn.py, vgg.py (vgg*_bn),
# mobilenetv2.py (mobile_half), ShuffleNetv1.py, ShuffleNetv2.py, resnetv2.py (ResNet18/34/50/101: the 4-stage
# CIFAR ResNets of MTKD-SSR's pairs, ResNet101-34 included; each instantiated there with num_classes=100).
# Rounded, they are the sizes the CRD/DKD/SSKD tables print (0.70M, 2.26M, 9.46M, 3.96M, 0.81M, ...).
EXACT_100 = {
    "wrn_16_1": 180_916, "wrn_16_2": 703_284, "wrn_40_1": 569_780, "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028, "vgg11": 9_277_284, "vgg13": 9_462_180, "vgg16": 14_774_436, "vgg19": 20_086_692,
    "mobilenetv2": 812_836, "shufflev1": 949_258, "shufflev2": 1_355_528,
    "cifar_resnet18": 11_220_132, "cifar_resnet34": 21_328_292, "cifar_resnet50": 23_705_252,
    "cifar_resnet101": 42_697_380,
}
# The DTSKD paper's CIFAR backbones at 100 classes, from its official code (github.com/zhengli97/DTSKD,
# commit f546b47): each model instantiated with num_classes=100 and its parameters counted, the
# auxiliary-branch modules (laterals, upsample, fuse_*, fc_b*, up_conv) left out; SENet-34 is
# models/senet.py's seresnet34. cifar_resnet18 is the official ResNet-18 backbone layer for layer.
DTSKD_OFFICIAL_100 = {"cifar_resnet18": 11_220_132, "resnext18_dtskd": 22_209_444, "vgg16_dtskd": 15_299_748,
                      "shufflev2_dtskd": 1_360_896, "seresnet34_dtskd": 21_498_000}
PUBLISHED_100_M = {"wrn_16_2": 0.70, "wrn_40_1": 0.57, "wrn_40_2": 2.26, "vgg13": 9.46,
                   "mobilenetv2": 0.81, "shufflev1": 0.95, "shufflev2": 1.36, "cifar_resnet18": 11.22,
                   "cifar_resnet50": 23.71}


@pytest.mark.parametrize("name", sorted(EXACT_100))
def test_exact_counts_of_the_cifar_zoo(name):
    n = models.count_parameters(models.create(name, 100))
    assert n == EXACT_100[name]
    if name in PUBLISHED_100_M:
        assert round(n / 1e6, 2) == PUBLISHED_100_M[name]


@pytest.mark.parametrize("name", sorted(DTSKD_OFFICIAL_100))
def test_dtskd_backbones_have_the_official_counts(name):
    assert models.count_parameters(models.create(name, 100)) == DTSKD_OFFICIAL_100[name]


def test_vgg11_dtskd_by_hand():
    # not in the official code: its VGG layout (stem, four pooled stages, 512-512-C MLP) at VGG-11 widths
    conv = lambda cin, cout: cin * cout * 9 + cout + 2 * cout  # conv with bias, BN  # noqa: E731
    widths = [64, 128, 256, 256, 512, 512, 512, 512]
    total = sum(conv(a, b) for a, b in zip([3] + widths[:-1], widths))
    total += 512 * 512 + 512 + 512 * 512 + 512 + 512 * 100 + 100
    assert models.count_parameters(models.create("vgg11_dtskd", 100)) == total == 9_802_596


def wrn_param_count(depth, widen, num_classes):
    """Hand count of Zagoruyko & Komodakis' WRN-d-k layer list (pre-activation blocks, 1x1 projections)."""
    n = (depth - 4) // 6
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    total = 3 * 16 * 9
    cin = 16
    for c in widths[1:]:
        for b in range(n):
            total += 2 * cin + cin * c * 9 + 2 * c + c * c * 9 + (cin * c if cin != c else 0)
            cin = c
    return total + 2 * cin + cin * num_classes + num_classes


@pytest.mark.parametrize("name", ["wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_wrn_counts_match_a_hand_count(name, num_classes):
    _, d, k = name.split("_")
    assert models.count_parameters(models.create(name, num_classes)) == wrn_param_count(int(d), int(k), num_classes)


def test_se_resnets_add_exactly_the_squeeze_excitation_weights():
    # Two FCs with bias per residual branch, reduction 16 (Hu et al. 2018).
    def se(c):
        return 2 * c * (c // 16) + c // 16 + c
    for name, blocks in [("18", (2, 2, 2, 2)), ("34", (3, 4, 6, 3))]:
        extra = sum(n * se(c) for n, c in zip(blocks, (64, 128, 256, 512)))
        plain = models.count_parameters(models.create(f"cifar_resnet{name}", 100))
        assert models.count_parameters(models.create(f"seresnet{name}", 100)) == plain + extra


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2",
                                  "shufflenet_v2_x1_0", "vgg16_bn"])
def test_imagenet_wrappers_are_torchvision_parameter_for_parameter(name):
    import torchvision

    ref = getattr(torchvision.models, name)(weights=None)
    ours = models.create(name, 1000)
    assert models.count_parameters(ours) == models.count_parameters(ref)
    # torchvision's own state dict loads without renaming: its weights are usable as they are
    ours.net.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    ref.eval(), ours.eval()
    assert torch.allclose(ours(x).logits, ref(x), atol=1e-5)


def test_mobilenet_v1_has_the_published_size():
    # Howard et al. 2017, Table 1 layer list: 4,231,976 parameters at 1000 classes (the "4.2M").
    assert models.count_parameters(models.create("mobilenet_v1", 1000)) == 4_231_976


def test_pretrained_without_cached_weights_is_a_clear_error(tmp_path, monkeypatch):
    from raykd.errors import ConfigError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"pretrained.*resnet18.*not in the local cache"):
        models.create("resnet18", 10, pretrained=True)
    with pytest.raises(ConfigError, match="no ImageNet weights for mobilenet_v1"):
        models.create("mobilenet_v1", 10, pretrained=True)


def test_pretrained_loads_cached_torchvision_weights_and_replaces_the_head(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = torchvision.models.resnet18(weights=None)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(ref.state_dict(), tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1])
    m = models.create("resnet18", 10, pretrained=True)
    assert torch.equal(m.net.conv1.weight, ref.conv1.weight)
    assert m.net.fc.out_features == 10


@pytest.mark.parametrize("name", models.list_models())
def test_video_classifier_averages_frames_over_time(name):
    torch.manual_seed(0)
    backbone = models.create(name, 5).eval()
    video = models.VideoClassifier(backbone).eval()
    clips = torch.stack([_input(name, batch=3) for _ in range(2)])  # [B=2, F=3, C, H, W]
    out = video(clips)
    per_clip = [backbone(c) for c in clips]
    expected = torch.stack([o.logits.mean(0) for o in per_clip])
    assert torch.allclose(out.logits, expected, atol=1e-5)
    assert video.stage_channels == backbone.stage_channels
    for i, f in enumerate(out.features):
        assert torch.allclose(f, torch.stack([o.features[i].mean(0) for o in per_clip]), atol=1e-5)
    with pytest.raises(ValueError, match=r"\[B, F, C, H, W\]"):
        video(clips[0])
