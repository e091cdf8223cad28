"""MTKD-SSR, multi-target KD via student self-reflection (Gou et al., IJCV 2023), eq. 10:

    L = alpha * SRD + beta * REVIEW + gamma * SCD + sum_{i=1..K} CE(y, p^s_i)

K = the backbone's stages; stages 1..K-1 get a GAP + FC head (training-only: `final.pt` holds the plain
student), stage K's classifier is the model's own. The teacher's stage heads come from a `stage_probes`
node (linear probes on its frozen stages), which is this node's `teacher`.

- SRD (eq. 3): sum_i KL(p^t_i || p^s_i) at T1 (3): teacher stage i teaches student stage i.
- REVIEW (eq. 5-6, the paper's "CRD"): each stage i >= 2 learns from every earlier stage j < i,
  KL(p^s_j || p^s_i) at T2 (2), the earlier prediction a detached target: shallow to deep, as sec. 3.3,
  Fig. 1 and Table 9 say (eq. 5 written with eq. 4's argument order would make the deeper stage the target).
  `review: window:N` lets only the deepest N stages take part (Fig. 8a = all = window:K, 8b = window:3,
  8c = window:2 for K = 4); `review_direction: deep_to_shallow` makes the deepest stage the target of every
  earlier one (Table 9's "self-distillation", as BYOT/SD).
- SCD (eq. 7-9): per stage, MSE over batch and channels between the channel weights (spatial mean of the
  activated map, eq. 8) of teacher and student; where channels differ a 1x1 conv maps the student's map
  to the teacher's (applied after pooling: the two commute, the parameters and result are the same).
  `channel_loss: fd` is eq. 12-13 instead: MSE between the maps through the same connectors (Table 8).

T^2: eq. 3-5 have none; `t_squared: true` (default) scales each KL by T^2 as Hinton et al. do, so the
gradient of a soft term does not shrink as 1/T^2 against the K CE terms at alpha = beta = gamma = 1 (the
paper gives no weights), and SRD at T1 3 and REVIEW at T2 2 stay comparable when T1, T2 are swept (Fig. 3-4).
"""

from __future__ import annotations

import re
from typing import Literal

import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from raykd.errors import ConfigError
from raykd.losses import channel_weights, fd_loss, review_loss, review_pairs, scd_loss, srd_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss
from raykd.methods.registry import register_method
from raykd.models.stage_heads import StageHeads
from raykd.models.video import frame_model

_WINDOW = re.compile(r"^window:(\d+)$")


class MTKDSSRConfig(MethodConfig):
    name: Literal["mtkd_ssr"] = "mtkd_ssr"
    alpha: float = Field(1.0, ge=0, description="SRD weight (0 leaves the term out)")
    beta: float = Field(1.0, ge=0, description="REVIEW (the paper's CRD) weight")
    gamma: float = Field(1.0, ge=0, description="SCD (or FD) weight")
    t1: float = Field(3.0, gt=0, description="SRD temperature")
    t2: float = Field(2.0, gt=0, description="REVIEW temperature")
    review: str = Field("all", description="'all', or 'window:N': only the deepest N stages review")
    review_direction: Literal["shallow_to_deep", "deep_to_shallow"] = "shallow_to_deep"
    channel_loss: Literal["scd", "fd"] = "scd"
    t_squared: bool = True

    @field_validator("review")
    @classmethod
    def _pattern(cls, v: str) -> str:
        m = _WINDOW.match(v)
        if v != "all" and (m is None or int(m.group(1)) < 2):
            raise ValueError("review must be 'all' or 'window:N' with N >= 2 (Fig. 8b is window:3, 8c window:2)")
        return v

    @property
    def window(self) -> int | None:
        m = _WINDOW.match(self.review)
        return int(m.group(1)) if m else None

    @property
    def uses_teacher(self) -> bool:
        return self.alpha > 0 or self.gamma > 0


