"""RSKD's combination stage (SKD paper eq. 10): one student per cascade link learns all three
substages at once, `CE + eta * response + xi * feature + tau * relation`, each term as in `skd`
without its CE. `backbone` picks the term weighted 1 (ablation C-r / C-f / C-e); the others carry
`aux_weight`. `dagger: true` is RSKD-dagger (tau = 0, no relation term). eta, xi and tau may also
be set directly (then `backbone` and `aux_weight` are not used for that term).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raykd.methods.base import Distiller, ce_loss
from raykd.methods.registry import register_method
from raykd.methods.skd_terms import FeatureTerm, RelationTerm, ResponseTerm, SubstageConfig, check_top_k


class RSKDConfig(SubstageConfig):
    name: Literal["rskd"] = "rskd"
    backbone: Literal["response", "feature", "relation"] = "response"
    aux_weight: float = Field(0.5, ge=0)
    dagger: bool = False
    eta: float | None = Field(None, ge=0)
    xi: float | None = Field(None, ge=0)
    tau: float | None = Field(None, ge=0)

    def substage_weights(self) -> dict[str, float]:
        """eta, xi, tau after the backbone rule, the explicit values and the dagger switch."""
        rule = {s: 1.0 if s == self.backbone else self.aux_weight for s in ("response", "feature", "relation")}
        w = {"response": self.eta if self.eta is not None else rule["response"],
             "feature": self.xi if self.xi is not None else rule["feature"],
             "relation": self.tau if self.tau is not None else rule["relation"]}
        if self.dagger:
            w["relation"] = 0.0
        return w


@register_method
class RSKD(Distiller):
    name = "rskd"
    Config = RSKDConfig
    needs_teacher = True
    summary = "RSKD combination stage: CE + eta*response + xi*feature + tau*relation (eq. 10)"
    source = "SKD paper eq. 10; aux_weight ours"

    @classmethod
    def check_models(cls, cfg, student, teacher) -> str | None:
        return check_top_k(cfg.top_k, student, teacher) if cfg.substage_weights()["feature"] > 0 else None

    def setup(self, ctx):
        c = self.cfg
        self.w = c.substage_weights()
        self.response = ResponseTerm(c.temperature)
        self.feature = FeatureTerm(self.student, self.teacher, c.top_k) if self.w["feature"] > 0 else None
        self.relation = RelationTerm(self.student, self.teacher) if self.w["relation"] > 0 else None

    def forward(self, batch):
        c = self.cfg
        t = self.teacher_forward(batch["image"])
        s = self.student(batch["image"])
        losses = {"ce": c.ce_weight * ce_loss(s.logits, batch)}
        if self.w["response"] > 0:
            losses["kd"] = self.w["response"] * c.kd_weight * self.response(s, t)["kd"]
        if self.feature is not None:
            f = self.feature(s, t)
            losses["at"] = self.w["feature"] * c.at_weight * f["at"]
            losses["df"] = self.w["feature"] * c.df_weight * f["df"]
        if self.relation is not None:
            losses["fsp"] = self.w["relation"] * c.fsp_weight * self.relation(s, t)["fsp"]
        return s.logits, losses
