"""Frame generators turn one still image into candidate video frames for SKD's packages.

A generator is a callable `(images uint8 [N, C, H, W], generator) -> uint8 [N, C, H, W]` giving
one new frame per image. `random_augment` samples crop/scale, flip, colour and rotation; a learned
style model (the paper's CycleGAN) plugs in with `register_frame_generator("name")` and is chosen
by `method.generator: name` on the packages node.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

FrameGenerator = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
_GENERATORS: dict[str, Callable[..., FrameGenerator]] = {}


def register_frame_generator(name: str):
    def deco(factory: Callable[..., FrameGenerator]):
        _GENERATORS[name] = factory
        return factory

    return deco


def frame_generator(name: str, **kwargs) -> FrameGenerator:
    if name not in _GENERATORS:
        raise KeyError(f"unknown frame generator '{name}'; registered: {', '.join(sorted(_GENERATORS))}")
    return _GENERATORS[name](**kwargs)


def list_frame_generators() -> list[str]:
    return sorted(_GENERATORS)


@register_frame_generator("random_augment")
def random_augment(scale: float = 0.15, rotate: float = 15.0, brightness: float = 0.3, contrast: float = 0.3,
                   flip: bool = False) -> FrameGenerator:
    """Random affine (zoom +-scale, rotation +-rotate degrees, shift), optional flip, brightness and
    contrast jitter: one random draw of the search space per image."""

    def generate(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = images.shape[0]
        u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)  # noqa: E731
        angle = u(-rotate, rotate) * math.pi / 180
        zoom = u(1 - scale, 1 + scale)
        shift = torch.stack([u(-scale, scale), u(-scale, scale)], dim=1)
        sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos * sign, -sin, shift[:, 0]], 1),
                             torch.stack([sin * sign, cos, shift[:, 1]], 1)], 1)
        x = images.float()
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * u(1 - contrast, 1 + contrast)[:, None, None, None] + mean
        x = x * u(1 - brightness, 1 + brightness)[:, None, None, None]
        return x.clamp(0, 255).round().to(torch.uint8)

    return generate