@register_method
class MTKDSSR(Distiller):
    name = "mtkd_ssr"
    Config = MTKDSSRConfig
    needs_teacher = True
    summary = "stage-wise response + channel distillation, shallow-to-deep review through stage heads"
    source = ("MTKD-SSR (Gou et al., IJCV 2023), eq. 3-13; T1 3, T2 2 from its CIFAR-100 study (sec. 4.2); "
              "alpha = beta = gamma = 1 (the paper states none)")

    @classmethod
    def check_models(cls, cfg, student, teacher):
        k = len(student.stage_channels)
        if k < 2:
            return f"mtkd_ssr needs a student of at least 2 stages; this one has {k}."
        if cfg.window is not None and cfg.window > k and cfg.beta > 0:
            return f"review: {cfg.review} but the student has {k} stages (window:2..{k}, or 'all')."
        if teacher is not None and cfg.uses_teacher and len(teacher.stage_channels) != k:
            return (f"SRD and {cfg.channel_loss.upper()} pair stage i of the teacher with stage i of the student, but the "
                    f"teacher has {len(teacher.stage_channels)} stages and the student {k}.")
        return None

    @classmethod
    def check_teacher_node(cls, cfg, teacher_method):
        if cfg.alpha > 0 and teacher_method != "stage_probes":
            return (f"mtkd_ssr's SRD (alpha > 0) distils the teacher's stage classifiers, which a 'stage_probes' node "
                    f"fits; this teacher is a '{teacher_method}' node. Add one (model: <the teacher's model>, "
                    f"init: <teacher>, method: stage_probes) and make it the teacher, or set alpha: 0.")
        return None

    def setup(self, ctx):
        cfg = self.cfg
        model = frame_model(self.student)
        problem = self.check_models(cfg, model, self.teacher)
        if problem:
            raise ConfigError(f"method: {problem}")
        channels = model.stage_channels
        self.heads = StageHeads(channels[:-1], ctx.num_classes)
        self.pairs = review_pairs(len(channels), cfg.window, cfg.review_direction) if cfg.beta > 0 else []
        if cfg.gamma > 0:
            self.connectors = nn.ModuleList(
                nn.Identity() if cs == ct else nn.Conv2d(cs, ct, 1)
                for cs, ct in zip(channels, self.teacher.stage_channels, strict=True))

    def forward(self, batch):
        cfg = self.cfg
        images = batch["image"]
        t_out = self.teacher_forward(images) if cfg.uses_teacher else None  # teacher first: see Distiller
        out = self.student(images)
        logits = [*self.heads(out.features), out.logits]
        losses = {"ce": sum(ce_loss(z, batch) for z in logits)}
        if cfg.alpha > 0:
            if len(t_out.stage_logits) != len(logits) - 1:
                raise ConfigError(f"method: the teacher carries {len(t_out.stage_logits)} stage classifiers, SRD needs "
                                  f"{len(logits) - 1}: train its stage_probes node on the teacher's model.")
            losses["srd"] = cfg.alpha * srd_loss(logits, [*t_out.stage_logits, t_out.logits], cfg.t1, cfg.t_squared)
        if cfg.beta > 0:
            losses["review"] = cfg.beta * review_loss(logits, self.pairs, cfg.t2, cfg.t_squared)
        if cfg.gamma > 0:
            if cfg.channel_loss == "scd":
                student = [self._connect_pooled(c, channel_weights(f)) for c, f in zip(self.connectors, out.features)]
                losses["scd"] = cfg.gamma * scd_loss(student, [channel_weights(f) for f in t_out.features])
            else:
                losses["fd"] = cfg.gamma * fd_loss([c(f) for c, f in zip(self.connectors, out.features)], t_out.features)
        return out.logits, losses

    @staticmethod
    def _connect_pooled(conn: nn.Module, w):
        """GAP(conv1x1(A)) computed as conv1x1(GAP(A)): equal for a 1x1 conv, H x W times cheaper."""
        if isinstance(conn, nn.Identity):
            return w
        return F.linear(w, conn.weight.flatten(1).to(w.dtype), None if conn.bias is None else conn.bias.to(w.dtype))

    def eval_heads(self, out):
        return {f"stage{i}": z for i, z in enumerate(self.heads(out.features), start=1)}
