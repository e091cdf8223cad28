"""UCF101 from its published layout: `<root>/<Class>/v_*.avi` plus the `ucfTrainTestlist` folder
(classInd.txt, trainlist0N.txt, testlist0N.txt) in the root or beside it. Each clip is decoded
with PyAV once, `frames` frames are sampled evenly over its length and resized to `image_size`
(default 112), and the result is cached as uint8 tensors under the storage's data cache — or, when the
decoded clips would not fit in memory (or `data.stream: true`), clips are decoded on the fly by the
streaming loader with frames drawn anew every epoch (`stream_ucf101`).
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from raykd.data.image_set import ImageSet
from raykd.errors import DataError

LISTS = "ucfTrainTestlist"


def find_lists(root: Path) -> Path:
    for cand in (root / LISTS, root.parent / LISTS):
        if (cand / "classInd.txt").is_file():
            return cand
    raise DataError(f"data.root '{root}': no {LISTS}/classInd.txt in it or beside it (UCF101's split files).")


def check_layout(root: Path, fold: int, where: str = "data") -> None:
    lists = find_lists(root)
    for name in (f"trainlist0{fold}.txt", f"testlist0{fold}.txt"):
        if not (lists / name).is_file():
            raise DataError(f"{where}.fold {fold}: '{lists / name}' not found.")


def _classes(lists: Path) -> list[str]:
    names = {}
    for line in (lists / "classInd.txt").read_text().split("\n"):
        if line.strip():
            idx, name = line.split()
            names[int(idx) - 1] = name
    return [names[i] for i in range(len(names))]


def _entries(lists: Path, name: str, classes: list[str]) -> list[tuple[str, int]]:
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for line in (lists / name).read_text().split("\n"):
        if line.strip():
            rel = line.split()[0]
            cls = rel.split("/")[0]
            if cls not in index:
                raise DataError(f"'{lists / name}': class '{cls}' of '{rel}' is not in classInd.txt.")
            out.append((rel, index[cls]))
    return out


def require_av():
    try:
        import av
    except ImportError:
        raise DataError("UCF101 needs PyAV to decode its .avi files: pip install 'raykd[video]' (or pip install av).") from None
    return av


def decode_clip(path: Path, frames: int, size: int) -> torch.Tensor:
    """uint8 [frames, 3, size, size]: frames sampled evenly over the clip (repeated if it is shorter)."""
    av = require_av()
    try:
        with av.open(str(path)) as container:
            decoded = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    except Exception as e:
        raise DataError(f"cannot decode '{path}' ({type(e).__name__}: {e}).") from None
    if not decoded:
        raise DataError(f"'{path}' has no video frames.")
    pick = torch.linspace(0, len(decoded) - 1, frames).round().long()
    x = torch.stack([decoded[i] for i in pick.tolist()]).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 255).round().to(torch.uint8)


def _split(root: Path, entries, frames: int, size: int, what: str) -> ImageSet:
    clips, t0 = [], time.time()
    for i, (rel, _) in enumerate(entries):
        path = root / rel
        if not path.is_file():
            raise DataError(f"UCF101 {what} list names '{rel}' but '{path}' does not exist.")
        clips.append(decode_clip(path, frames, size))
        if (i + 1) % 500 == 0:
            print(f"ucf101: decoded {i + 1}/{len(entries)} {what} clips ({time.time() - t0:.0f}s)", file=sys.stderr)
    labels = torch.tensor([c for _, c in entries], dtype=torch.int64)
    return ImageSet(torch.stack(clips), labels)


def load_ucf101(root: str, fold: int, frames: int, image_size: int | None, cache_dir: Path | None):
    """(train, test, class names) as clip sets; decoded once, then read from the cache."""
    root = Path(root).expanduser()
    check_layout(root, fold)
    lists = find_lists(root)
    size = image_size or 112
    classes = _classes(lists)
    train_e = _entries(lists, f"trainlist0{fold}.txt", classes)
    test_e = _entries(lists, f"testlist0{fold}.txt", classes)
    key = hashlib.sha256(f"{root.resolve()}|{fold}|{frames}|{size}|{len(train_e)}|{len(test_e)}".encode()).hexdigest()[:16]
    cache = cache_dir / f"ucf101-{key}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        blob = torch.load(cache, weights_only=True)
        return ImageSet(blob["train_x"], blob["train_y"]), ImageSet(blob["test_x"], blob["test_y"]), classes
    train, test = _split(root, train_e, frames, size, "train"), _split(root, test_e, frames, size, "test")
    if cache is not None:
        from raykd.engine.checkpoint import save_atomic

        save_atomic({"train_x": train.images, "train_y": train.labels, "test_x": test.images,
                     "test_y": test.labels}, cache)
    return train, test, classes


def stream_ucf101(cfg):
    """(train, test, class names) as clip `FileSet`s when `cfg` streams, else None (decode into memory)."""
    from raykd.data.file_set import FileSet
    from raykd.data.stream_choice import default_size, should_stream

    if cfg.stream is False:
        return None
    root = Path(cfg.root).expanduser()
    check_layout(root, cfg.fold)
    require_av()
    lists = find_lists(root)
    classes = _classes(lists)
    entries = {k: _entries(lists, f"{k}list0{cfg.fold}.txt", classes) for k in ("train", "test")}
    size = default_size(cfg)
    shape = (cfg.frames, 3, size, size)
    if not should_stream(cfg, sum(len(e) for e in entries.values()), shape):
        return None
    sets = {}
    for k, e in entries.items():
        missing = [rel for rel, _ in e if not (root / rel).is_file()]
        if missing:
            raise DataError(f"UCF101 {k} list names '{missing[0]}' but '{root / missing[0]}' does not exist"
                            f"{f' ({len(missing) - 1} more missing)' if len(missing) > 1 else ''}.")
        sets[k] = FileSet.from_relative(root, [rel for rel, _ in e], [c for _, c in e], "clip", shape)
    return sets["train"], sets["test"], classes
