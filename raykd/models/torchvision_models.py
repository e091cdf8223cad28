"""ImageNet backbones wrapping torchvision, parameter for parameter, so torchvision's weights load.

The torchvision module lives at `.net`; the wrapper only re-runs its forward with stage taps.
`pretrained=True` reads torchvision's weights from the local torch hub cache and never downloads:
a cluster worker without internet must fail with instructions, not hang on a download.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from raykd.errors import ConfigError
from raykd.models.init import pooled
from raykd.models.output import ModelOutput
from raykd.models.registry import register_model


def cached_weights(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's default ImageNet weights for `arch`, from the hub cache only."""
    import torchvision  # imported on use: it costs every Ray worker 1.5 s otherwise

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        raise ConfigError(
            f"model_kwargs.pretrained: torchvision weights for '{arch}' are not in the local cache ({path}). "
            f"raykd never downloads on a worker; fetch them once where there is internet with "
            f"`python -c \"import torchvision; torchvision.models.{arch}(weights='DEFAULT')\"` and make "
            f"{path.parent} (or $TORCH_HOME) available to every worker.")
    return torch.load(path, map_location="cpu", weights_only=True)


def _build(arch: str, num_classes: int, pretrained: bool) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None, num_classes=1000 if pretrained else num_classes)
    if pretrained:
        net.load_state_dict(cached_weights(arch))
        if num_classes != 1000:  # keep the pretrained trunk, a fresh classifier for this task
            if arch.startswith("resnet") or arch.startswith("shufflenet"):
                net.fc = nn.Linear(net.fc.in_features, num_classes)
            else:
                net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, num_classes)
    return net


def _resnet_block_with_pre(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's Basic/Bottleneck forward, stopping before the final ReLU."""
    out = F.relu(block.bn1(block.conv1(x)))
    if hasattr(block, "conv3"):
        out = F.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    else:
        out = block.bn2(block.conv2(out))
    return out + (x if block.downsample is None else block.downsample(x))


class TorchvisionResNet(nn.Module):
    def __init__(self, arch: str, num_classes: int = 1000, pretrained: bool = False):
        super().__init__()
        self.net = _build(arch, num_classes, pretrained)
        last_bn = lambda block: block.bn3 if hasattr(block, "bn3") else block.bn2  # noqa: E731
        self.stage_channels = tuple(last_bn(getattr(self.net, f"layer{i}")[-1]).num_features for i in (1, 2, 3, 4))

    def forward(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        feats, pres = [], []
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            for block in layer[:-1]:
                x = block(x)
            pre = _resnet_block_with_pre(layer[-1], x)
            x = F.relu(pre)
            feats.append(x)
            pres.append(pre)
        emb = pooled(x)
        return ModelOutput(n.fc(emb), tuple(feats), tuple(pres), emb)


class TorchvisionVGG(nn.Module):
    """Taps after the 2nd-5th max-pools (128 @ /4, 256 @ /8, 512 @ /16, 512 @ /32), as the CIFAR VGGs
    tap their stages; each pool is taken before the block's last ReLU (they commute) to give the
    pre-activation too. The embedding is what the classifier reads: the 7x7 average-pooled map, flat."""

    def __init__(self, arch: str, num_classes: int = 1000, pretrained: bool = False):
        super().__init__()
        self.net = _build(arch, num_classes, pretrained)
        layers = list(self.net.features)
        pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
        last_conv = lambda end: next(m for m in reversed(layers[:end]) if isinstance(m, nn.Conv2d))  # noqa: E731
        self.stage_channels = tuple(last_conv(p).out_channels for p in pools[1:])

    def forward(self, x):
        layers = self.net.features
        feats, pres, pools = [], [], 0
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.ReLU) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.MaxPool2d):
                continue  # applied after the pool, so the pooled pre-activation can be tapped
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                pre, x = x, F.relu(x)
                pools += 1
                if pools > 1:
                    feats.append(x)
                    pres.append(pre)
        emb = torch.flatten(self.net.avgpool(x), 1)
        return ModelOutput(self.net.classifier(emb), tuple(feats), tuple(pres), emb)


class TorchvisionMobileNetV2(nn.Module):
    """Taps where the resolution last holds: 24 @ /4, 32 @ /8, 96 @ /16, 1280 @ /32."""

    TAPS = (3, 6, 13, 18)

    def __init__(self, num_classes: int = 1000, pretrained: bool = False):
        super().__init__()
        self.net = _build("mobilenet_v2", num_classes, pretrained)
        self.stage_channels = (24, 32, 96, 1280)

    def forward(self, x):
        feats = []
        for i, layer in enumerate(self.net.features):
            x = layer(x)
            if i in self.TAPS:
                feats.append(x)
        emb = pooled(x)
        # no separate pre-activation taps: the linear bottlenecks are their own
        return ModelOutput(self.net.classifier(emb), tuple(feats), tuple(feats), emb)


class TorchvisionShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, pretrained: bool = False):
        super().__init__()
        self.net = _build("shufflenet_v2_x1_0", num_classes, pretrained)
        self.stage_channels = (116, 232, 464)

    def forward(self, x):
        n = self.net
        x = n.maxpool(n.conv1(x))
        feats = []
        for stage in (n.stage2, n.stage3, n.stage4):
            x = stage(x)
            feats.append(x)
        emb = pooled(n.conv5(x))
        return ModelOutput(n.fc(emb), tuple(feats), tuple(feats), emb)


def _resnet(arch):
    def build(num_classes: int = 1000, pretrained: bool = False):
        return TorchvisionResNet(arch, num_classes, pretrained)
    return build


TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2", "shufflenet_v2_x1_0", "vgg16_bn")

for _arch in TORCHVISION_MODELS[:4]:
    register_model(_arch)(_resnet(_arch))


@register_model("mobilenet_v2")
def mobilenet_v2(num_classes: int = 1000, pretrained: bool = False):
    return TorchvisionMobileNetV2(num_classes, pretrained)


@register_model("vgg16_bn")
def vgg16_bn(num_classes: int = 1000, pretrained: bool = False):
    return TorchvisionVGG("vgg16_bn", num_classes, pretrained)


@register_model("shufflenet_v2_x1_0")
def shufflenet_v2_x1_0(num_classes: int = 1000, pretrained: bool = False):
    return TorchvisionShuffleNetV2(num_classes, pretrained)
