"""Generated media for the data tests: ImageNet-layout JPEG folders of mixed sizes and UCF101-layout clips,
with each class a colour the models can learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (200, 40, 200), (40, 200, 200)]


def write_jpeg_tree(root: Path, classes: int = 3, per_class: dict[str, int] | None = None, seed: int = 0,
                    sizes: tuple[int, int] = (40, 160)) -> dict[str, list[Path]]:
    """`root/<split>/<class>/<n>.JPEG`, each image a noisy field of its class's colour at a random size
    (both sides drawn from `sizes`, so aspect ratios vary). Returns the files per split."""
    from PIL import Image

    per_class = per_class or {"train": 8, "val": 2, "test": 3}
    rng = np.random.default_rng(seed)
    out: dict[str, list[Path]] = {}
    for split, n in per_class.items():
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(sizes[0], sizes[1] + 1, 2)
                base = np.array(COLOURS[c % len(COLOURS)], dtype=np.int16)
                a = np.clip(base + rng.integers(-30, 31, (h, w, 3)), 0, 255).astype(np.uint8)
                p = d / f"{split}_{c}_{i}.JPEG"
                Image.fromarray(a).save(p, quality=90)
                out.setdefault(split, []).append(p)
    return out


def write_ucf(root: Path, classes: list[str], per_class: int, size: tuple[int, int] = (32, 24)) -> None:
    """A UCF101 layout (`<Class>/v_*.avi` + ucfTrainTestlist/): each class brightens one colour channel over
    its clip's frames; the last group of every class is the test split."""
    import av

    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    train, test = [], []
    w, h = size
    for ci, c in enumerate(classes):
        (root / c).mkdir()
        for g in range(per_class):
            rel = f"{c}/v_{c}_g{g + 1:02d}_c01.avi"
            with av.open(str(root / rel), "w") as out:
                stream = out.add_stream("mpeg4", rate=8)
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                for t in range(6 + g):
                    a = np.zeros((h, w, 3), np.uint8)
                    a[..., ci % 3] = 40 + 25 * t  # the class's colour channel brightens over time
                    for p in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                        out.mux(p)
                for p in stream.encode():
                    out.mux(p)
            (train if g < per_class - 1 else test).append(rel)
    (lists / "trainlist01.txt").write_text("".join(f"{r} {classes.index(r.split('/')[0]) + 1}\n" for r in train))
    (lists / "testlist01.txt").write_text("".join(f"{r}\n" for r in test))
