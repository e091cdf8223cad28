"""Figures logged with each run (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def accuracy_curve(history: list[dict], path: Path, title: str = "") -> Path:
    """Train/val top-1 and training loss per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(epochs, [h["train/top1"] for h in history], label="train top-1")
    ax1.plot(epochs, [h["val/top1"] for h in history], label="val top-1")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("accuracy (%)")
    ax1.legend()
    ax1.grid(alpha=0.3)
    for key in sorted(k for k in history[0] if k.startswith("train/") and k != "train/top1"):
        ax2.plot(epochs, [h[key] for h in history], label=key.removeprefix("train/"))
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss")
    ax2.set_yscale("log")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Every raykd figure is written the same way: laid out, 110 dpi, its folder made, the figure freed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
