"""The experiment schema: shared `data`, `train`, `resources` sections, `nodes` (each a training run that may
name a `teacher` node and override any shared section), and what a node is once resolved."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from raykd.config.sweep import SweepConfig
from raykd.strict import StrictModel

SHARED_SECTIONS = ("train", "data", "resources")


class Strict(StrictModel):
    """Unknown keys are errors, so a typo never silently falls back to a default (raykd/strict.py)."""


class OptimizerConfig(Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleConfig(Strict):
    name: Literal["cosine", "multistep", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    milestones: list[int] = Field(default_factory=lambda: [150, 180, 210])
    gamma: float = Field(0.1, gt=0)
    min_lr: float = Field(0.0, ge=0)


class TrainConfig(Strict):
    epochs: int = Field(240, gt=0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    seed: int = 0
    grad_clip: float | None = Field(None, gt=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"


class AugmentConfig(Strict):
    crop_padding: int = Field(4, ge=0)
    flip: bool = True


STREAMABLE = ("image_folder", "ucf101")


class DataConfig(Strict):
    name: Literal["digits", "digits_video", "cifar10", "cifar100", "image_folder", "fashion_mnist",
                  "ucf101"] = "digits"
    root: str | None = None
    frames: int = Field(8, gt=0)  # clips: frames per clip (digits_video, ucf101)
    label_noise: float = Field(0.0, ge=0, lt=1)  # digits_video: share of training labels flipped
    fold: int = Field(1, ge=1, le=3)  # ucf101: which ucfTrainTestlist split
    batch_size: int = Field(64, gt=0)
    eval_batch_size: int = Field(512, gt=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    train_limit: int | None = Field(None, gt=0)
    image_size: int | None = Field(None, gt=0)
    split_seed: int = 0
    download: bool = False
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    # the streaming path (image_folder, ucf101): decode per sample in loader worker processes
    stream: bool | Literal["auto"] = "auto"  # auto: stream when the decoded splits would not fit in memory
    loader_workers: int | Literal["auto"] = "auto"  # per training worker; auto: its cpus_per_worker
    on_corrupt: Literal["error", "skip"] = "error"
    crop_scale: tuple[float, float] = (0.08, 1.0)  # train: random-resized-crop area share
    eval_resize: int | None = Field(None, gt=0)  # eval: short side before the centre crop (image_size / 0.875)

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("crop_scale is [low, high] with 0 < low <= high <= 1 (shares of the image area)")
        return v

    @field_validator("loader_workers")
    @classmethod
    def _workers(cls, v: int | str) -> int | str:
        if v != "auto" and v < 0:
            raise ValueError("loader_workers is a count >= 0 (0 decodes in the training process) or auto")
        return v

    @model_validator(mode="after")
    def _only_files_stream(self) -> "DataConfig":
        if self.stream is True and self.name not in STREAMABLE:
            raise ValueError(f"stream: true, but dataset '{self.name}' is held in memory: only "
                             f"{' and '.join(STREAMABLE)} stream from disk (leave stream at auto or false).")
        return self

    def semantic_dict(self) -> dict[str, Any]:
        """The fields that change what a run computes. Not the eval batch, downloading or the loader's process
        count; not `on_corrupt` either, so a run stopped by a bad file resumes from its checkpoint when rerun
        with `skip`. The streaming options only for datasets that can stream (in-memory datasets' node
        hashes are what they were before streaming existed)."""
        drop = {"eval_batch_size", "download", "loader_workers", "on_corrupt"}
        if self.name not in STREAMABLE:
            drop |= {"stream", "crop_scale", "eval_resize"}
        return self.model_dump(mode="json", exclude=drop)


class ResourcesConfig(Strict):
    workers: int = Field(1, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float | Literal["auto"] = "auto"  # a fraction packs several single-worker nodes on a GPU
    max_failures: int = Field(0, ge=0)

    @field_validator("gpus_per_worker")
    @classmethod
    def _ray_gpu_amount(cls, v: float | str) -> float | str:
        if v != "auto" and (v < 0 or (v > 1 and v != int(v))):
            raise ValueError("a worker takes a fraction of one GPU (0 < g <= 1) or whole GPUs (2, 3, ...)")
        return v

    @model_validator(mode="after")
    def _ddp_needs_whole_gpus(self) -> "ResourcesConfig":
        g = self.gpus_per_worker
        if self.workers > 1 and g != "auto" and 0 < g < 1:
            raise ValueError(f"gpus_per_worker {g:g} with {self.workers} workers: DDP ranks cannot share a GPU "
                             f"(NCCL refuses two ranks on one device). Fractional GPUs are for single-worker nodes; "
                             f"give DDP workers whole GPUs.")
        return self


class CascadeLink(Strict):
    model: str
    model_kwargs: dict[str, Any] = Field(default_factory=dict)


class NodeConfig(Strict):
    model: str | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    method: dict[str, Any] = Field(default_factory=lambda: {"name": "vanilla"})
    teacher: str | None = None
    init: str | None = None
    cascade: list[str | CascadeLink] | None = Field(None, min_length=1)
    members: list[str] | None = Field(None, min_length=1)  # >= 2 once seeds are expanded
    dataset: str | None = None  # train on the package set this node built (method: packages)
    seeds: list[int] | None = Field(None, min_length=1)  # replicates: one node per seed, <name>.seed<N>
    train: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"each seed once: {v} repeats {sorted({s for s in v if v.count(s) > 1})}")
        return v


class TrackingConfig(Strict):
    uri: str | None = None
    experiment: str | None = None
    register_as: str | None = None

    @field_validator("register_as")
    @classmethod
    def _registrable(cls, v: str | None) -> str | None:
        """MLflow refuses these names only when it registers, after training: refuse them here."""
        if v is not None and (not v.strip() or any(c in v for c in "/:") or ".." in v or v != v.strip()
                              or not v.isprintable() or len(v) > 256):
            raise ValueError("a registered model name must be printable text without '/', ':', '..' or edge spaces")
        return v


class ExperimentConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    storage: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    nodes: dict[str, NodeConfig]
    final: str | None = None
    sweep: SweepConfig | None = None  # what `raykd tune` searches (raykd/config/sweep.py); `raykd run` ignores it


class ResolvedNode(BaseModel):
    """One node with its shared sections merged in and its method config validated."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    model: str
    model_kwargs: dict[str, Any]
    method: Any  # the method's own pydantic config (raykd.methods.MethodConfig)
    teacher: str | None
    init: str | None = None
    members: tuple[str, ...] = ()  # an integration node's inputs (method ensemble | weight_average)
    dataset: str | None = None  # a packages node whose clips this node trains on
    branch: str | None = None  # the cascade this node is a link of, and its level (1 = nearest the teacher)
    level: int | None = None
    seed_group: str | None = None  # the node this one replicates with its own seed (`seeds: [...]`)
    train: TrainConfig
    data: DataConfig
    resources: ResourcesConfig

    @property
    def integrates(self) -> bool:
        return bool(self.members)

    @property
    def builds_packages(self) -> bool:
        return self.method.name == "packages"

    @property
    def trains(self) -> bool:
        """False for nodes that only evaluate finished models (integration, packages): they run as
        one plain process, not a Train run, and have no student of their own to check."""
        return not (self.integrates or self.builds_packages)

    def semantic_dict(self) -> dict[str, Any]:
        """What determines the trained weights; resources and names are left out on purpose."""
        return {
            "model": self.model,
            "model_kwargs": self.model_kwargs,
            "method": self.method.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json", exclude={"device"}),
            "data": self.data.semantic_dict(),
        }


