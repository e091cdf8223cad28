"""Datasets (digits, CIFAR pickles, ImageFolder, Fashion-MNIST) and the device-side loader."""

import gzip
import hashlib
import pickle
import tarfile

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from raykd.config import DataConfig
from raykd.data import DeviceLoader, ImageSet, load_data
from raykd.data.image_set import stratified_split
from raykd.data.loader import shifted_crop
from raykd.errors import DataError


# --- digits ---------------------------------------------------------------------------------

def test_digits_splits_are_stratified_disjoint_and_deterministic():
    cfg = DataConfig(name="digits")
    a, b = load_data(cfg), load_data(cfg)
    assert a.num_classes == 10 and a.in_channels == 3 and a.image_size == (32, 32)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert len(a.test) == pytest.approx(0.2 * 1797, abs=10)
    assert a.train.images.dtype == torch.uint8
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38, "test split keeps class balance"
    c = load_data(DataConfig(name="digits", split_seed=1))
    assert not torch.equal(a.test.labels, c.test.labels)


def test_stratified_split_holds_out_fraction_of_each_class():
    labels = torch.tensor([0] * 50 + [1] * 30)
    rest, held = stratified_split(labels, 0.2, seed=3)
    assert len(set(rest.tolist()) & set(held.tolist())) == 0
    assert len(rest) + len(held) == 80
    assert torch.bincount(labels[held]).tolist() == [10, 6]


def test_train_limit_keeps_a_fixed_subset():
    full = load_data(DataConfig(name="digits"))
    small = load_data(DataConfig(name="digits", train_limit=100))
    assert len(small.train) == 100 and len(small.test) == len(full.test)
    assert torch.equal(small.train.images, load_data(DataConfig(name="digits", train_limit=100)).train.images)


# --- loader ---------------------------------------------------------------------------------

def _toy(n=10):
    images = torch.arange(n * 3 * 4 * 4, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, 3, 4, 4)
    return ImageSet(images, torch.arange(n))


def test_eval_loader_yields_every_sample_once_in_order_normalised():
    data = _toy(10)
    loader = DeviceLoader(data, 4, "cpu", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=False)
    batches = list(loader)
    assert [len(b["label"]) for b in batches] == [4, 4, 2]
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(10))
    x = batches[0]["image"]
    assert torch.allclose(x, (data.images[:4].float() / 255 - 0.5) / 0.25)


def test_train_loader_shuffles_per_epoch_reproducibly_and_drops_last():
    data = _toy(10)
    mk = lambda: DeviceLoader(data, 4, "cpu", (0,) * 3, (1,) * 3, train=True, seed=1)
    l1, l2 = mk(), mk()
    e0 = torch.cat([b["index"] for b in l1])
    assert len(e0) == 8 and len(set(e0.tolist())) == 8
    assert torch.equal(e0, torch.cat([b["index"] for b in l2]))
    l1.set_epoch(1)
    assert not torch.equal(e0, torch.cat([b["index"] for b in l1]))


def test_ranks_take_disjoint_slices_of_one_permutation():
    data = _toy(12)
    seen = []
    for rank in range(2):
        loader = DeviceLoader(data, 3, "cpu", (0,) * 3, (1,) * 3, train=True, seed=0, rank=rank, world_size=2)
        seen.append(torch.cat([b["index"] for b in loader]).tolist())
    assert len(seen[0]) == len(seen[1]) == 6
    assert set(seen[0]).isdisjoint(seen[1])


def test_random_crop_is_a_shift_with_zero_fill():
    x = torch.arange(1, 17, dtype=torch.uint8).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    out = shifted_crop(x, 1, torch.randint(0, 3, (64,), generator=g), torch.randint(0, 3, (64,), generator=g))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x[:1], (1, 1, 1, 1))
    windows = {tuple(padded[0, 0, i:i + 4, j:j + 4].flatten().tolist()) for i in range(3) for j in range(3)}
    got = {tuple(o.flatten().tolist()) for o in out[:, 0]}
    assert got <= windows and len(got) > 4, "every crop is one of the 9 shifted windows, and they vary"


def test_flip_mirrors_about_half_the_batch():
    data = ImageSet(torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4).repeat(200, 3, 1, 1), torch.zeros(200, dtype=torch.long))
    loader = DeviceLoader(data, 200, "cpu", (0,) * 3, (1 / 255,) * 3, train=True, flip=True)
    x = next(iter(loader))["image"][:, 0, 0]
    flipped = (x[:, 0] == 3).sum().item()
    assert 60 < flipped < 140
    assert all(row.tolist() in ([0, 1, 2, 3], [3, 2, 1, 0]) for row in x)


