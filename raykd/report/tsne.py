"""t-SNE of one student's penultimate features (the pooled vector its classifier reads) on the test set.

The student comes from its MLflow run's `checkpoint/final.pt` artifact, not a node folder, so this works
wherever the tracking server does; its data are rebuilt from the config the checkpoint carries, as
`raykd eval` does. At most `cap` test images (a fixed random subset): t-SNE is quadratic in them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from raykd.errors import RaykdError
from raykd.plots import save_figure
from raykd.report.collect import NodeRun

ARTIFACT = "checkpoint/final.pt"


def download_student(uri: str, run: NodeRun, into: Path) -> Path:
    import os

    import mlflow.artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no progress bar
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run.source_run_id, artifact_path=ARTIFACT,
                                                        dst_path=str(into), tracking_uri=uri))
    except Exception as e:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        raise RaykdError(f"--tsne: node '{run.name}' (run {run.source_run_id}) has no '{ARTIFACT}' artifact in MLflow "
                         f"({type(e).__name__}); only a finished node's run has its student.") from None


def features(checkpoint: Path, data_cache: Path, cap: int = 2000, seed: int = 0, name: str = "this node"):
    """(features [n, d], labels [n], class names, meta) of up to `cap` test images."""
    import torch

    from raykd.config import DataConfig
    from raykd.data import load_data, make_loader
    from raykd.engine import load_student

    model, meta = load_student(checkpoint, "cpu")
    cfg = DataConfig.model_validate(dict(meta["data"]))
    try:
        data = load_data(cfg, data_cache)
    except RaykdError as e:  # a dataset folder of the machine that trained it
        raise RaykdError(f"--tsne: the test data of '{name}' cannot be loaded here: {e}") from None
    test = data.test
    if len(test) > cap:
        pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:cap].sort().values
        test = test.subset(pick)
    loader = make_loader(test, cfg, 256, train=False, device="cpu", mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    feats, labels = [], []
    with torch.no_grad():
        for batch in loader:
            out = model(batch["image"])
            if out.embedding is None:
                raise RaykdError(f"--tsne: '{name}' ({meta['model']}) has no single penultimate layer (an ensemble "
                                 f"averages its members' outputs); choose one of its members.")
            feats.append(out.embedding.flatten(1).float())
            labels.append(batch["label"])
    return torch.cat(feats).numpy(), torch.cat(labels).numpy(), list(data.class_names), meta


def embed(x, seed: int = 0):
    """2-D t-SNE (scikit-learn), perplexity capped for small sets."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def tsne_figure(uri: str, run: NodeRun, path: Path, data_cache: Path, cap: int = 2000) -> Path:
    with tempfile.TemporaryDirectory(prefix="raykd-tsne-") as tmp:
        x, y, names, meta = features(download_student(uri, run, Path(tmp)), data_cache, cap, name=run.name)
    xy = embed(x)
    top1 = run.metrics.get("test/top1")
    title = (f"t-SNE of {run.name} ({run.model}, {run.method}): penultimate features, {len(x)} test images"
             + (f"\ntest top-1 {top1:.2f}%" if top1 is not None else ""))
    return scatter(xy, y, names, path, title)


def scatter(xy, labels, names: list[str], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    classes = sorted(set(int(c) for c in labels))
    legend = len(classes) <= 20
    fig, ax = plt.subplots(figsize=(7.2 if legend else 6.2, 6.0))
    if legend:
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            m = labels == c
            name = names[c] if c < len(names) else str(c)
            ax.scatter(xy[m, 0], xy[m, 1], s=7, color=cmap(i % cmap.N), label=name, alpha=0.8, linewidths=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, markerscale=2.5,
                  title="class", title_fontsize=8)
    else:  # many classes: a colour scale instead of a legend
        sc = ax.scatter(xy[:, 0], xy[:, 1], s=5, c=np.asarray(labels), cmap="nipy_spectral", alpha=0.8, linewidths=0)
        fig.colorbar(sc, ax=ax, label="class index")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)