class Experiment(BaseModel):
    """A validated experiment: the raw schema plus each node resolved."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: ExperimentConfig
    nodes: dict[str, ResolvedNode]
    source: str | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def storage(self) -> Path:
        return Path(self.config.storage).expanduser().resolve()

    @property
    def final(self) -> str:
        """`final:` if set, else the last node (in config order) that no other node learns from."""
        if self.config.final:
            if self.config.final not in self.nodes:  # a seeded node: its first seed stands for it
                return next(n for n, node in self.nodes.items() if node.seed_group == self.config.final)
            return self.config.final
        used = {p for n in self.nodes.values() for p in (n.teacher, n.init, n.dataset, *n.members)}
        used |= {n for n, node in self.nodes.items() if node.builds_packages}
        return [name for name in self.nodes if name not in used][-1]

    def to_yaml(self) -> str:
        """The resolved config, every default filled in, as `--print-config` shows it."""
        out = self.config.model_dump(mode="json", exclude={"nodes", "sweep"})
        if self.config.sweep is not None:
            out["sweep"] = self.config.sweep.model_dump(mode="json", exclude_none=True)
        out["storage"] = str(self.storage)
        out["final"] = self.final
        out["nodes"] = {}
        for name, node in self.nodes.items():
            out["nodes"][name] = {
                **({"members": list(node.members)} if node.members else {"model": node.model}),
                "model_kwargs": node.model_kwargs,
                "teacher": node.teacher,
                "init": node.init,
                **({"dataset": node.dataset} if node.dataset else {}),
                "method": node.method.model_dump(mode="json"),
                "train": node.train.model_dump(mode="json"),
                "data": node.data.model_dump(mode="json"),
                "resources": node.resources.model_dump(mode="json"),
            }
        return yaml.safe_dump(out, sort_keys=False)
