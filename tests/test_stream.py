"""The streaming data path in one process (no Ray, no trainer): batch order across ranks, the streamed
image and clip loaders on generated folders, corrupt files, `stream: auto`, and the main process's memory."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import re
import signal
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from media import COLOURS, write_jpeg_tree, write_ucf
from raykd.config import DataConfig
from raykd.data import FileSet, ImageSet, load_data, make_loader
from raykd.data.stream_choice import IMAGENET_MEAN, IMAGENET_STD, should_stream
from raykd.data.stream_dataset import ViewSpec
from raykd.data.stream_loader import StreamLoader
from raykd.data.stream_order import eval_batches, train_batches
from raykd.data.stream_transforms import clip_frame_indices, resized_crop_box
from raykd.errors import DataError

SIZE = 32  # crop of the streamed image tests
COMBOS = [(37, 4, 2), (64, 8, 2), (9, 4, 2), (100, 16, 3), (5, 4, 2), (11, 3, 1)]


# ---------------------------------------------------------------- helpers


@contextlib.contextmanager
def deadline(seconds: int):
    """Fails a block that hangs (a dead loader worker must surface as an error, not a stuck epoch)."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds}s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def image_cfg(root: Path, **kw) -> DataConfig:
    opts = dict(name="image_folder", root=str(root), stream=True, image_size=SIZE, loader_workers=2)
    return DataConfig(**{**opts, **kw})


def loader_for(split, cfg: DataConfig, *, train: bool = True, batch: int = 4, **kw):
    return make_loader(split, cfg, batch, train=train, device="cpu", mean=IMAGENET_MEAN, std=IMAGENET_STD, **kw)


def run_epoch(loader, epoch: int) -> list[dict]:
    loader.set_epoch(epoch)
    with deadline(60):
        return list(loader)


def same_batches(a: list[dict], b: list[dict]) -> bool:
    keys = ("image", "label", "index")
    return len(a) == len(b) and all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in keys)


def indices(batches: list[dict]) -> list[int]:
    return torch.cat([b["index"] for b in batches]).tolist()


