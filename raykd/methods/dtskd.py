"""Dual Teachers for Self-KD (Li et al., Pattern Recognition 2024): B-1 auxiliary branches fused top-down
by the Mixed Fusion Module (methods/mfm.py) learn from two self-teachers:

    L = alpha1 * L_his + alpha2 * L_stru
    L_stru = sum_b T^2 KL(p_0 || p_b) at T 4                    (the backbone teaches each branch)
    L_his  = sum_{b=0..B-1} lambda_b KL(p'_b || p_b) at T 1,   p'_b = beta_t y + (1 - beta_t) p_b(t-1)

with lambda_0 3, lambda_b 1, alpha 0.2 / 0.8, beta_t cosine from 0.9 to 0.0 (the official CIFAR
script, run_train.sh). p_b(t-1) is each head's own softmax of the previous epoch, kept per sample
(methods/history.py). Unlike the official main.py, whose update is reachable only with a
multi-process flag that main() switches off (so every target there is the one-hot label),
the history is updated on every step; `history_update: false` reproduces the official behaviour.
The branches are training-only: `student` alone is exported.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from raykd.errors import ConfigError
from raykd.losses import historical_loss, history_targets, structural_loss
from raykd.methods.base import Distiller, MethodConfig
from raykd.methods.history import HistoryMemory
from raykd.methods.mfm import MixedFusionBranches
from raykd.methods.registry import register_method
from raykd.models.video import frame_model

OFFICIAL_LATERAL = {"shufflev2_dtskd": "conv_pool_conv"}  # models/shufflenetv2_dtskd.py convolves before pooling


class DTSKDConfig(MethodConfig):
    name: Literal["dtskd"] = "dtskd"
    alpha1: float = Field(0.2, ge=0, description="weight of the historical term (HD)")
    alpha2: float = Field(0.8, ge=0, description="weight of the structural term (SD)")
    temperature: float = Field(4.0, gt=0, description="structural KL temperature")
    lambda_backbone: float = Field(3.0, ge=0, description="historical weight of the backbone (lambda_0)")
    lambda_branch: float = Field(1.0, ge=0, description="historical weight of each branch (lambda_b)")
    decay: Literal["cosine", "linear", "fixed"] = "cosine"
    beta_max: float = Field(0.9, ge=0, le=1)
    beta_min: float = Field(0.0, ge=0, le=1)
    history_update: bool = True
    history_dtype: Literal["float16", "float32"] = "float16"
    history_topk: int | None = Field(None, gt=0, description="keep only each row's k largest probabilities")
    mfm: Literal["mixed", "add", "concat", "none"] = "mixed"
    width: Literal["constant", "pyramid"] = "constant"
    lateral: Literal["auto", "pool_conv", "conv_pool_conv"] = "auto"
    branches: list[int] | None = Field(None, min_length=1, description="auxiliary branches to build (1 = shallowest)")
    detach_structural: bool = False

    @model_validator(mode="after")
    def _range(self):
        if self.decay != "fixed" and self.beta_min > self.beta_max:
            raise ValueError(f"beta_min ({self.beta_min}) is above beta_max ({self.beta_max}); beta decays from max to min.")
        if self.alpha1 == 0 and self.alpha2 == 0:
            raise ValueError("alpha1 and alpha2 are both 0: nothing would be trained.")
        return self


def beta_at(decay: str, epoch: int, epochs: int, beta_max: float, beta_min: float) -> float:
    """beta_t of eq. 7 at 0-based `epoch`, as the official code computes it: cosine from beta_max at
    epoch 0 towards beta_min; linear (PS-KD's, reaching beta_min after the last epoch); fixed = beta_max."""
    if decay == "fixed":
        return beta_max
    if decay == "linear":
        return beta_max - (beta_max - beta_min) * (epoch + 1) / epochs
    return beta_min + (beta_max - beta_min) * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


@register_method
class DTSKD(Distiller):
    name = "dtskd"
    Config = DTSKDConfig
    summary = "dual-teacher self-KD: last epoch's predictions + backbone -> MFM branches"
    source = ("DTSKD official code: run_train.sh (alpha 0.2/0.8, lambda 3/1, cosine beta 0.9 -> 0.0), "
              "main.py and utils/label_dynamic.py (T 4 structural, T 1 historical KL, eps 1e-7)")

    @classmethod
    def check_models(cls, cfg, student, teacher):
        levels = len(student.stage_channels) - 1
        if levels < 1:
            return f"dtskd needs a backbone of at least 2 stages; this one has {len(student.stage_channels)}."
        bad = [b for b in cfg.branches or () if not 1 <= b <= levels]
        if bad:
            return f"branches: {bad} out of range; this backbone has {levels} auxiliary branches (1..{levels})."
        return None

    def setup(self, ctx):
        cfg = self.cfg
        model = frame_model(self.student)
        problem = self.check_models(cfg, model, None)
        if problem:
            raise ConfigError(f"method: {problem}")
        if cfg.history_topk is not None and cfg.history_topk > ctx.num_classes:
            raise ConfigError(f"method.history_topk: {cfg.history_topk} is more than the {ctx.num_classes} classes.")
        lateral = OFFICIAL_LATERAL.get(getattr(model, "raykd_name", ""), "pool_conv") if cfg.lateral == "auto" else cfg.lateral
        self.branch_net = MixedFusionBranches(model.stage_channels, ctx.num_classes, mode=cfg.mfm, width=cfg.width,
                                              lateral=lateral, branches=cfg.branches)
        self.epochs = ctx.epochs
        self.history = None
        label_only = cfg.beta_max == 1.0 and (cfg.decay == "fixed" or cfg.beta_min == 1.0)  # beta 1: no history
        if cfg.history_update and cfg.alpha1 > 0 and not label_only:
            self.history = HistoryMemory(len(ctx.train_labels), 1 + len(self.branch_net.branches), ctx.num_classes,
                                         getattr(torch, cfg.history_dtype), cfg.history_topk)

    def beta(self) -> float:
        c = self.cfg
        return beta_at(c.decay, self.epoch, self.epochs, c.beta_max, c.beta_min)

    def forward(self, batch):
        cfg = self.cfg
        out = self.student(batch["image"])
        branches = list(self.branch_net(out.features).values())
        losses = {}
        if cfg.alpha1 > 0:
            heads = [out.logits, *branches]
            weights = [cfg.lambda_backbone] + [cfg.lambda_branch] * len(branches)
            losses["historical"] = cfg.alpha1 * historical_loss(heads, self.targets(batch, heads), weights)
        if cfg.alpha2 > 0:
            losses["structural"] = cfg.alpha2 * structural_loss(branches, out.logits, cfg.temperature,
                                                                cfg.detach_structural)
        return out.logits, losses

    def targets(self, batch, heads: list[torch.Tensor]) -> torch.Tensor:
        """p'_b for every head [heads, B, classes]: the label softened by the head's own prediction of
        each sample from the previous epoch (the label alone before a sample's first visit), after
        which this step's predictions are stored for the next epoch."""
        y = batch.get("target")  # soft labels (video packages) stand in for the one-hot
        y = F.one_hot(batch["label"], heads[0].shape[1]).float() if y is None else y.float()
        past = y.expand(len(heads), *y.shape)
        if self.history is not None:
            probs = torch.stack([h.detach().float().softmax(1) for h in heads])
            stored, seen = self.history.exchange(batch["index"], probs)
            past = torch.where(seen[None, :, None], stored, past)
        return history_targets(y, past, self.beta())

    def eval_heads(self, out):
        return {f"branch{b}": z for b, z in self.branch_net(out.features).items()}

    def result_metrics(self):
        if self.history is None:
            return {"history/bytes": 0.0}
        h = self.history
        return {"history/bytes": float(h.bytes_per_sample * h.size), "history/bytes_per_rank": float(h.nbytes),
                "history/bytes_per_sample": float(h.bytes_per_sample)}

    def sharded_state_dict(self):
        return None if self.history is None else self.history.state_dict()

    def load_sharded_state(self, shards, old_world):
        if self.history is not None:
            self.history.load_shards(shards, old_world)

    def _apply(self, fn, recurse=True):
        if getattr(self, "history", None) is not None:
            self.history.apply(fn)
        return super()._apply(fn, recurse)