# --- CIFAR pickles --------------------------------------------------------------------------

def _write_cifar(root, name):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i in range(1, 6):
            _pickle(folder / f"data_batch_{i}", {b"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8),
                                                 b"labels": list(rng.integers(0, 10, 20))})
        _pickle(folder / "test_batch", {b"data": rng.integers(0, 255, (30, 3072), dtype=np.uint8), b"labels": list(range(10)) * 3})
        _pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        _pickle(folder / "train", {b"data": rng.integers(0, 255, (200, 3072), dtype=np.uint8), b"fine_labels": list(range(100)) * 2})
        _pickle(folder / "test", {b"data": rng.integers(0, 255, (100, 3072), dtype=np.uint8), b"fine_labels": list(range(100))})
        _pickle(folder / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    return folder


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.mark.parametrize("name,classes,n_train", [("cifar10", 10, 100), ("cifar100", 100, 200)])
def test_cifar_pickles(tmp_path, name, classes, n_train):
    folder = _write_cifar(tmp_path, name)
    for root in (tmp_path, folder):  # the parent folder (torchvision layout) or the folder itself
        b = load_data(DataConfig(name=name, root=str(root), val_fraction=0.0))
        assert b.num_classes == classes and len(b.train) == n_train and b.image_size == (32, 32)
        assert b.class_names[1] in ("c1", "f1")
    with open(folder / ("test_batch" if name == "cifar10" else "test"), "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    b = load_data(DataConfig(name=name, root=str(tmp_path), val_fraction=0.0))
    assert torch.equal(b.test.images[0], torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32)))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_load(tmp_path, protocol):
    """The official release is Python 2's protocol 2; numpy pickles arrays differently at 4 and 5."""
    folder = _write_cifar(tmp_path, "cifar100")
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    with open(folder / "test", "wb") as f:
        pickle.dump({b"data": data, b"fine_labels": [3, 4], b"filenames": [b"a.png", b"b.png"]}, f, protocol=protocol)
    b = load_data(DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.0))
    assert torch.equal(b.test.images.flatten(1), torch.from_numpy(data)) and b.test.labels.tolist() == [3, 4]


