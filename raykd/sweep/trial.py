"""One Tune trial: the tuned node with the sampled values, trained as a node of the store.

A trial's config is the experiment with its values applied, so its node has its own content hash and folder:
a trial that finished (in this sweep, an earlier one, or a pipeline) is a cached node and is not trained
again; a stopped one resumes from its last epoch checkpoint; two trials of one config train it once (node
lock). Single-worker trials train inside Tune's trial actor, which Tune reuses across trials (torch, MLflow
and the data stay imported and cached: no process start per trial); multi-worker trials run Ray Train DDP
from the trial (Ray's documented Tune + Train pattern). Each epoch is reported to Tune (`epoch` is the
time attribute ASHA uses) after its checkpoint is written, so a trial ASHA stops loses nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raykd.config import build_experiment
from raykd.config.sweep import SweepConfig
from raykd.pipeline.lock import NodeLock
from raykd.pipeline.plan import make_plan
from raykd.pipeline.store import PACKAGES, NodeStore
from raykd.pipeline.task import NodeTask
from raykd.sweep import space

POLL_SECONDS = 1.0


@dataclass
class TrialSpec:
    """What every trial needs, shipped once to Tune (tune.with_parameters)."""

    raw: dict[str, Any]  # the experiment, bases merged and overrides applied, without its sweep section
    source: str | None
    sweep: SweepConfig
    sweep_name: str
    parent_run_id: str | None
    tracking_uri: str
    experiment: str  # MLflow experiment name
    storage: str
    request: tuple[int, float, float]  # (workers, CPUs, GPUs per worker), as the executor resolves them


_TRACKERS: dict[str, Any] = {}  # one MLflow client per tracking store per (reused) trial process


def _tracker(spec: TrialSpec):
    from raykd.tracking import Tracker

    if spec.tracking_uri not in _TRACKERS:
        _TRACKERS[spec.tracking_uri] = Tracker(spec.tracking_uri, spec.experiment, Path(spec.storage) / "mlartifacts")
    return _TRACKERS[spec.tracking_uri]


def run_trial(config: dict[str, Any], spec: TrialSpec) -> None:
    """Tune's function trainable (single-worker nodes run here; DDP nodes from here)."""
    from ray import tune

    started = time.time()
    values = space.complete(spec.sweep, config)
    exp = build_experiment(spec.raw, space.overrides(spec.sweep, values), spec.source)
    plan = make_plan(exp)
    pn = plan[space.node_name(spec.sweep, values)]
    store, lock = NodeStore(pn.dir), NodeLock(pn.dir)
    base = {"run_id": "", "node_dir": str(pn.dir), "config_key": space.config_key(values)}
    while not lock.try_acquire({"pipeline": f"{exp.name} sweep {spec.sweep_name}"}):
        time.sleep(POLL_SECONDS)  # another trial (or run) trains this very config: use what it makes
    try:
        if store.has_result() and store.check(deep=False) is None:  # trained before: its numbers, a run saying so
            result = store.result()
            run_id = _open_run(spec, pn, None, values, tune.get_context().get_trial_id(), result.get("run_id"))
            if run_id:
                _safe(_tracker(spec).log_metrics, run_id, _numbers(result), pn.node.train.epochs)
                _safe(_tracker(spec).finish, run_id, True)
            tune.report({**_numbers(result), "epoch": pn.node.train.epochs, **base, "run_id": run_id or "",
                         "cached": 1, "trial_seconds": time.time() - started})
            return
        if store.has_result():
            store.unfinish()
        run_id = _open_run(spec, pn, store, values, tune.get_context().get_trial_id())
        output = lambda parent, file="final.pt": str(plan[parent].dir / file) if parent else None
        task = NodeTask(name=pn.name, hash=pn.hash, node=pn.node, out_dir=str(pn.dir),
                        teacher_path=output(pn.node.teacher), init_path=output(pn.node.init),
                        dataset_path=output(pn.node.dataset, PACKAGES),
                        data_cache=str(Path(spec.storage) / "data_cache"), tracking_uri=spec.tracking_uri,
                        run_id=run_id)
        base["run_id"] = run_id or ""
        epochs = pn.node.train.epochs
        setup = time.time() - started

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            if epoch < epochs:  # the last epoch is reported once the node is finished and recorded
                tune.report({**metrics, "epoch": epoch, **base, "trial_setup_seconds": setup})

        result = _train(task, on_epoch, run_id, spec, {**base, "trial_setup_seconds": setup})
        history = list(result.get("history", []))
        from raykd.pipeline.run import record_finished

        recorded, _ = record_finished(_tracker(spec), run_id, pn, result, time.time() - started, _quiet,
                                      _safe, False)
    finally:
        lock.release()
    last = history[-1] if history else {}
    tune.report({**{k: v for k, v in last.items() if k != "epoch"}, **_numbers(recorded), "epoch": epochs, **base,
                 "cached": 0, "trial_setup_seconds": setup, "trial_seconds": time.time() - started})


