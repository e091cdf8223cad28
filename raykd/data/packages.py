"""SKD's weakly supervised video packages (section III-A, Fig. 4).

From a labelled image set, each image becomes a package of F frames: the image itself and F-1
frames from a frame generator (random search over augmentations by default). A pretrained
teacher scores every frame; frames whose uncertainty (normalised entropy) is at most `threshold`
keep the original label, the others take the teacher's soft label. The package label is the
certainty-weighted (1 - entropy) mean of its frame labels. Val/test packages are built the same
way and keep their true labels: students are judged on ground truth.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from raykd.strict import StrictModel
from raykd.data.frame_generators import frame_generator
from raykd.data.image_set import DataBundle, ImageSet, channel_stats


class PackagesConfig(StrictModel):

    name: Literal["packages"] = "packages"
    frames: int = Field(8, ge=1)
    threshold: float = Field(0.5, ge=0, le=1)  # normalised entropy at or below which a frame keeps its label
    candidates: int = Field(1, ge=1)  # random search: draws per frame; the one the teacher is surest of is kept
    generator: str = "random_augment"
    generator_kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    batch_size: int = Field(256, gt=0)


def normalized_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy over the last dim divided by log(classes): 0 = certain, 1 = uniform."""
    p = probs.clamp_min(1e-12)
    return -(probs * p.log()).sum(-1) / math.log(probs.shape[-1])


def frame_targets(probs: torch.Tensor, labels: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """probs [N, F, C], labels [N] -> (per-frame targets [N, F, C], pseudo-labelled mask [N, F]):
    a frame the teacher is sure of (entropy <= threshold) keeps the one-hot original label."""
    entropy = normalized_entropy(probs)
    pseudo = entropy > threshold
    onehot = F.one_hot(labels, probs.shape[-1]).to(probs.dtype)[:, None, :].expand_as(probs)
    return torch.where(pseudo[..., None], probs, onehot), pseudo


def package_targets(targets: torch.Tensor, entropy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Certainty-weighted mean of frame targets: weights (1 - entropy) normalised to sum to one
    per package (uniform if every frame is maximally uncertain). Returns (targets [N, C], weights [N, F])."""
    w = (1 - entropy).clamp_min(0)
    total = w.sum(dim=1, keepdim=True)
    w = torch.where(total > 0, w / total.clamp_min(1e-12), torch.full_like(w, 1 / w.shape[1]))
    return (w[..., None] * targets).sum(dim=1), w


@torch.no_grad()
def _probs(teacher, frames: torch.Tensor, mean, std, device, batch_size: int) -> torch.Tensor:
    """Teacher softmax for uint8 frames [M, C, H, W], fed (and normalised as the teacher was
    trained) by the same device loader evaluation uses."""
    from raykd.data.loader import DeviceLoader

    loader = DeviceLoader(ImageSet(frames, torch.zeros(len(frames), dtype=torch.long)), batch_size, device,
                          tuple(mean), tuple(std), train=False)
    return torch.cat([teacher(b["image"]).logits.float().softmax(dim=1).cpu() for b in loader])


def make_clips(images: torch.Tensor, cfg: PackagesConfig, g: torch.Generator, score=None) -> torch.Tensor:
    """uint8 [N, F, C, H, W]: frame 0 is the image, the rest generated; with `score` (frames ->
    probs) and candidates > 1, each frame is the candidate of lowest teacher entropy."""
    gen = frame_generator(cfg.generator, **cfg.generator_kwargs)
    frames = [images]
    for _ in range(cfg.frames - 1):
        cands = [gen(images, g) for _ in range(cfg.candidates)]
        if len(cands) == 1 or score is None:
            frames.append(cands[0])
            continue
        ent = torch.stack([normalized_entropy(score(c)) for c in cands])  # [K, N]
        best = ent.argmin(dim=0)
        stacked = torch.stack(cands)
        frames.append(stacked[best, torch.arange(len(images))])
    return torch.stack(frames, dim=1)


def build_packages(data: DataBundle, teacher, teacher_mean, teacher_std, cfg: PackagesConfig, device,
                   log=print) -> tuple[DataBundle, dict[str, float]]:
    """The package dataset and its label statistics."""
    if data.is_video:
        raise ValueError("video packages are built from an image dataset, but the data are clips already")
    score = lambda frames: _probs(teacher, frames, teacher_mean, teacher_std, device, cfg.batch_size)  # noqa: E731
    g = torch.Generator().manual_seed(cfg.seed)
    clips = make_clips(data.train.images, cfg, g, score if cfg.candidates > 1 else None)
    n, f = clips.shape[:2]
    probs = score(clips.flatten(0, 1)).view(n, f, -1)
    targets, pseudo = frame_targets(probs, data.train.labels, cfg.threshold)
    entropy = normalized_entropy(probs)
    package, _ = package_targets(targets, entropy)
    stats = {
        "packages/train": float(n), "packages/frames": float(f),
        "packages/agreement": 100.0 * (package.argmax(1) == data.train.labels).float().mean().item(),
        "packages/mean_entropy": entropy.mean().item(),
        "packages/pseudo_share": 100.0 * pseudo.float().mean().item(),
        "packages/teacher_frame_top1": 100.0 * (probs.argmax(2) == data.train.labels[:, None]).float().mean().item(),
    }
    log(f"packages: {n} x {f} frames; package label agrees with ground truth on {stats['packages/agreement']:.1f}%, "
        f"{stats['packages/pseudo_share']:.1f}% of frames pseudo-labelled, mean entropy {stats['packages/mean_entropy']:.3f}")
    train = ImageSet(clips, data.train.labels, package)
    val = ImageSet(make_clips(data.val.images, cfg, g), data.val.labels)
    test = ImageSet(make_clips(data.test.images, cfg, g), data.test.labels)
    mean, std = channel_stats(clips)
    return DataBundle(train, val, test, data.num_classes, mean, std, data.class_names), stats


def save_packages(path, bundle: DataBundle, stats: dict[str, float]) -> None:
    from raykd.engine.checkpoint import save_atomic

    sets = {k: {"images": s.images, "labels": s.labels, "targets": s.targets}
            for k, s in (("train", bundle.train), ("val", bundle.val), ("test", bundle.test))}
    save_atomic({"kind": "raykd-packages", **sets, "num_classes": bundle.num_classes, "mean": list(bundle.mean),
                 "std": list(bundle.std), "class_names": bundle.class_names, "stats": stats}, path)


def load_packages(path) -> DataBundle:
    from raykd.engine.checkpoint import load
    from raykd.errors import DataError

    blob = load(path)
    if not isinstance(blob, dict) or blob.get("kind") != "raykd-packages":
        raise DataError(f"'{path}' is not a raykd package set.")
    sets = [ImageSet(blob[k]["images"], blob[k]["labels"], blob[k]["targets"]) for k in ("train", "val", "test")]
    return DataBundle(*sets, blob["num_classes"], tuple(blob["mean"]), tuple(blob["std"]), blob["class_names"])
