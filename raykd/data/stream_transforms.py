"""Per-sample decode and augmentation for the streaming path, on uint8 tensors.

The standard ImageNet recipe: train takes a random-resized crop (area share in `scale`, aspect ratio in
[3/4, 4/3]) resized to `size`, then a horizontal flip with probability 1/2; eval resizes the short side to
`resize` and takes the centre `size` crop. Samples stay uint8: normalisation happens on the training
device, so a worker ships a quarter of the bytes float32 would take.

Every random number comes from the generator the caller passes (seeded by seed, epoch and index), so
a sample's augmentation does not depend on which worker process decodes it.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import functional as TF

RATIO = (3 / 4, 4 / 3)


def decode_image_file(path: str) -> torch.Tensor:
    """uint8 [3, H, W]. torchvision's decoder first (libjpeg-turbo, libpng, libwebp); PIL for the formats it
    lacks (BMP, ...). Raises on unreadable or truncated files."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        return decode_image(read_file(path), mode=ImageReadMode.RGB)
    except RuntimeError as first:
        try:
            from PIL import Image

            with Image.open(path) as im:
                return TF.pil_to_tensor(im.convert("RGB"))
        except Exception:
            raise first from None


def resized_crop_box(h: int, w: int, scale: tuple[float, float], g: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop covering `scale` of the area at a log-uniform aspect
    ratio; after ten misses, the largest centred crop within the ratio range (torchvision's rule)."""
    area = h * w
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(10):
        u = torch.rand(4, generator=g).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        ratio = math.exp(log_lo + (log_hi - log_lo) * u[1])
        cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1)), ch, cw
    in_ratio = w / h
    if in_ratio < RATIO[0]:
        cw, ch = w, int(round(w / RATIO[0]))
    elif in_ratio > RATIO[1]:
        ch, cw = h, int(round(h * RATIO[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def train_view(x: torch.Tensor, size: int, scale: tuple[float, float], flip: bool, g: torch.Generator) -> torch.Tensor:
    """Random-resized crop + optional flip of an image [C, H, W] or of all frames of a clip [F, C, H, W] alike."""
    top, left, ch, cw = resized_crop_box(x.shape[-2], x.shape[-1], scale, g)
    x = TF.resized_crop(x, top, left, ch, cw, [size, size], antialias=True)
    if flip and torch.rand(1, generator=g).item() < 0.5:
        x = x.flip(-1)
    return x.contiguous()


def eval_view(x: torch.Tensor, size: int, resize: int) -> torch.Tensor:
    """Short side to `resize`, then the centre `size` x `size` crop."""
    x = TF.resize(x, [resize], antialias=True)
    return TF.center_crop(x, [size, size]).contiguous()


def default_eval_resize(size: int) -> int:
    """256 for 224: the crop covers 87.5% of the short side, as in the reference ImageNet scripts."""
    return int(round(size / 0.875))


def clip_frame_indices(n: int, frames: int, train: bool, g: torch.Generator | None) -> list[int]:
    """Segment sampling: the clip is cut into `frames` equal segments; training draws one frame at random
    from each (a new draw every epoch), evaluation takes each segment's middle frame. A clip shorter
    than `frames` repeats frames."""
    seg = n / frames
    if train:
        u = torch.rand(frames, generator=g).tolist()
        return [min(n - 1, int(seg * i + u[i] * seg)) for i in range(frames)]
    return [min(n - 1, int(seg * i + seg / 2)) for i in range(frames)]


def decode_clip_frames(path: str, frames: int, train: bool, g: torch.Generator | None) -> torch.Tensor:
    """uint8 [frames, 3, H, W] from a video file decoded with PyAV: every frame is decoded (a compressed
    stream has to be), only the sampled ones are converted to RGB."""
    import av

    with av.open(path) as container:
        decoded = list(container.decode(video=0))
    if not decoded:
        raise ValueError("no video frames")
    pick = clip_frame_indices(len(decoded), frames, train, g)
    rgb = {i: torch.from_numpy(decoded[i].to_ndarray(format="rgb24")) for i in set(pick)}
    return torch.stack([rgb[i] for i in pick]).permute(0, 3, 1, 2).contiguous()