class _Payload:
    """What a crafted dataset file would do on load: here, create a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("where", ["data_batch_1", "batches.meta"])
@pytest.mark.parametrize("protocol", [2, 5])
def test_a_crafted_cifar_pickle_never_runs_its_payload(tmp_path, where, protocol):
    folder = _write_cifar(tmp_path / "data", "cifar10")
    marker = tmp_path / "payload-ran"
    with open(folder / where, "wb") as f:
        pickle.dump({b"data": _Payload(str(marker)), b"labels": [1], b"label_names": [_Payload(str(marker))]}, f,
                    protocol=protocol)
    with pytest.raises(DataError, match=rf"{where}' is not a valid CIFAR pickle .*'(pathlib\.Path\.touch|__builtin__\.getattr)'.*refused"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path / "data")))
    assert not marker.exists(), "the payload ran"
    with open(folder / where, "wb") as f:  # the classic: os.system
        f.write(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(DataError, match=r"'os\.system'.*refused"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path / "data")))
    assert not marker.exists(), "the payload ran"


def test_cifar_missing_or_wrong_layout_names_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)))
    with pytest.raises(DataError, match="data.root is required"):
        load_data(DataConfig(name="cifar100"))


# --- ImageFolder ----------------------------------------------------------------------------

def _write_tree(root, sizes=None):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                size = (sizes or {}).get((split, c, i), (8, 8))
                Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_image_folder_loads_classes_in_order_and_caches(tmp_path, monkeypatch):
    _write_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    cfg = DataConfig(name="image_folder", root=str(tmp_path / "tree"), val_fraction=0.0)
    b = load_data(cfg, cache)
    assert b.class_names == ["cat", "dog"] and len(b.train) == 12 and len(b.test) == 6
    assert b.train.labels.tolist() == [0] * 6 + [1] * 6
    assert len(list(cache.glob("*.pt"))) == 2
    import raykd.data.image_folder as imf

    monkeypatch.setattr(imf, "decode_files", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = load_data(cfg, cache)
    assert torch.equal(again.train.images, b.train.images)


def test_image_folder_size_mismatch_names_file_and_resize_fixes_it(tmp_path):
    _write_tree(tmp_path / "tree", sizes={("train", "dog", 2): (10, 12)})
    with pytest.raises(DataError, match=r"dog/2.png' is \(10, 12\).*data.image_size"):
        load_data(DataConfig(name="image_folder", root=str(tmp_path / "tree")))
    b = load_data(DataConfig(name="image_folder", root=str(tmp_path / "tree"), image_size=8))
    assert b.image_size == (8, 8)


def test_image_folder_wrong_layout(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="has no 'train/' folder"):
        load_data(DataConfig(name="image_folder", root=str(tmp_path / "flat")))


def test_shared_cifar10_jpegs_decode_to_the_published_arrays(tmp_path):
    archive = SHARED_DATA / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} not present (only in the project's shared data)")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, members=[m for m in tar.getmembers() if m.name.split("/")[0] == "test"],
                       filter="data")
    from raykd.data.image_folder import load_split

    test, classes = load_split(tmp_path / "test", None, None, None)
    assert classes[:3] == ["airplane", "automobile", "bird"] and len(test) == 10_000
    nhwc = test.images.permute(0, 2, 3, 1).contiguous().numpy()
    assert hashlib.sha256(nhwc.tobytes()).hexdigest() == "5a6aa8185204d80b65d3dfb540696dadd5f10d185ded226a96665d3e0fc6259f"


# --- Fashion-MNIST --------------------------------------------------------------------------

def _idx(path, arr, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_idx(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 10)):
        _idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)), 2051)
        _idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10, 2049)
    b = load_data(DataConfig(name="fashion_mnist", root=str(tmp_path), val_fraction=0.0))
    assert len(b.train) == 40 and len(b.test) == 10 and b.image_size == (32, 32) and b.num_classes == 10
    assert b.train.images[:, :, :2].sum() == 0, "28x28 is zero-padded to 32x32"
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 255, (10, 28, 28)), 2051)
    with pytest.raises(DataError, match="not an idx labels file"):
        load_data(DataConfig(name="fashion_mnist", root=str(tmp_path)))


def test_shared_fashion_mnist():
    root = SHARED_DATA / "fashion-mnist"
    if not root.is_dir():
        pytest.skip(f"{root} not present (only in the project's shared data)")
    b = load_data(DataConfig(name="fashion_mnist", root=str(root), val_fraction=0.0))
    assert len(b.train) == 60_000 and len(b.test) == 10_000
    assert torch.bincount(b.test.labels).tolist() == [1000] * 10


def test_image_folder_without_test_uses_val_as_test(tmp_path):
    """ImageNet's layout: train/ and val/ only. val/ is the test split, in memory and streamed alike."""
    _write_tree(tmp_path / "tree")
    (tmp_path / "tree" / "test").rename(tmp_path / "tree" / "val")
    for stream in (False, True):
        b = load_data(DataConfig(name="image_folder", root=str(tmp_path / "tree"), val_fraction=0.0, image_size=8,
                                 stream=stream))
        assert len(b.train) == 12 and len(b.test) == 6 and b.streamed == stream
        assert torch.equal(b.val.labels, b.test.labels), "val_fraction 0: validation is the test split"


def test_streamed_listing_is_cached_until_a_class_folder_changes(tmp_path, monkeypatch):
    import raykd.data.image_folder as imf

    _write_tree(tmp_path / "tree")
    cfg = DataConfig(name="image_folder", root=str(tmp_path / "tree"), stream=True, val_fraction=0.0)
    first = load_data(cfg, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("imagefolder-index-*.npz"))) == 2
    real_scan = imf.scan_split
    monkeypatch.setattr(imf, "scan_split", lambda *a: (_ for _ in ()).throw(AssertionError("listed again")))
    again = load_data(cfg, tmp_path / "cache")
    assert (again.train.paths == first.train.paths).all() and torch.equal(again.train.labels, first.train.labels)
    monkeypatch.setattr(imf, "scan_split", real_scan)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "tree" / "train" / "dog" / "new.png")  # the folder's mtime moves
    grown = load_data(cfg, tmp_path / "cache")
    assert len(grown.train) == 13 and b"train/dog/new.png" in grown.train.paths.tolist()