def _train(task: NodeTask, on_epoch, run_id: str | None, spec: TrialSpec, extra: dict[str, Any]) -> dict[str, Any]:
    from raykd.pipeline.task import run_task

    try:
        if spec.request[0] > 1:  # DDP: a Ray Train run, as the executor launches one (Tune retries the trial)
            from raykd.pipeline.ray_train_run import launch

            result = launch(task, spec.request, str(Path(spec.storage) / "ray"), 0, report=extra)
            result.pop("_loop_start", None), result.pop("_loop_end", None)
            return result
        return run_task(task, log=_quiet, on_epoch=on_epoch)
    except SystemExit:  # Tune stopped the trial (ASHA): its checkpoint is on disk, its run says so
        _close(spec, run_id, "KILLED", {"raykd.stopped_early": "true"})
        raise
    except BaseException as e:
        _close(spec, run_id, "FAILED", {"raykd.error": str(e)[:5000]})
        raise


def _open_run(spec: TrialSpec, pn, store: NodeStore | None, values: dict[str, Any], trial_id: str,
              cached_from: str | None = None) -> str | None:
    """The trial's MLflow run, a child of the sweep's run: its sampled values as `sweep.<field>` params. A cached
    trial (no store given) gets a run of its own that points at the run that trained the node."""
    from raykd.pipeline.run import _node_params, _node_yaml

    if spec.parent_run_id is None:
        return None
    tracker = _tracker(spec)
    tags = {"raykd.pipeline": spec.raw.get("name", ""), "raykd.node": pn.name, "raykd.node_hash": pn.hash,
            "raykd.method": pn.node.method.name, "raykd.model": pn.node.model, "raykd.seed": str(pn.node.train.seed),
            "raykd.node_dir": str(pn.dir), "raykd.sweep": spec.sweep_name, "raykd.sweep_role": "trial",
            "raykd.trial": trial_id, "raykd.sweep_config": space.config_key(values),
            "mlflow.runName": f"{pn.name} [{space.config_key(values)}]"
                              + (f" seed {values[space.SEED]}" if space.SEED in values else ""),
            "mlflow.note.content": f"sweep '{spec.sweep_name}' trial {trial_id}: {pn.node.model} trained with "
                                   f"{pn.node.method.name}, {space.config_key(values)}; node folder {pn.dir}"}
    if store is None:
        tags.update({"raykd.cached": "true", "raykd.cached_from_run_id": cached_from or ""})
    run_id = store.run_id() if store is not None else None
    if run_id and _safe(tracker.reattach, run_id, spec.parent_run_id):
        _safe(tracker.set_tags, run_id, tags)
    else:
        params = {**_node_params(pn), **{f"sweep.{f}": v for f, v in values.items()}}
        run_id = _safe(tracker.create_child, spec.parent_run_id, tags["mlflow.runName"], tags, params)
        if run_id and store is not None:
            store.write_run_id(run_id, spec.tracking_uri)
    if store is not None:
        store.write_text("config.yaml", _node_yaml(pn))
    return run_id


def _close(spec: TrialSpec, run_id: str | None, status: str, tags: dict[str, str]) -> None:
    if run_id:
        tracker = _tracker(spec)
        _safe(tracker.set_tags, run_id, tags)
        _safe(tracker.client.set_terminated, run_id, status)


def _numbers(result: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


_WARNED: set[str] = set()


def _safe(fn, *args):
    """Tracking never stops a trial: an MLflow failure leaves the node's metrics spooled on disk (said once)."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        if type(e).__name__ not in _WARNED:
            _WARNED.add(type(e).__name__)
            print(f"raykd: a sweep trial's MLflow call failed ({type(e).__name__}: {str(e)[:300]}); training goes on")
        return None


def _quiet(*args, **kwargs) -> None:
    """Trials do not print their epochs: the driver shows a compact table of all of them."""