def by_index(batches: list[dict], key: str = "image") -> dict[int, torch.Tensor]:
    return {i: x for b in batches for i, x in zip(b["index"].tolist(), b[key])}


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    """Back to [0, 1] pixel values (channels at dim -3)."""
    shape = (3, 1, 1)
    return x * torch.tensor(IMAGENET_STD).view(shape) + torch.tensor(IMAGENET_MEAN).view(shape)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W] as the loaders hand it to the model."""
    return (x.float() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def normalised_colour(c: int) -> torch.Tensor:
    return (torch.tensor(COLOURS[c]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)


def class_of_file(files: FileSet, i: int, names: list[str]) -> int:
    return names.index(Path(files.path(i)).parent.name)


def fake_files(n: int) -> FileSet:
    """A FileSet whose files are never opened (for the loader's step count)."""
    return FileSet("/nonexistent", np.array([b"x.jpg"] * n), torch.zeros(n, dtype=torch.int64), "image", (3, 8, 8))


def resident_data_bytes() -> int:
    """The process's resident anonymous and shared-memory pages (where batches live), after handing glibc's
    free heap pages back: freed batches may otherwise stay resident for a while (CPU runs plateau some
    tens of MB up, at random), which is the allocator's and not the loader's. Code pages of the libraries
    the first batches touch are file-backed and left out."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return sum(int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssShmem"))
    except (OSError, KeyError):
        pass
    psutil = pytest.importorskip("psutil")
    info = psutil.Process().memory_info()
    return info.rss - getattr(info, "shared", 0)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    write_jpeg_tree(root, classes=3, per_class={"train": 8, "val": 2, "test": 3})
    return root


@pytest.fixture(scope="module")
def bundle(tree):
    return load_data(image_cfg(tree))


@pytest.fixture
def corrupt_tree(tmp_path) -> tuple[Path, list[Path]]:
    """A folder whose train split holds a truncated JPEG (class 0) and a junk `.jpg` (class 1); read it with
    val_fraction 0, so that every file stays in train."""
    files = write_jpeg_tree(tmp_path, classes=3, per_class={"train": 6, "test": 2})
    good = files["train"][0].read_bytes()
    truncated = tmp_path / "train" / "n00000000" / "zz_truncated.JPEG"
    truncated.write_bytes(good[: len(good) // 2])
    junk = tmp_path / "train" / "n00000001" / "zz_junk.jpg"
    junk.write_bytes(b"this is not an image " * 20)
    return tmp_path, [truncated, junk]


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory) -> Path:
    pytest.importorskip("av")
    root = tmp_path_factory.mktemp("ucf")
    write_ucf(root, ["Archery", "Bowling", "Diving"], per_class=3)  # train: 6 clips of 6-7 frames, test: 3 of 8
    return root


def ucf_cfg(root: Path, **kw) -> DataConfig:
    opts = dict(name="ucf101", root=str(root), frames=4, image_size=16, stream=True, val_fraction=0.0,
                loader_workers=1)
    return DataConfig(**{**opts, **kw})


# ---------------------------------------------------------------- 1. batch order


@pytest.mark.parametrize("n,batch,world", COMBOS)
def test_train_batches_read_every_index_once_in_equal_steps(n, batch, world):
    per_rank = [train_batches(n, batch, seed=3, epoch=1, rank=r, world_size=world) for r in range(world)]
    assert len({len(steps) for steps in per_rank}) == 1, "every rank takes the same number of steps (DDP)"
    seen = torch.cat([torch.cat(steps) for steps in per_rank]).tolist()
    assert sorted(seen) == list(range(n)), "every index exactly once an epoch, across ranks"
    sizes = [len(b) for steps in per_rank for b in steps]
    assert min(sizes) >= 2, "no rank gets a batch BatchNorm cannot train on"
    for steps in per_rank:
        assert all(len(b) == batch for b in steps[:-1]), "only the last step may differ"
        assert len(steps[-1]) < 2 * batch
    full, tail = divmod(n, batch * world)
    assert len(per_rank[0]) == max(1, full + (tail >= 2 * world))


@pytest.mark.parametrize("n,batch,world", COMBOS)
def test_ranks_deal_out_one_shared_permutation(n, batch, world):
    per_rank = [train_batches(n, batch, seed=5, epoch=2, rank=r, world_size=world) for r in range(world)]
    dealt = []
    for step in zip(*per_rank):
        glob = torch.empty(sum(len(b) for b in step), dtype=torch.int64)
        for r, b in enumerate(step):
            glob[r::world] = b
        dealt.append(glob)
    whole = train_batches(n, n, seed=5, epoch=2)  # one batch on one rank: the epoch's permutation itself
    assert len(whole) == 1 and torch.equal(torch.cat(dealt), whole[0])


@pytest.mark.parametrize("n,batch,world", COMBOS)
def test_train_order_is_a_pure_function_of_seed_epoch_rank(n, batch, world):
    for rank in range(world):
        a = train_batches(n, batch, seed=1, epoch=4, rank=rank, world_size=world)
        b = train_batches(n, batch, seed=1, epoch=4, rank=rank, world_size=world)
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
        assert not torch.equal(torch.cat(a), torch.cat(train_batches(n, batch, 1, 5, rank, world))), "new epoch"
        assert not torch.equal(torch.cat(a), torch.cat(train_batches(n, batch, 2, 4, rank, world))), "new seed"


@pytest.mark.parametrize("n,batch,world", COMBOS + [(10, 4, 3)])
def test_stream_loader_length_is_the_number_of_batches(n, batch, world):
    view = ViewSpec(8, (0.08, 1.0), True, 9)
    for rank in range(world):
        common = dict(device="cpu", mean=(0.5,) * 3, std=(0.25,) * 3, view=view, workers=0, rank=rank,
                      world_size=world)
        train = StreamLoader(fake_files(n), batch, train=True, **common)
        assert len(train) == len(train_batches(n, batch, 0, 0, rank, world))
        evaluate = StreamLoader(fake_files(n), batch, train=False, **common)
        assert len(evaluate) == len(eval_batches(n, batch, rank, world))


@pytest.mark.parametrize("n,batch,world", COMBOS + [(10, 4, 3)])
def test_eval_batches_cover_the_split_once_in_order(n, batch, world):
    per_rank = [eval_batches(n, batch, r, world) for r in range(world)]
    for r, steps in enumerate(per_rank):
        assert torch.equal(torch.cat(steps), torch.arange(r, n, world)), "rank r: every world-th sample, in order"
        assert all(len(b) == batch for b in steps[:-1]) and 0 < len(steps[-1]) <= batch
    assert sorted(torch.cat([torch.cat(s) for s in per_rank]).tolist()) == list(range(n))


# ---------------------------------------------------------------- 2. streamed image folder


def test_load_data_streams_the_folder_as_file_sets(bundle):
    assert isinstance(bundle.train, FileSet) and isinstance(bundle.val, FileSet) and isinstance(bundle.test, FileSet)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (24, 6, 9)
    assert bundle.sample_shape == (3, SIZE, SIZE) and bundle.streamed and bundle.num_classes == 3
    assert (bundle.mean, bundle.std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_streamed_batches_carry_labels_of_their_files_and_normalised_colours(tree, bundle):
    batches = run_epoch(loader_for(bundle.train, image_cfg(tree)), 0)
    assert len(batches) == 6
    for b in batches:
        assert b["image"].shape == (len(b["index"]), 3, SIZE, SIZE) and b["image"].dtype == torch.float32
        assert b["label"].dtype == torch.int64 and b["index"].dtype == torch.int64
        files_class = [class_of_file(bundle.train, i, bundle.class_names) for i in b["index"].tolist()]
        assert b["label"].tolist() == files_class
        for x, c in zip(b["image"], b["label"].tolist()):
            mean = x.mean(dim=(1, 2))
            assert torch.allclose(mean, normalised_colour(c), atol=0.15), (mean, normalised_colour(c))
    assert sorted(indices(batches)) == list(range(24)), "every index once an epoch"


def test_same_seed_and_epoch_give_the_same_batches_whatever_the_workers(tree, bundle):
    two = loader_for(bundle.train, image_cfg(tree, loader_workers=2), seed=7)
    first_epoch = run_epoch(two, 0)
    reference = run_epoch(two, 1)
    for workers in (0, 1, 2):  # a fresh loader set to epoch 1 is what a resumed run builds
        fresh = loader_for(bundle.train, image_cfg(tree, loader_workers=workers), seed=7)
        assert same_batches(run_epoch(fresh, 1), reference), f"{workers} loader workers"
    assert same_batches(run_epoch(two, 1), reference), "the same loader, epoch 1 again"
    assert indices(first_epoch) != indices(reference), "a new order each epoch"
    before, after = by_index(first_epoch), by_index(reference)
    assert all(not torch.equal(before[i], after[i]) for i in range(24)), "a new crop and flip each epoch"
    other_seed = run_epoch(loader_for(bundle.train, image_cfg(tree, loader_workers=0), seed=8), 1)
    assert indices(other_seed) != indices(reference)


def test_a_dropped_loader_is_freed_at_once(tree, bundle):
    """No reference cycle: otherwise the garbage collector frees it later, after closing its workers' queues,
    and each persistent worker stalls its shutdown for DataLoader's 5 s join timeout."""
    loader = loader_for(bundle.train, image_cfg(tree, loader_workers=2))
    run_epoch(loader, 0)
    workers = list(loader.loader._iterator._workers)
    assert len(workers) == 2 and all(w.is_alive() for w in workers), "train workers persist across epochs"
    alive = weakref.ref(loader)
    gc.disable()
    try:
        del loader
        assert alive() is None
    finally:
        gc.enable()
    for w in workers:
        w.join(timeout=30)
    assert not any(w.is_alive() for w in workers)


def test_eval_view_is_deterministic_resize_then_centre_crop(tree, bundle):
    from torchvision import transforms
    from torchvision.io import ImageReadMode, decode_image

    loader = loader_for(bundle.val, image_cfg(tree), train=False, batch=4)
    a, b = run_epoch(loader, 0), run_epoch(loader, 3)
    assert same_batches(a, b), "eval does not depend on the epoch"
    assert indices(a) == list(range(6)), "eval reads the split in order"
    i = 4
    raw = decode_image(bundle.val.path(i), mode=ImageReadMode.RGB)
    short_side = 37  # the default eval resize: round(32 / 0.875)
    expected = normalise(transforms.CenterCrop(SIZE)(transforms.Resize(short_side, antialias=True)(raw)))
    level = 1 / 255 / min(IMAGENET_STD)  # torchvision's two resize paths may round a pixel one level apart
    assert (by_index(a)[i] - expected).abs().max() <= level + 1e-6
    wider = loader_for(bundle.val, image_cfg(tree, eval_resize=64), train=False)
    assert (by_index(run_epoch(wider, 0))[i] - expected).abs().max() > 5 * level, "eval_resize is used"


# ---------------------------------------------------------------- 3. transforms


@pytest.mark.parametrize("h,w,scale", [(200, 300, (0.08, 1.0)), (300, 200, (0.2, 0.5)), (64, 64, (0.5, 1.0)),
                                       (37, 500, (0.08, 0.3))])
def test_resized_crop_box_stays_inside_and_covers_its_area_share(h, w, scale):
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        top, left, ch, cw = resized_crop_box(h, w, scale, g)
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch > 0 and cw > 0
        share = ch * cw / (h * w)
        slack = (ch + cw + 1) / (h * w)  # rounding the sides to whole pixels
        fallback = (top, left) == ((h - ch) // 2, (w - cw) // 2) and max(ch / h, cw / w) == 1
        assert fallback or scale[0] - slack <= share <= scale[1] + slack, (top, left, ch, cw)
        if not fallback:
            assert 3 / 4 - 0.1 <= cw / ch <= 4 / 3 + 0.1


@pytest.mark.parametrize("h,w,box", [(10, 1000, (0, 493, 10, 13)), (1000, 10, (493, 0, 13, 10))])
def test_resized_crop_box_falls_back_to_a_centred_crop(h, w, box):
    g = torch.Generator().manual_seed(0)
    for _ in range(5):  # a 90% share of a 10 x 1000 strip has no 3/4..4/3 rectangle inside it
        assert resized_crop_box(h, w, (0.9, 1.0), g) == box


def test_clip_frame_indices_sample_one_frame_per_segment():
    g = torch.Generator().manual_seed(0)
    draws = set()
    for n, frames in [(40, 8), (10, 4), (7, 4)]:
        seg = n / frames
        for _ in range(50):
            pick = clip_frame_indices(n, frames, True, g)
            assert len(pick) == frames
            for i, p in enumerate(pick):
                assert math.floor(seg * i) <= p <= min(n - 1, math.ceil(seg * (i + 1)) - 1), (n, frames, pick)
            draws.add((n, tuple(pick)))
    assert len([d for d in draws if d[0] == 40]) > 10, "training draws new frames"
    assert clip_frame_indices(40, 8, False, None) == [2, 7, 12, 17, 22, 27, 32, 37], "eval: segment middles"
    assert clip_frame_indices(10, 4, False, None) == [1, 3, 6, 8]


def test_short_clips_repeat_frames():
    assert clip_frame_indices(3, 8, False, None) == [0, 0, 0, 1, 1, 2, 2, 2]
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        pick = clip_frame_indices(3, 8, True, g)
        assert len(pick) == 8 and all(0 <= p <= 2 for p in pick) and pick == sorted(pick)
    assert clip_frame_indices(1, 4, True, g) == [0, 0, 0, 0]


# ---------------------------------------------------------------- 4. corrupt files


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_file_stops_with_a_data_error_naming_it(corrupt_tree, workers):
    root, bad = corrupt_tree
    cfg = image_cfg(root, loader_workers=workers, val_fraction=0.0)
    loader = loader_for(load_data(cfg).train, cfg)
    with pytest.raises(DataError) as err:
        run_epoch(loader, 0)
    message = str(err.value)
    del err, loader  # the traceback holds the loader: free both now, not in a later garbage collection
    assert any(str(p) in message for p in bad), message
    assert "on_corrupt" in message and "DataLoader worker" not in message, "the loader's own message, unwrapped"


def test_skip_mode_reads_every_other_index_once_and_counts_the_bad(corrupt_tree):
    root, bad = corrupt_tree
    cfg = image_cfg(root, on_corrupt="skip", val_fraction=0.0)
    files = load_data(cfg).train
    bad_index = {i for i in range(len(files)) if Path(files.path(i)) in bad}
    assert len(files) == 20 and len(bad_index) == 2
    logged = []
    loader = loader_for(files, cfg, log=logged.append)
    for epoch in (0, 1):
        batches = run_epoch(loader, epoch)
        assert sorted(indices(batches)) == sorted(set(range(20)) - bad_index)
        assert sorted(loader.skipped) == sorted(str(p) for p in bad)
        expected = train_batches(20, 4, seed=0, epoch=epoch)
        assert [b["index"].tolist() for b in batches] == [[i for i in e.tolist() if i not in bad_index]
                                                           for e in expected], "only the bad samples are left out"
        assert all(len(b["image"]) == len(b["label"]) == len(b["index"]) for b in batches)
    assert len(logged) == 2 and all(any(str(p) in m for m in logged) for p in bad), "each bad file logged once"


def test_class_pairs_stay_aligned_when_files_are_skipped(corrupt_tree):
    root, bad = corrupt_tree
    cfg = image_cfg(root, on_corrupt="skip", loader_workers=1, val_fraction=0.0)
    files = load_data(cfg).train
    bad_index = {i for i in range(len(files)) if Path(files.path(i)) in bad}
    loader = loader_for(files, cfg, class_pairs=True)
    rows_per_epoch = []
    for epoch in range(3):
        batches = run_epoch(loader, epoch)
        for b in batches:
            assert len(b["image"]) == len(b["pair_image"]) == len(b["label"]) == len(b["index"])
            own_colour = unnormalise(b["image"]).mean(dim=(2, 3)).argmax(1)
            pair_colour = unnormalise(b["pair_image"]).mean(dim=(2, 3)).argmax(1)
            assert torch.equal(own_colour, b["label"]), "image rows hold the labelled samples"
            assert torch.equal(pair_colour, b["label"]), "each partner is of its row's class"
        seen = indices(batches)
        assert len(seen) == len(set(seen)) and not set(seen) & bad_index
        rows_per_epoch.append(len(seen))
    assert min(rows_per_epoch) < 18, "a row whose partner is unreadable is dropped with it"


# ---------------------------------------------------------------- 5. stream: auto


def test_stream_auto_keeps_small_data_in_memory(tree):
    digits = load_data(DataConfig())
    assert all(isinstance(s, ImageSet) and not isinstance(s, FileSet) for s in (digits.train, digits.val, digits.test))
    tiny = load_data(DataConfig(name="image_folder", root=str(tree), image_size=SIZE))
    assert isinstance(tiny.train, ImageSet) and tiny.train.images.shape == (24, 3, SIZE, SIZE)
    assert not tiny.streamed


def test_should_stream_compares_decoded_size_with_memory(tree):
    auto = DataConfig(name="image_folder", root=str(tree))
    shape = (3, 224, 224)  # 150 KB a sample: 1000 samples are 150 MB
    assert should_stream(auto, 1000, shape, memory=100 << 20)
    assert not should_stream(auto, 1000, shape, memory=1 << 40)
    assert not should_stream(auto.model_copy(update={"stream": False}), 1000, shape, memory=1)
    assert should_stream(auto.model_copy(update={"stream": True}), 1, shape, memory=1 << 40)
    assert not should_stream(DataConfig(), 10**9, shape, memory=1), "digits never streams"


def test_stream_true_is_refused_for_in_memory_datasets():
    with pytest.raises(ValidationError) as err:
        DataConfig(name="digits", stream=True)
    assert "stream" in str(err.value)


# ---------------------------------------------------------------- 6. memory


def test_streaming_keeps_the_main_process_memory_bounded(tmp_path):
    write_jpeg_tree(tmp_path, classes=3, per_class={"train": 200, "test": 1}, sizes=(24, 24))
    size, n = 160, 600
    cfg = image_cfg(tmp_path, image_size=size, val_fraction=0.0)
    decoded = n * 3 * size * size  # 46 MB as uint8
    loader = loader_for(load_data(cfg).train, cfg, batch=16)
    seen = 0
    with deadline(120):
        batches = iter(loader)
        for _ in range(3):  # warm up: workers started, allocator pools grown to a batch's size
            seen += len(next(batches)["index"])
        base = peak = resident_data_bytes()
        for b in batches:
            seen += len(b["index"])
            peak = max(peak, resident_data_bytes())
            del b
    assert seen == n
    grew = peak - base
    print(f"main process data pages grew {grew / 2**20:.1f} MB over an epoch of {decoded / 2**20:.0f} MB decoded")
    assert grew < 0.4 * decoded, f"main process grew {grew / 2**20:.1f} MB over one epoch"


# ---------------------------------------------------------------- 7. video clips


def test_ucf101_streams_clips_of_the_configured_shape(ucf_root):
    data = load_data(ucf_cfg(ucf_root))
    assert isinstance(data.train, FileSet) and isinstance(data.test, FileSet) and data.val is data.test
    assert data.train.sample_shape == (4, 3, 16, 16) and data.train.is_video
    assert (len(data.train), len(data.test)) == (6, 3) and data.class_names == ["Archery", "Bowling", "Diving"]


def frame_means(batch: dict) -> torch.Tensor:
    """[B, F]: each frame's mean of its class's colour channel (the one that brightens), in [0, 1]."""
    x = unnormalise(batch["image"]).mean(dim=(3, 4))  # [B, F, 3]
    return x[torch.arange(len(x)), :, batch["label"] % 3]


def test_train_clips_draw_new_frames_each_epoch(ucf_root):
    cfg = ucf_cfg(ucf_root)
    loader = loader_for(load_data(cfg).train, cfg, batch=2)
    drawn = {}
    for epoch in range(3):
        batches = run_epoch(loader, epoch)
        assert sorted(indices(batches)) == list(range(6))
        for b in batches:
            assert b["image"].shape == (2, 4, 3, 16, 16) and b["image"].dtype == torch.float32
            means = frame_means(b)
            assert (means[:, 1:] >= means[:, :-1] - 0.02).all(), "frames come in clip order"
            for i, m in zip(b["index"].tolist(), means):
                drawn.setdefault(i, []).append(m)
    assert any(not torch.allclose(ms[0], m, atol=0.02) for ms in drawn.values() for m in ms[1:]), \
        "segment sampling picks other frames in another epoch"


def test_eval_clips_are_fixed_and_take_segment_middles(ucf_root):
    cfg = ucf_cfg(ucf_root)
    loader = loader_for(load_data(cfg).test, cfg, train=False, batch=2)
    a, b = run_epoch(loader, 0), run_epoch(loader, 1)
    assert same_batches(a, b) and indices(a) == [0, 1, 2]
    middles = torch.tensor([40 + 25 * t for t in (1, 3, 5, 7)]) / 255  # 8-frame test clips, 4 segments of 2
    for batch in a:
        means = frame_means(batch)
        assert (means[:, 1:] > means[:, :-1]).all(), "the class colour brightens over the clip"
        assert torch.allclose(means, middles.expand_as(means), atol=12 / 255), means * 255


def test_corrupt_clip_is_named(tmp_path):
    pytest.importorskip("av")
    write_ucf(tmp_path, ["Archery", "Bowling"], per_class=2)
    broken = tmp_path / "Bowling" / "v_Bowling_g01_c01.avi"
    broken.write_bytes(b"\x00junk" * 100)
    cfg = ucf_cfg(tmp_path)
    loader = loader_for(load_data(cfg).train, cfg, batch=2)
    with pytest.raises(DataError, match=re.escape(str(broken))):
        run_epoch(loader, 0)
    del loader


def test_missing_pyav_is_a_data_error_saying_how_to_install(ucf_root, monkeypatch):
    from raykd.data.ucf101 import require_av

    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError, as when PyAV is absent
    with pytest.raises(DataError, match="PyAV"):
        require_av()
    with pytest.raises(DataError, match="pip install"):
        load_data(ucf_cfg(ucf_root))
