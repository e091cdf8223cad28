"""Contrastive representation distillation (Tian et al., ICLR 2020).

Student and teacher embeddings are projected to 128-d unit vectors; each is contrasted with the
*other* network's memory bank: the same sample's entry is the positive, K entries of samples from
other classes are negatives (the paper's "exact" mode). NCE with the partition constant Z fixed on
the first batch, temperature 0.07, bank momentum 0.5, K 16384; CE + 0.8 * CRD (CRD's scripts).
The banks are per-sample memories, all-gathered under DDP and saved in checkpoints.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from raykd.losses import crd_nce_loss, kd_loss
from raykd.methods.base import Distiller, MethodConfig, probe
from raykd.methods.memory import SampleMemory
from raykd.methods.registry import register_method


class CRDConfig(MethodConfig):
    name: Literal["crd"] = "crd"
    feat_dim: int = Field(128, gt=0)
    nce_k: int = Field(16384, gt=0)
    nce_t: float = Field(0.07, gt=0)
    momentum: float = Field(0.5, ge=0, lt=1)
    beta: float = Field(0.8, ge=0)
    ce_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(0.0, ge=0, description="CRD+KD in the paper's tables uses 1.0")
    temperature: float = Field(4.0, gt=0)


class Embed(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Linear(cin, cout)

    def forward(self, x):
        return F.normalize(self.linear(x.flatten(1)), dim=1)


@register_method
class CRD(Distiller):
    name = "crd"
    Config = CRDConfig
    needs_teacher = True
    summary = "contrastive representation distillation with memory banks"
    source = "CRD paper and code"

    def setup(self, ctx):
        d_s = probe(self.student, ctx.image_shape).embedding.shape[1]
        d_t = probe(self.teacher, ctx.image_shape).embedding.shape[1]
        self.embed_s, self.embed_t = Embed(d_s, self.cfg.feat_dim), Embed(d_t, self.cfg.feat_dim)
        n, dim = len(ctx.train_labels), self.cfg.feat_dim
        stdv = 1.0 / math.sqrt(dim / 3)
        init = lambda: torch.rand(n, dim).mul_(2 * stdv).add_(-stdv)  # noqa: E731
        self.memories["student"] = SampleMemory(n, dim, init())
        self.memories["teacher"] = SampleMemory(n, dim, init())
        counts = torch.bincount(ctx.train_labels, minlength=ctx.num_classes)
        # derived from the labels, so not saved
        self.register_buffer("by_class", torch.argsort(ctx.train_labels, stable=True), persistent=False)
        self.register_buffer("class_count", counts, persistent=False)
        self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("z", torch.full((2,), -1.0))  # NCE normalisers, fixed on the first batch
        self._z_known = False  # cached so later steps do not sync with the device to test z
        self.n_data = n

    def negatives(self, labels: torch.Tensor) -> torch.Tensor:
        """[B, K] indices drawn uniformly from the samples whose class differs from each anchor's."""
        count, start = self.class_count[labels], self.class_start[labels]
        r = (torch.rand(len(labels), self.cfg.nce_k, device=labels.device) * (self.n_data - count)[:, None]).long()
        r = r + (r >= start[:, None]).long() * count[:, None]  # skip the anchor's own class block
        return self.by_class[r]

    def _scores(self, memory: SampleMemory, idx: torch.Tensor, v: torch.Tensor, which: int) -> torch.Tensor:
        w = memory[idx.flatten()].view(*idx.shape, -1)  # [B, 1+K, D]
        out = torch.exp(torch.bmm(w, v.float().unsqueeze(2)).squeeze(2) / self.cfg.nce_t)
        if not self._z_known and self.z[which] < 0:  # first batch (also after a resume: z is in the state)
            self.z[which] = (out.mean() * self.n_data).detach()
        return out / self.z[which].clone()  # a copy: z is written in place on the first batch

    def forward(self, batch):
        images, labels, index = batch["image"], batch["label"], batch["index"]
        t = self.teacher_forward(images)
        s = self.student(images)
        v_s, v_t = self.embed_s(s.embedding).float(), self.embed_t(t.embedding).float()
        idx = torch.cat([index[:, None], self.negatives(labels)], dim=1)
        mem_s, mem_t = self.memories["student"], self.memories["teacher"]
        crd = crd_nce_loss(self._scores(mem_t, idx, v_s, 0), 1.0 / self.n_data) + \
            crd_nce_loss(self._scores(mem_s, idx, v_t, 1), 1.0 / self.n_data)
        self._z_known = True
        m = self.cfg.momentum
        mem_s.write(index, F.normalize(mem_s[index] * m + v_s.detach() * (1 - m), dim=1))
        mem_t.write(index, F.normalize(mem_t[index] * m + v_t.detach() * (1 - m), dim=1))
        losses = {"ce": self.cfg.ce_weight * F.cross_entropy(s.logits, labels), "crd": self.cfg.beta * crd}
        if self.cfg.kd_weight:
            losses["kd"] = self.cfg.kd_weight * kd_loss(s.logits, t.logits, self.cfg.temperature)
        return s.logits, losses
