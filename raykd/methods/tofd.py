"""Task-Oriented Feature Distillation (Zhang, Shi, Shi, Ma, Bao, NeurIPS 2020), as the official distill.py does
(github.com/ArchipLab-LinfengZhang/Task-Oriented-Feature-Distillation, HEAD fcfd4be):

    L = sum_levels [ ce_w * CE(z_s, y) + kd_w * CE_soft(z_s, z_t, T_e) + alpha * ||link(f_s) - f_t|| ]
        + beta * sum_links (||W W^T - I||_F + ||W^T W - I||_F)

A level is an auxiliary classifier on a stage (SepConv chain + pool + FC, methods/aux_classifiers.py), whose
pooled output f is the "task-oriented feature", plus the model's own classifier with its embedding. The
student's and teacher's levels pair up index-wise (official: both ResNets, 4 stages), here aligned from
the deepest stage when the counts differ (a 4-stage student under a 3-stage teacher gets classifiers on its
stages 2-3). `link` is a bias-free Linear(student dim -> teacher dim) per level (distill.py's "feature resizing
layer"). Defaults (distill.py argparse): alpha 0.05, beta 0.03 (the first commit had 0.4 divided by 10 at each
LR drop), t 3 with T_e = 1 + t * (e + 1) / E over epochs e = 0..E-1 (official E = 250, its run length: here the
run's), CE and KD weight 1 on every level (`criterion`, utils.CrossEntropy: soft-target CE, no T^2).

Choices:
- Teacher classifiers. The official teacher (teacher/resnet18.pth) ships with its auxiliary classifiers trained
  (its training script is not published; Fig. 1: the teacher's convs are trained by the task loss). A raykd
  teacher is a plain model, so its classifiers (same architecture) are fitted here, in the TOFD run, by CE on the
  frozen teacher's stage maps (computed under no_grad: gradient reaches only these heads), logged as
  `teacher_aux`; their features and logits are detached targets. Not a separate node like MTKD-SSR's
  `stage_probes`: SepConv heads and their features would have to travel in final.pt and ModelOutput, which
  carry only linear stage logits today; this way any teacher node (the kd presets') works as is. The cost:
  in the first epochs the targets come from heads still being fitted (T_e starts near 1 then).
- Feature term. torch.dist over the batch grows as sqrt(B); here the per-sample RMS distance times
  sqrt(reference_batch) (128, the official BATCH_SIZE): equal to the official at batch 128, and the same
  per-sample weight at any data.batch_size or number of ranks.
- The official teacher runs in train mode (BN batch statistics, running stats drifting); raykd's frozen teacher
  is in eval mode. The HEAD distill.py steps the optimizer once per epoch (an indentation slip; earlier
  commits step per batch): per batch here. Its --l2 7e-3 is overridden by weight_decay 5e-4 once the links
  exist; the presets keep the CRD/DKD recipe (5e-4) like every baseline. Official stores the links and
  classifiers in the student; here they live on the distiller and are not exported.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from raykd.losses.task_oriented import orthogonal_loss, task_feature_distance, tofd_kd_loss
from raykd.methods.aux_classifiers import stage_classifier
from raykd.methods.base import Distiller, MethodConfig, ce_loss, probe
from raykd.methods.registry import register_method


class TOFDConfig(MethodConfig):
    name: Literal["tofd"] = "tofd"
    alpha: float = Field(0.05, ge=0, description="feature distillation weight (distill.py --alpha)")
    beta: float = Field(0.03, ge=0, description="orthogonal loss weight on the links (distill.py --beta)")
    temperature: float = Field(3.0, ge=0, description="--t: T rises linearly from 1 + t/E to 1 + t over E epochs")
    ce_weight: float = Field(1.0, ge=0, description="CE on the student's classifier and on each auxiliary one")
    kd_weight: float = Field(1.0, ge=0, description="soft-target CE from each teacher level to the student's")
    reference_batch: int = Field(128, gt=0, description="batch at which the feature term equals torch.dist's")


def _name(model) -> str:
    return getattr(model, "raykd_name", type(model).__name__)


@register_method
class TOFD(Distiller):
    name = "tofd"
    Config = TOFDConfig
    needs_teacher = True
    summary = "task-oriented features (auxiliary classifiers' pooled SepConv outputs) + KD per level + orthogonal links"
    source = ("TOFD official code: distill.py (alpha 0.05, beta 0.03, t 3 -> T 1 + 3 (e+1)/E, CE and KD weight 1), "
              "models/resnet.py (SepConv auxiliary classifiers)")

    @classmethod
    def check_models(cls, cfg, student, teacher):
        for role, model in (("student", student), ("teacher", teacher)):
            if model is not None and not tuple(getattr(model, "stage_channels", ())):
                return (f"tofd attaches auxiliary classifiers to the {role}'s stages, but {_name(model)} exposes no "
                        f"stage_channels.")
        return None

    @property
    def uses_teacher_heads(self) -> bool:
        return self.cfg.alpha > 0 or self.cfg.kd_weight > 0

    @property
    def unused_parameters(self) -> bool:
        return self.cfg.ce_weight == 0 and self.cfg.kd_weight == 0  # then the student heads' FCs get nothing

    def setup(self, ctx):
        c = ctx.num_classes
        s_out, t_out = probe(self.student, ctx.image_shape), probe(self.teacher, ctx.image_shape)
        s_shapes = [tuple(f.shape[1:]) for f in s_out.features]
        t_shapes = [tuple(f.shape[1:]) for f in t_out.features]
        n = min(len(s_shapes), len(t_shapes))
        # (student stage, teacher stage) of each auxiliary level, aligned from the deepest; the deepest
        # pair's classifier is each model's own
        self.stages = [(len(s_shapes) - n + k, len(t_shapes) - n + k) for k in range(n - 1)]
        self.student_heads = nn.ModuleList(stage_classifier(s_shapes, i, c) for i, _ in self.stages)
        self.teacher_heads = nn.ModuleList(stage_classifier(t_shapes, j, c) for _, j in self.stages) \
            if self.uses_teacher_heads else None
        if self.cfg.alpha > 0:
            s_dims = [h.feature_dim for h in self.student_heads] + [s_out.embedding.shape[1]]
            t_dims = [h.feature_dim for h in self.teacher_heads] + [t_out.embedding.shape[1]]
            self.links = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(s_dims, t_dims))
        else:
            self.links = None
        self.epochs = ctx.epochs

    def current_temperature(self) -> float:
        """distill.py: 1 + (t / 250) * (1 + epoch) over its 250 epochs; here over the run's."""
        return 1.0 + self.cfg.temperature * (self.epoch + 1) / max(1, self.epochs)

    def forward(self, batch):
        cfg = self.cfg
        t = self.teacher_forward(batch["image"])  # teacher first: see Distiller.teacher_forward
        s = self.student(batch["image"])
        s_levels = [head(s.features[i]) for head, (i, _) in zip(self.student_heads, self.stages)]
        losses = {"ce": cfg.ce_weight * ce_loss(s.logits, batch)}
        if s_levels:
            losses["aux"] = cfg.ce_weight * sum(ce_loss(z, batch) for _, z in s_levels)
        s_levels.append((s.embedding, s.logits))
        if self.teacher_heads is not None:
            # t.features carry no graph (no_grad forward): the heads' CE trains only the heads
            t_aux = [head(t.features[j]) for head, (_, j) in zip(self.teacher_heads, self.stages)]
            if t_aux:
                losses["teacher_aux"] = sum(ce_loss(z, batch) for _, z in t_aux)
            t_levels = [(f.detach(), z.detach()) for f, z in t_aux] + [(t.embedding, t.logits)]
            if cfg.kd_weight > 0:
                T = self.current_temperature()
                losses["kd"] = cfg.kd_weight * sum(tofd_kd_loss(zs, zt, T)
                                                   for (_, zs), (_, zt) in zip(s_levels, t_levels))
            if cfg.alpha > 0:
                scale = cfg.alpha * math.sqrt(cfg.reference_batch)
                losses["feature"] = scale * sum(task_feature_distance(link(fs), ft)
                                                for link, (fs, _), (ft, _) in zip(self.links, s_levels, t_levels))
        if self.links is not None and cfg.beta > 0:
            losses["orth"] = cfg.beta * sum(orthogonal_loss(link.weight) for link in self.links)
        return s.logits, losses

    def eval_heads(self, out):
        """The student's auxiliary classifiers, by the stage (1-based) they sit on."""
        return {f"stage{i + 1}": head(out.features[i])[1] for head, (i, _) in zip(self.student_heads, self.stages)}
