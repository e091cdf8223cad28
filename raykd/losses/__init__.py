"""Pure loss functions: tensors in, scalar (batch-mean) tensor out, no state or config."""

from raykd.losses.attention import at_loss, attention_map
from raykd.losses.boundary import ab_loss
from raykd.losses.channel_correlation import ccs_inter_loss, ccs_intra_loss
from raykd.losses.channel import channel_energy, df_loss
from raykd.losses.contrastive import crd_nce_loss
from raykd.losses.dkd import dkd_loss
from raykd.losses.dual_teacher import historical_loss, history_targets, kl_to_target, structural_loss
from raykd.losses.feature_refine import refined_attention_loss, self_teacher_kd_loss
from raykd.losses.fsp import fsp_loss, fsp_matrix
from raykd.losses.hint import fitnet_loss
from raykd.losses.hybrid_attention import channel_attention_loss, spatial_attention_loss
from raykd.losses.kd import kd_loss
from raykd.losses.mixup_distill import discriminator_bce, feature_mse, mix, mixup_cross_entropy, mutual_kd_loss
from raykd.losses.multi_stage import channel_weights, fd_loss, review_loss, review_pairs, scd_loss, srd_loss, stage_kl
from raykd.losses.review import hcl_loss
from raykd.losses.similarity import similarity_matrix, sp_loss
from raykd.losses.soft_target import pskd_targets, soft_cross_entropy
from raykd.losses.synergy import synergy_loss, synergy_pairs
from raykd.losses.task_oriented import orthogonal_loss, task_feature_distance, tofd_kd_loss
from raykd.losses.variational import vid_loss

__all__ = [
    "ab_loss", "at_loss", "ccs_inter_loss", "ccs_intra_loss", "channel_attention_loss", "attention_map", "channel_energy", "crd_nce_loss", "df_loss", "dkd_loss", "fitnet_loss", "fsp_loss", "fsp_matrix", "hcl_loss",
    "historical_loss", "history_targets", "kd_loss", "kl_to_target", "discriminator_bce", "feature_mse", "mix", "mixup_cross_entropy", "mutual_kd_loss", "channel_weights", "fd_loss", "review_loss", "review_pairs", "scd_loss", "srd_loss", "stage_kl", "pskd_targets", "refined_attention_loss", "self_teacher_kd_loss", "structural_loss", "similarity_matrix", "soft_cross_entropy", "sp_loss", "spatial_attention_loss", "synergy_loss", "synergy_pairs", "orthogonal_loss", "task_feature_distance", "tofd_kd_loss", "vid_loss",
]
