"""Learned adapters methods put between student and teacher features (owned by the method)."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn


class StagePair(NamedTuple):
    s: int  # student stage index
    t: int  # teacher stage index
    s_channels: int
    t_channels: int


def stage_pairs(student: nn.Module, teacher: nn.Module) -> list[StagePair]:
    """The stages a method pairs up, aligned from the deepest one when the counts differ."""
    s_ch, t_ch = student.stage_channels, teacher.stage_channels
    n = min(len(s_ch), len(t_ch))
    return [StagePair(i, j, s_ch[i], t_ch[j]) for i, j in zip(range(len(s_ch) - n, len(s_ch)),
                                                              range(len(t_ch) - n, len(t_ch)))]


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    """1x1 conv + BN: maps student channels to the teacher's (AB's connector, FSP/SCD adapters)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


def activated_connector(cin: int, cout: int) -> nn.Module:
    """Identity for equal widths, else 1x1 conv + BN + ReLU: the connected student map is an activated map like
    the teacher's `features` (H-AT, CCS), and at equal widths the student's own channels are compared."""
    return nn.Identity() if cin == cout else nn.Sequential(conv_bn(cin, cout), nn.ReLU(inplace=True))


def conv_regressor(s_shape, t_shape) -> nn.Sequential:
    """FitNets' convolutional regressor from a student [C, H, W] map to the teacher's: a strided conv
    halves, a transposed conv doubles, otherwise a (1 + dH) x (1 + dW) valid conv shrinks; then BN, ReLU."""
    (sc, sh, sw), (tc, th, tw) = tuple(s_shape), tuple(t_shape)
    if sh == 2 * th:
        conv = nn.Conv2d(sc, tc, 3, 2, 1)
    elif sh * 2 == th:
        conv = nn.ConvTranspose2d(sc, tc, 4, 2, 1)
    elif sh >= th:
        conv = nn.Conv2d(sc, tc, (1 + sh - th, 1 + sw - tw))
    else:
        raise ValueError(f"no regressor from a {sh}x{sw} student map to a {th}x{tw} teacher map")
    return nn.Sequential(conv, nn.BatchNorm2d(tc), nn.ReLU(inplace=True))
