"""MixSKD (Yang et al., "MixSKD: Self-Knowledge Distillation from Mixup for Image Recognition", ECCV 2022): each
step mixes the batch with a permutation of itself, x~ = lam x + (1 - lam) x[perm], lam ~ Beta(0.4, 0.4) (drawn on
the host), and runs originals and mixtures in one forward. Every stage but the last has an auxiliary branch
repeating the later stages (methods/mixskd_modules.py); with mix(a) = lam a + (1 - lam) a[perm] over the
originals' outputs, F_h the last map and z_h the logits of head h (branches, then the backbone):

    ce           = sum_h CE(z_h(x), y)
    mix_ce       = sum_h mixCE(z_h(x~)) + mixCE(t(mix F)) + mixCE(t(F(x~)))    t: self-teacher on the B maps
    logit        = sum_branches T^2 [KL(sg z_h(x~) || mix z_h) + KL(sg mix z_h || z_h(x~))]
    self_teacher = T^2 [KL(sg t(F(x~)) || mix z_B) + KL(sg t(mix F) || z_B(x~))]     (to the backbone)
    feature      = sum_h MSE(mix F_h, F_h(x~))
    adversarial  = sum_h BCE(D_h(pool mix F_h) -> [1,0], D_h(pool F_h(x~)) -> [0,1])

Defaults are the official code's (winycg/Self-KD-Lib, main_mixskd_cifar.py and scripts/main_cifar.sh, the
paper's code): mixup alpha 0.4, T 3 (kd_T), every weight 1, discriminators Linear(C,128)-ReLU-Linear(128,2).
Choices where the code is loose:
- main_mixskd_cifar.py computes mix_ce (loss_mixcls) and logs it but leaves it out of the summed loss, so there
  the self-teacher gets no gradient and teaches with its random weights; main_mixskd_imagenet.py (same loss code
  otherwise) adds it to the loss. Default weight 1 (the ImageNet script's sum, the only one that trains the
  self-teacher); `mix_ce_weight: 0` is the CIFAR script as written (the self-teacher then stays frozen).
- The official discriminators sit in a plain Python list, so they are neither registered nor optimised: they stay
  at their random init and the network minimises their BCE (no gradient reversal). `discriminator: frozen`
  (default) does exactly that (fixed random weights: parameters without gradients, kept in checkpoints);
  `trained` also trains them on the same BCE, as registering them would have.
- As official: logits (not probabilities) are interpolated; the originals' maps and logits are not detached in
  the interpolations; n originals and n mixtures share one forward (BN statistics over 2n).
- Branches (`block: backbone`, default): the later stages rebuilt from the backbone's own blocks with its block
  counts and widths (stage_branch.backbone_stages, as DKS's), and its classifier type (an FC; DTSKD's VGG an MLP
  like its classifier): the official construction, with the official parameter counts, for ResNets, SE-ResNets,
  DTSKD's ResNeXt/VGG/ShuffleNetV2; the same rule for WRN and torchvision ResNets. A backbone whose blocks are not
  known (the CRD zoo's VGG/ShuffleNets, MobileNets) gets one basic residual block per later stage; `block: basic`
  forces basic residual blocks (with the backbone's block counts where known).
The logits returned (the engine's train top-1) are the backbone's on the un-mixed images.
Branches, self-teacher and discriminators are training-only: `student` alone is exported.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from raykd.errors import ConfigError
from raykd.losses.mixup_distill import (discriminator_bce, feature_mse, mix, mixup_cross_entropy,
                                        mutual_kd_loss)
from raykd.losses.kd import kd_loss
from raykd.methods.base import Distiller, MethodConfig, ce_loss, probe
from raykd.methods.mixskd_modules import SelfTeacher, build_branches, discriminator
from raykd.methods.registry import register_method
from raykd.methods.stage_branch import stage_shapes
from raykd.models.init import pooled
from raykd.models.video import frame_model


class MixSKDConfig(MethodConfig):
    name: Literal["mixskd"] = "mixskd"
    mixup_alpha: float = Field(0.4, ge=0, description="lam ~ Beta(alpha, alpha); 0 fixes lam at 0.5 (official)")
    temperature: float = Field(3.0, gt=0, description="the official kd_T of every KL term")
    mix_ce_weight: float = Field(1.0, ge=0, description="mixup CE of heads and self-teacher (0: the CIFAR script)")
    logit_weight: float = Field(1.0, ge=0, description="branches: mixed image <-> interpolated logits")
    self_teacher_weight: float = Field(1.0, ge=0, description="self-teacher -> backbone (0: no self-teacher)")
    feature_weight: float = Field(1.0, ge=0, description="MSE mixed-image vs interpolated last maps")
    adversarial_weight: float = Field(1.0, ge=0, description="discriminator BCE (0: no discriminators)")
    discriminator: Literal["frozen", "trained"] = "frozen"
    discriminator_hidden: int = Field(128, gt=0)
    block: Literal["backbone", "basic"] = Field("backbone", description="branch blocks: the backbone's own, or basic")


@register_method
class MixSKD(Distiller):
    name = "mixskd"
    Config = MixSKDConfig
    summary = "self-KD from mixup: branches, self-teacher and maps of mixed vs interpolated images"
    source = ("MixSKD official code (winycg/Self-KD-Lib): main_mixskd_cifar.py (mixup alpha 0.4, kd_T 3, every "
              "weight 1), models/resnet_mixskd.py, methods/adversarial.py")

    @classmethod
    def check_models(cls, cfg, student, teacher):
        model = frame_model(student)
        if len(model.stage_channels) < 2:
            return f"mixskd needs a backbone of at least 2 stages; this one has {len(model.stage_channels)}."
        return None

    def setup(self, ctx):
        cfg, model = self.cfg, frame_model(self.student)
        problem = self.check_models(cfg, self.student, None)
        if problem:
            raise ConfigError(f"method: {problem}")
        out = probe(self.student, ctx.image_shape)
        shapes = stage_shapes(out)
        self.branches = build_branches(model, shapes, ctx.num_classes, cfg.block)
        with torch.no_grad():
            self.branches.eval()
            maps = [b(f)[1] for b, f in zip(self.branches, out.features[:-1])] + [out.features[-1]]
            self.branches.train()
        if any(m.shape != maps[-1].shape for m in maps):
            raise ConfigError(f"method: mixskd's branches end in maps {[tuple(m.shape[1:]) for m in maps[:-1]]}, "
                              f"not the last stage's {tuple(maps[-1].shape[1:])}, so they cannot be fused.")
        c = shapes[-1][0]
        self.self_teacher = SelfTeacher(c, len(maps), ctx.num_classes) if cfg.self_teacher_weight > 0 else None
        if self.self_teacher is not None and cfg.mix_ce_weight == 0:
            self.self_teacher.requires_grad_(False)  # the CIFAR script: nothing trains it
        self.discriminators = None
        if cfg.adversarial_weight > 0:
            self.discriminators = nn.ModuleList(discriminator(c, cfg.discriminator_hidden) for _ in maps)
            self.discriminators.requires_grad_(cfg.discriminator == "trained")

    def draw(self, n: int, device) -> tuple[float, torch.Tensor]:
        """lam and the pairing permutation, from torch's CPU generator (no device sync; checkpointed RNG)."""
        a = self.cfg.mixup_alpha
        lam = float(torch.distributions.Beta(torch.tensor(a), torch.tensor(a)).sample()) if a > 0 else 0.5
        return lam, torch.randperm(n).to(device, non_blocking=True)

    def forward(self, batch):
        cfg, x, T = self.cfg, batch["image"], self.cfg.temperature
        n = x.shape[0]
        lam, perm = self.draw(n, x.device)
        out = self.student(torch.cat([x, mix(x, perm, lam)]))
        heads = [b(f) for b, f in zip(self.branches, out.features[:-1])] + [(out.logits, out.features[-1])]
        orig, mixed = [z[:n] for z, _ in heads], [z[n:] for z, _ in heads]
        interp_maps, mixed_maps = [mix(m[:n], perm, lam) for _, m in heads], [m[n:] for _, m in heads]
        target = batch.get("target", batch["label"])
        losses = {"ce": sum(ce_loss(z, batch) for z in orig)}
        t_interp = t_mixed = None
        if self.self_teacher is not None:
            t_interp, t_mixed = self.self_teacher(interp_maps), self.self_teacher(mixed_maps)
        if cfg.mix_ce_weight > 0:
            extra = [t_interp, t_mixed] if t_interp is not None else []
            losses["mix_ce"] = cfg.mix_ce_weight * sum(mixup_cross_entropy(z, target, perm, lam)
                                                       for z in mixed + extra)
        if cfg.logit_weight > 0:
            losses["logit"] = cfg.logit_weight * sum(mutual_kd_loss(mix(z, perm, lam), zm, T)
                                                     for z, zm in zip(orig[:-1], mixed[:-1]))
        if t_interp is not None:
            backbone_interp = mix(orig[-1], perm, lam)
            losses["self_teacher"] = cfg.self_teacher_weight * (kd_loss(backbone_interp, t_mixed.detach(), T)
                                                                + kd_loss(mixed[-1], t_interp.detach(), T))
        if cfg.feature_weight > 0:
            losses["feature"] = cfg.feature_weight * sum(feature_mse(a, b) for a, b in zip(interp_maps, mixed_maps))
        if self.discriminators is not None:
            losses["adversarial"] = cfg.adversarial_weight * sum(
                discriminator_bce(d(pooled(a)), d(pooled(b)))
                for d, a, b in zip(self.discriminators, interp_maps, mixed_maps))
        return orig[-1], losses

    def eval_heads(self, out):
        heads = {f"branch{i}": b(f) for i, (b, f) in enumerate(zip(self.branches, out.features[:-1]), start=1)}
        if self.self_teacher is not None:
            maps = [m for _, m in heads.values()] + [out.features[-1]]
            return {**{k: z for k, (z, _) in heads.items()}, "self_teacher": self.self_teacher(maps)}
        return {k: z for k, (z, _) in heads.items()}
