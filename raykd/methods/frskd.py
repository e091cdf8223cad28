"""Feature Refinement via Self-Knowledge Distillation (Ji et al., CVPR 2021): a self-teacher BiFPN
(methods/bifpn.py) reads the classifier's stage features, refines them top-down and bottom-up and
classifies the refined deepest map; the classifier learns from both its refined maps and its logits:

    L = CE(student) + CE(self-teacher) + alpha * T^2 KL(p_t^T || p_s^T) + beta * sum_i AT(F_i, T_i)

AT: mean squared difference of the L2-normalised, flattened channel mean of F^2 (p 2), summed over the
stages; KL at T 4 with the T^2 factor (losses/feature_refine.py). Defaults, from the official code
(github MingiJi/FRSKD, classification/): alpha 2, beta 100 (README's CIFAR-100 command), T 4
(main.py --temperature), self-teacher BiFPNc (main.py --bifpn) of width 2 (--width: level i has 2 c_i
channels), depth 2 (--depth: two depthwise-separable 3x3 convs in each top-down and bottom-up node),
one layer (--repeat 1), on every stage (--num_features -1), p 2 (distill_loss/AT.py).

As in the official code (utils.py train, AT.py, KD.py): the self-teacher's features and logits are
detached where they are targets, but its input is not, so its own CE also trains the classifier's
stages (`detach_input: true` stops that, for the reading that the self-teacher only consumes them);
the student's features are the post-ReLU stage outputs. The official SLA / mixup / cutmix options are
off in its plain FRSKD command and are not part of this method. Logged terms: `ce`, `teacher_ce`,
`kd`, `feature` (each already weighted). The self-teacher is training-only: `student` alone is
exported; `eval_heads` reports its accuracy as `self_teacher`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raykd.errors import ConfigError
from raykd.losses.feature_refine import refined_attention_loss, self_teacher_kd_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss, probe
from raykd.methods.bifpn import SelfTeacherBiFPN
from raykd.methods.registry import register_method
from raykd.models.video import frame_model


class FRSKDConfig(MethodConfig):
    name: Literal["frskd"] = "frskd"
    alpha: float = Field(2.0, ge=0, description="weight of the soft-label KL (README CIFAR-100: --alpha 2)")
    beta: float = Field(100.0, ge=0, description="weight of the feature (AT) loss (README CIFAR-100: --beta 100)")
    temperature: float = Field(4.0, gt=0, description="KL temperature (main.py --temperature 4)")
    width: int = Field(2, ge=1, description="self-teacher level i has width * c_i channels (main.py --width 2)")
    depth: int = Field(2, ge=1, description="depthwise-separable convs per BiFPN node (main.py --depth 2)")
    attention_p: float = Field(2.0, gt=0, description="attention map exponent (AT.py: p 2)")
    detach_input: bool = Field(False, description="stop the self-teacher's gradients into the classifier "
                                                   "(the official code does not)")


@register_method
class FRSKD(Distiller):
    name = "frskd"
    Config = FRSKDConfig
    needs_teacher = False
    summary = "self-KD from a BiFPN self-teacher on the stages: refined-feature AT + soft labels"
    source = ("FRSKD official code (MingiJi/FRSKD classification/): README CIFAR-100 (alpha 2, beta 100), "
              "main.py (T 4, BiFPNc width 2, depth 2, repeat 1), distill_loss/AT.py (p 2), KD.py (T^2 KL)")

    @classmethod
    def check_models(cls, cfg, student, teacher):
        stages = len(frame_model(student).stage_channels)
        if stages < 2:
            return (f"frskd's self-teacher fuses stages, so it needs a model of at least 2 stages; "
                    f"this one has {stages}.")
        return None

    def setup(self, ctx):
        problem = self.check_models(self.cfg, self.student, None)
        if problem:
            raise ConfigError(f"method: {problem}")
        shapes = [f.shape[1:] for f in probe(self.student, ctx.image_shape).features]
        self.self_teacher = SelfTeacherBiFPN(shapes, ctx.num_classes, self.cfg.width, self.cfg.depth)

    def eval_heads(self, out):
        return {"self_teacher": self.self_teacher(out.features)[1]}

    def forward(self, batch):
        cfg = self.cfg
        out = self.student(batch["image"])
        feats = [f.detach() for f in out.features] if cfg.detach_input else list(out.features)
        refined, teacher_logits = self.self_teacher(feats)
        return out.logits, {
            "ce": ce_loss(out.logits, batch),
            "teacher_ce": ce_loss(teacher_logits, batch),
            "kd": cfg.alpha * self_teacher_kd_loss(out.logits, teacher_logits, cfg.temperature),
            "feature": cfg.beta * refined_attention_loss(out.features, refined, cfg.attention_p),
        }
