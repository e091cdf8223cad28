"""Video data: synthetic digits clips, clip batches, SKD's package labels, and the UCF101 loader."""

import pytest
import torch

from raykd.config import DataConfig
from raykd.data import DeviceLoader, ImageSet, load_data
from raykd.data.digits_video import make_clip, noisy_labels
from raykd.data.packages import (PackagesConfig, build_packages, frame_targets, normalized_entropy,
                                 package_targets)
from raykd.models.output import ModelOutput


def test_synthetic_clips_are_a_pure_function_of_seed_and_index():
    img = (torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    a, b = make_clip(img, 6, seed=1, index=5), make_clip(img, 6, seed=1, index=5)
    assert a.shape == (6, 3, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, make_clip(img, 6, seed=1, index=6))
    assert not torch.equal(a, make_clip(img, 6, seed=2, index=5))
    assert not torch.equal(a[0], a[-1]), "the camera moves and the light changes over the clip"
    cfg = DataConfig(name="digits_video", frames=2, label_noise=0.3)
    d1, d2 = load_data(cfg), load_data(cfg)
    assert d1.is_video and d1.train.images.shape[1:] == (2, 3, 32, 32)
    assert torch.equal(d1.train.images, d2.train.images) and torch.equal(d1.train.labels, d2.train.labels)
    clean = load_data(DataConfig(name="digits_video", frames=2))
    flipped = (clean.train.labels != d1.train.labels).float().mean().item()
    assert 0.25 < flipped < 0.35, "label noise on the training split"
    assert torch.equal(clean.test.labels, d1.test.labels), "never on the test split"
    labels = torch.arange(10).repeat(100)
    assert (noisy_labels(labels, 0.5, 10, 0) != labels).float().mean().item() == pytest.approx(0.5, abs=0.06)


def test_clip_batches_crop_every_frame_of_a_clip_alike():
    frame = (torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    clips = frame.expand(6, 4, 3, 8, 8).contiguous()  # every frame identical
    loader = DeviceLoader(ImageSet(clips, torch.zeros(6, dtype=torch.long), torch.full((6, 10), 0.1)), 3, "cpu",
                          (0.5,) * 3, (0.25,) * 3, train=True, crop_padding=2, flip=True)
    batch = next(iter(loader))
    x = batch["image"]
    assert x.shape == (3, 4, 3, 8, 8)
    assert torch.equal(x[:, :1].expand_as(x), x), "one crop and flip per clip"
    assert batch["target"].shape == (3, 10), "soft package labels travel with the batch"


def test_confident_frames_keep_ground_truth_and_uncertain_ones_get_soft_labels():
    labels = torch.tensor([2, 0])
    confident = torch.full((3,), 0.001)
    confident[1] = 0.998  # teacher says class 1 with certainty...
    uncertain = torch.tensor([0.4, 0.3, 0.3])
    probs = torch.stack([torch.stack([confident, uncertain]), torch.stack([uncertain, uncertain])])  # [2, 2, 3]
    targets, pseudo = frame_targets(probs, labels, threshold=0.5)
    assert pseudo.tolist() == [[False, True], [True, True]]
    assert torch.equal(targets[0, 0], torch.tensor([0.0, 0.0, 1.0])), "...but a confident frame keeps its label"
    assert torch.allclose(targets[0, 1], uncertain) and torch.allclose(targets[1], probs[1])
    entropy = normalized_entropy(probs)
    package, weights = package_targets(targets, entropy)
    assert torch.allclose(weights.sum(1), torch.ones(2))
    assert weights[0, 0] > weights[0, 1], "the certain frame weighs more"
    assert torch.allclose(package.sum(1), torch.ones(2))
    _, uniform = package_targets(targets, torch.ones(2, 2))
    assert torch.allclose(uniform, torch.full((2, 2), 0.5)), "all frames maximally uncertain: equal weights"


class _Teacher(torch.nn.Module):
    """Predicts the true class (read from pixel 0) with a chosen confidence."""

    def __init__(self, sharpness):
        super().__init__()
        self.sharpness = sharpness

    def forward(self, x):
        cls = (x[:, 0, 0, 0] > 0).long()
        return ModelOutput(torch.nn.functional.one_hot(cls, 2).float() * self.sharpness, ())


def _image_bundle():
    from raykd.data.image_set import DataBundle

    imgs = torch.zeros(8, 3, 6, 6, dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 4)
    imgs[labels == 1] = 255
    s = ImageSet(imgs, labels)
    return DataBundle(s, s, s, 2, (0.5,) * 3, (0.5,) * 3)


@pytest.mark.parametrize("sharpness,pseudo_share", [(20.0, 0.0), (0.01, 100.0)])
def test_packages_from_a_confident_or_an_uncertain_teacher(sharpness, pseudo_share):
    cfg = PackagesConfig(frames=3, threshold=0.5, candidates=2, generator_kwargs={"rotate": 0, "scale": 0})
    bundle, stats = build_packages(_image_bundle(), _Teacher(sharpness), (0.5,) * 3, (0.5,) * 3, cfg, "cpu",
                                   log=lambda *_: None)
    assert bundle.train.images.shape == (8, 3, 3, 6, 6) and bundle.test.targets is None
    assert stats["packages/pseudo_share"] == pseudo_share
    assert stats["packages/agreement"] == 100.0
    if sharpness > 1:
        assert torch.equal(bundle.train.targets, torch.nn.functional.one_hot(bundle.train.labels, 2).float())
    else:
        assert torch.allclose(bundle.train.targets, torch.full((8, 2), 0.5), atol=0.01), "soft labels"


def _write_ucf(root, classes, per_class):
    pytest.importorskip("av")
    from media import write_ucf

    write_ucf(root, classes, per_class)


def test_ucf101_loader_decodes_samples_and_caches_encoded_clips(tmp_path):
    root = tmp_path / "UCF-101"
    _write_ucf(root, ["ApplyEyeMakeup", "Basketball", "Surfing"], per_class=3)
    cfg = DataConfig(name="ucf101", root=str(root), frames=4, image_size=16, val_fraction=0.0)
    data = load_data(cfg, tmp_path / "cache")
    assert data.num_classes == 3 and data.class_names == ["ApplyEyeMakeup", "Basketball", "Surfing"]
    assert data.train.images.shape == (6, 4, 3, 16, 16) and data.test.images.shape == (3, 4, 3, 16, 16)
    assert data.train.labels.tolist() == [0, 0, 1, 1, 2, 2] and data.test.labels.tolist() == [0, 1, 2]
    clip = data.test.images[1].float()  # Basketball: green, brightening over its 8 frames
    assert clip[:, 1].mean() > 3 * clip[:, 0].mean() and clip[:, 1].mean() > 3 * clip[:, 2].mean()
    per_frame = clip[:, 1].mean(dim=(1, 2))
    assert per_frame[0] == pytest.approx(40, abs=12) and per_frame[-1] == pytest.approx(40 + 25 * 7, abs=12)
    assert torch.all(per_frame[1:] > per_frame[:-1]), "frames sampled in order, first to last"
    assert len(list((tmp_path / "cache").glob("ucf101-*.pt"))) == 1
    (root / "Surfing" / "v_Surfing_g01_c01.avi").unlink()  # now only the cache can answer
    assert torch.equal(load_data(cfg, tmp_path / "cache").train.images, data.train.images)


def test_ucf101_layout_errors_name_the_file(tmp_path):
    from raykd.data import check_data
    from raykd.errors import DataError

    (tmp_path / "UCF-101").mkdir()
    with pytest.raises(DataError, match="no ucfTrainTestlist/classInd.txt"):
        check_data(DataConfig(name="ucf101", root=str(tmp_path / "UCF-101")))
    _write_ucf(tmp_path / "u", ["A", "B"], per_class=2)
    with pytest.raises(DataError, match="fold 2: .*trainlist02.txt' not found"):
        check_data(DataConfig(name="ucf101", root=str(tmp_path / "u"), fold=2))
