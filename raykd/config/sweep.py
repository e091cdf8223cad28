"""The `sweep:` section: which node to tune, the search space over its dotted fields, and how Ray Tune searches it.

A dimension is one of `{grid: [...]}`, `{choice: [...]}`, `{uniform: [lo, hi]}`, `{loguniform: [lo, hi]}`,
`{randint: [lo, hi]}` (both ends included) or `{expr: "1 - method.alpha1"}`, a value tied to the others
(DTSKD's alpha1 + alpha2 = 1) by arithmetic on their names. Keys are the node's fields (`method.t1`,
`train.optimizer.lr`, `data.batch_size`); `nodes.<node>.` in front is accepted too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from raykd.strict import StrictModel

KINDS = ("grid", "choice", "uniform", "loguniform", "randint", "expr")
SECTIONS = ("method", "train", "data", "model_kwargs")


class Dimension(StrictModel):
    grid: list[Any] | None = Field(None, min_length=1)
    choice: list[Any] | None = Field(None, min_length=1)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    expr: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Dimension":
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)}; got {', '.join(given) or 'none'}")
        for kind in ("uniform", "loguniform", "randint"):
            bounds = getattr(self, kind)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{kind}: [low, high] needs low < high, got {list(bounds)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform: the low end must be > 0, got {self.loguniform[0]}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def values(self) -> list[Any] | None:
        """The values of a finite dimension (grid, choice), else None."""
        return self.grid if self.grid is not None else self.choice


class ThenConfig(StrictModel):
    """After the sweep: train the best config as an ordinary node of the pipeline, with its own seeds."""

    retrain: bool = False
    seeds: list[int] | None = Field(None, min_length=1)


class SweepConfig(StrictModel):
    node: str
    space: dict[str, Dimension] = Field(min_length=1)
    metric: str = "val/top1"
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(1, gt=0)  # random/optuna: configs drawn (x every grid value)
    max_concurrent_trials: int | None = Field(None, gt=0)
    search: Literal["random", "grid", "optuna"] = "random"
    scheduler: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, gt=0)  # ASHA: epochs every trial gets before it can be stopped
    reduction_factor: float = Field(3.0, gt=1)  # ASHA: 1/rf of the trials go on at each rung
    seed: int = 0  # the searcher's random state: the same command draws the same configs
    seeds: list[int] | None = Field(None, min_length=1)  # replicates of every config; the best is by their mean
    then: ThenConfig = Field(default_factory=ThenConfig)

    @field_validator("metric")
    @classmethod
    def _not_test(cls, v: str) -> str:
        if v.startswith("test/"):
            raise ValueError(f"'{v}' is a test-set metric: a sweep selects on validation (val/top1) so that the "
                             f"test set stays unseen; the trials' test accuracy is still recorded")
        if not v.startswith(("val/", "train/")):
            raise ValueError(f"'{v}' is not a per-epoch metric: use val/<name> (e.g. val/top1, val/loss) or "
                             f"train/<name>")
        return v

    @field_validator("space")
    @classmethod
    def _keys(cls, space: dict[str, Dimension]) -> dict[str, Dimension]:
        for key in space:
            field = key.split(".", 2)[2] if key.startswith("nodes.") and key.count(".") >= 2 else key
            if field.split(".")[0] not in SECTIONS or "." not in field:
                raise ValueError(f"'{key}' is not a node field: keys look like method.<name>, train.<name>..., "
                                 f"data.<name> or model_kwargs.<name> (optionally after nodes.<node>.)")
        return space

    @model_validator(mode="after")
    def _this_node(self) -> "SweepConfig":
        for key in self.space:
            if key.startswith("nodes.") and key.split(".")[1] != self.node:
                raise ValueError(f"space key '{key}' is a field of node '{key.split('.')[1]}', but the sweep tunes "
                                 f"node '{self.node}'; write it as {'.'.join(key.split('.')[2:])}")
        return self

    def field(self, key: str) -> str:
        """A space key as the node's own dotted field (`method.t1`)."""
        return key.split(".", 2)[2] if key.startswith("nodes.") else key
