"""SKD substage branches (Wang et al., staged KD): one method, `substage: response | feature |
relation`, each link of a branch's teaching-assistant cascade trains with it.

  response  CE + kd_weight * T^2 KL                     (eq. 1; lambda 0.9, T 4)
  feature   CE + at_weight * AT + df_weight * DF(top_k)  (eq. 6-7; alpha 200, beta 300, K 8)
  relation  CE + fsp_weight * FSP                       (eq. 8-9; gamma 0.9)
"""

from __future__ import annotations

from typing import Literal

from raykd.methods.base import Distiller, ce_loss
from raykd.methods.registry import register_method
from raykd.methods.skd_terms import FeatureTerm, RelationTerm, ResponseTerm, SubstageConfig, check_top_k


class SKDConfig(SubstageConfig):
    name: Literal["skd"] = "skd"
    substage: Literal["response", "feature", "relation"] = "response"


@register_method
class SKD(Distiller):
    name = "skd"
    Config = SKDConfig
    needs_teacher = True
    summary = "SKD substage (response | feature | relation) for one link of a branch's cascade"
    source = "SKD paper (lambda 0.9, alpha 200, beta 300, gamma 0.9, T 4)"

    @classmethod
    def check_models(cls, cfg, student, teacher) -> str | None:
        return check_top_k(cfg.top_k, student, teacher) if cfg.substage == "feature" else None

    def setup(self, ctx):
        c = self.cfg
        if c.substage == "response":
            self.term, self.weights = ResponseTerm(c.temperature), {"kd": c.kd_weight}
        elif c.substage == "feature":
            self.term, self.weights = FeatureTerm(self.student, self.teacher, c.top_k), \
                {"at": c.at_weight, "df": c.df_weight}
        else:
            self.term, self.weights = RelationTerm(self.student, self.teacher), {"fsp": c.fsp_weight}

    def forward(self, batch):
        t = self.teacher_forward(batch["image"])
        s = self.student(batch["image"])
        terms = self.term(s, t)
        return s.logits, {"ce": self.cfg.ce_weight * ce_loss(s.logits, batch),
                          **{k: self.weights[k] * v for k, v in terms.items()}}
