"""Hybrid attention transfer, H-AT (Qu, Deng, Hu, PRCV 2020, pp. 249-260): CE plus, on every stage pair, AT's
spatial attention loss and a channel attention loss, both weighted more on deeper stages.

Sources. The paper's text could not be read (no open copy found); MTKD-SSR describes it in one line ("calculates
the channel-based attention knowledge through the output of the teacher's middle layers and then transfers it to
the student network"). The official code could: github.com/somone23412/H-AT, `cifar_train.py` (`hybrid_loss`,
`at_loss`, `to_embedding`, `sim_loss`) and `cifar_train.sh`; every default below comes from there.

Loss (official `hybrid_loss`, with the script's ALPHA 0, BETA 0, GAMMA 0, DELTA 10, i.e. plain CE and no KD, AT or
SP terms beside H-AT): for stage k of n (0 shallowest),

    ce + sum_k  spatial_weight * r^(n-1-k) * AT_k  +  channel_weight * r^(n-1-k) * CH_k

- AT_k (`hat_spatial`): Zagoruyko & Komodakis with p 2: mean over positions of the squared difference of the
  L2-normalised channel-mean of A^2 (the larger map average-pooled to the smaller, as our `at`).
- CH_k (`hat_channel`): per sample the channel attention is the global-average-pooled activated map, L2-normalised
  (official `to_embedding(avg_pool(relu(bn(g))))`); the loss is the batch mean of (1 - cos(a_s, a_t))^2.
- Weights: the code's `delta_muls` = 10^(k-n+1) and `beta_muls` = 100 * `delta_muls`, both times DELTA 10, so for
  three stages channel 0.1 / 1 / 10 and spatial 10 / 100 / 1000 (the script's comment: "delta[] mentioned in paper
  equals to [0.01, 0.1, 1] * DELTA"): `channel_weight` 10, `spatial_weight` 1000 (deepest stage), `stage_ratio`
  0.1. Four-stage pairs follow the same rule (the code's rule is written for any number of groups).

Our choices where the official code does not carry over (it only runs WRN -> WRN of equal widths on CIFAR-10):
- Features: our `features` (post-activation stage outputs) for both terms. The official WRN is pre-activation:
  its channel attention reads relu(bn(group output)), which is what our `features` are; its AT reads the raw group
  output (no BN/ReLU), for which post-activation CIFAR ResNets have no exact counterpart, so AT reads `features`
  as our `at` method does. The official code also computes the teacher's channel attention with that BN in
  training mode (batch statistics, updating the teacher's running statistics); ours reads the frozen eval-mode
  teacher, as every raykd method does.
- Channel mismatch: a 1x1 conv + BN + ReLU connector (`connectors.conv_bn` + ReLU, so the connected map is an
  activated map like the teacher's) on the student where widths differ, identity where they are equal. The
  official code instead picks, on the first batch, the teacher's C_s channels of largest normalised batch std,
  keeps that choice for the run, uses it only on the last stage, and drops the channel term (and restricts the
  teacher's AT to its first C_s channels) on the other stages. That cannot serve a student wider than its teacher
  (resnet32x4 -> shufflev1), would differ between DDP ranks (each sees its own first batch), and leaves shallow
  stages without a channel term; so we do not reproduce it. AT compares all teacher channels (AT needs no match).
- Stage pairs: `connectors.stage_pairs` (aligned from the deepest stage when the counts differ).
- A term whose weight is 0 is neither computed nor logged (and its connectors are not built).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from raykd.losses.hybrid_attention import channel_attention_loss, spatial_attention_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss
from raykd.methods.connectors import activated_connector, stage_pairs
from raykd.methods.registry import register_method


class HATConfig(MethodConfig):
    name: Literal["hat"] = "hat"
    spatial_weight: float = Field(1000.0, ge=0)  # AT weight on the deepest stage (100 * 1 * DELTA 10)
    channel_weight: float = Field(10.0, ge=0)  # channel attention weight on the deepest stage (1 * DELTA 10)
    stage_ratio: float = Field(0.1, ge=0)  # each shallower stage's weights: the next deeper one's times this
    p: float = Field(2.0, gt=0)  # AT's power
    ce_weight: float = Field(1.0, ge=0)


@register_method
class HAT(Distiller):
    name = "hat"
    Config = HATConfig
    needs_teacher = True
    summary = "hybrid attention transfer: spatial (AT) + channel attention on every stage pair, deeper weighted more"
    source = ("H-AT official code (somone23412/H-AT): cifar_train.py hybrid_loss, cifar_train.sh DELTA 10 "
              "(spatial 10/100/1000, channel 0.1/1/10 shallow to deep)")

    def setup(self, ctx):
        self.pairs = stage_pairs(self.student, self.teacher)
        n = len(self.pairs)
        self.stage_scale = [self.cfg.stage_ratio ** (n - 1 - k) for k in range(n)]
        if self.cfg.channel_weight > 0:
            self.connectors = nn.ModuleList(activated_connector(p.s_channels, p.t_channels) for p in self.pairs)

    def forward(self, batch):
        cfg = self.cfg
        t = self.teacher_forward(batch["image"])
        s = self.student(batch["image"])
        losses = {"ce": cfg.ce_weight * ce_loss(s.logits, batch)}
        if cfg.spatial_weight > 0:
            losses["hat_spatial"] = cfg.spatial_weight * sum(
                w * spatial_attention_loss(s.features[p.s], t.features[p.t], cfg.p)
                for w, p in zip(self.stage_scale, self.pairs))
        if cfg.channel_weight > 0:
            losses["hat_channel"] = cfg.channel_weight * sum(
                w * channel_attention_loss(conn(s.features[p.s]), t.features[p.t])
                for w, p, conn in zip(self.stage_scale, self.pairs, self.connectors))
        return s.logits, losses
