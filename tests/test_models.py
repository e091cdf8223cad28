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


@pytest.mark.parametrize("name", models.list_models())
def test_contract_shapes(name):
    m = models.create(name, num_classes=7).eval()
    x = torch.randn(3, 3, 32, 32)
    out = m(x)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (3, 7)
    assert len(out.features) == len(m.stage_channels) == len(out.pre_features)
    for f, pre, c in zip(out.features, out.pre_features, m.stage_channels):
        assert f.shape[:2] == (3, c) and pre.shape == f.shape
        assert torch.all(f >= 0), "features are post-activation"
        assert torch.allclose(F.relu(pre), f), "pre_features are the same taps before the ReLU"
    sizes = [f.shape[-1] for f in out.features]
    assert sizes == sorted(sizes, reverse=True), "stages go shallow (large) to deep (small)"
    assert out.embedding.shape == (3, m.stage_channels[-1])
    assert torch.allclose(m.fc(out.embedding), out.logits, atol=1e-5)


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
    torch.manual_seed(0)
    m = models.create(name, num_classes=4)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    losses = []
    for _ in range(4):
        loss = F.cross_entropy(m(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in m.parameters())
    assert losses[-1] < losses[0]
