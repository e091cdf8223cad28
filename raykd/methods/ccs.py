"""Knowledge distillation via channel correlation structure, CCS (Li, Chen, Wang, Dai, Hu, Jiang, Xia, KSEM 2021,
LNAI 12815, pp. 357-368): CE plus, on every stage pair, the difference of teacher and student channel correlation
matrices, within each instance and between the instances of the mini-batch.

Sources. Only the abstract could be read (Springer chapter 10.1007/978-3-030-82136-4_29; no arXiv copy, no official
code found; MTKD-SSR's one line: "guide the training of a student by applying fine-grained supervision, i.e., both
inter- and intra-instance relationships"). The abstract: "channel correlation structure in terms of intra-instance
and inter-instance relationship among a mini-batch, that can be extracted and transferred from the teacher's
various outputs ... a novel KD loss derived from the Channel Correlation Structure (CCS) including feature-based and
relation-based knowledge ... align the channel correlation of both feature maps between the teacher and student
model by their channel correlation matrices". Everything below is our reading of that abstract:

    ce + intra_weight * sum_k CCS_intra_k + inter_weight * sum_k CCS_inter_k

- CCS_intra (`ccs_intra`, the feature-based knowledge): per sample, the C x C cosine similarity between its
  channels' flattened H x W maps; mean squared difference teacher vs student over samples and channel pairs.
- CCS_inter (`ccs_inter`, the relation-based knowledge "among a mini-batch"): per channel, the B x B cosine
  similarity between the samples' maps of that channel; mean squared difference over channels and sample pairs.
  (Other readings the abstract allows: a B x B similarity between the samples' whole C x C matrices, or between
  their pooled channel vectors; we keep the channel as the unit in both terms, as the method's name suggests.)
- "Various outputs": every stage pair (`connectors.stage_pairs`, aligned from the deepest stage), summed as AT sums
  its stages; the larger map is average-pooled to the smaller; post-activation `features`.
- Correlation = cosine similarity of the raw maps; `centered: true` makes it Pearson correlation (maps centred
  over H x W first). The abstract does not say which.
- Channel mismatch: a 1x1 conv + BN + ReLU connector (`connectors.conv_bn` + ReLU: the connected map is an activated
  map like the teacher's `features`) on the student where widths differ; identity where they are equal, so the
  student's own channel structure is what is compared (a connector there could absorb the structure instead).
- Weights: the abstract gives none. `intra_weight` = `inter_weight` = 1 (unit weights, as DESIGN.md does for
  MTKD-SSR's unstated weights). Measured at initialisation on digits images (random-init resnet20 -> resnet8,
  resnet32x4 -> resnet8x4, cifar_resnet34 -> cifar_resnet18), each stage's intra and inter losses are 0.04-0.2,
  so the summed CCS terms start near 0.3-0.6 each, against CE's ln(100) = 4.6 on CIFAR-100: tune them per pair.
- A term whose weight is 0 is neither computed nor logged. The inter-instance term relates the samples of each
  rank's own batch under DDP (as SP does).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from raykd.losses.channel_correlation import ccs_inter_loss, ccs_intra_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss
from raykd.methods.connectors import activated_connector, stage_pairs
from raykd.methods.registry import register_method


class CCSConfig(MethodConfig):
    name: Literal["ccs"] = "ccs"
    intra_weight: float = Field(1.0, ge=0)  # per-sample C x C channel correlations (not given by the abstract)
    inter_weight: float = Field(1.0, ge=0)  # per-channel B x B instance correlations (not given by the abstract)
    centered: bool = False  # Pearson instead of cosine
    ce_weight: float = Field(1.0, ge=0)


@register_method
class CCS(Distiller):
    name = "ccs"
    Config = CCSConfig
    needs_teacher = True
    summary = "channel correlation structure: per-sample channel and per-channel sample correlations, every stage"
    source = "reading of the CCS abstract (KSEM 2021; no code): unit weights, our choice"

    def setup(self, ctx):
        self.pairs = stage_pairs(self.student, self.teacher)
        used = self.cfg.intra_weight > 0 or self.cfg.inter_weight > 0
        self.connectors = nn.ModuleList(activated_connector(p.s_channels, p.t_channels) for p in self.pairs if used)

    def forward(self, batch):
        cfg = self.cfg
        t = self.teacher_forward(batch["image"])
        s = self.student(batch["image"])
        losses = {"ce": cfg.ce_weight * ce_loss(s.logits, batch)}
        if cfg.intra_weight == 0 and cfg.inter_weight == 0:
            return s.logits, losses
        connected = [(conn(s.features[p.s]), t.features[p.t]) for conn, p in zip(self.connectors, self.pairs)]
        if cfg.intra_weight > 0:
            losses["ccs_intra"] = cfg.intra_weight * sum(ccs_intra_loss(fs, ft, cfg.centered) for fs, ft in connected)
        if cfg.inter_weight > 0:
            losses["ccs_inter"] = cfg.inter_weight * sum(ccs_inter_loss(fs, ft, cfg.centered) for fs, ft in connected)
        return s.logits, losses
