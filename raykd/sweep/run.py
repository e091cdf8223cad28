"""`raykd tune`: train the tuned node's parents once, search its space with Ray Tune, record every trial in MLflow
under one sweep run, write what was found (CSV, figure, best config as YAML), and optionally retrain the best
config as an ordinary node of the pipeline.

The sweep lives in storage/sweeps/<experiment>-<node>-<hash of the sweep and the node's parents>/; running the
same command again restores Tune's state there (finished trials are not re-run, unfinished ones resume
from their epoch checkpoints), and a trial whose config was trained before is a cached node.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raykd.config import apply_override, build_experiment
from raykd.config.loading import _read_with_bases
from raykd.errors import ConfigError, RaykdError
from raykd.pipeline.plan import make_plan
from raykd.sweep import space
from raykd.sweep.results import TrialRow, best_config, by_config, complete_rows, rows_from, write_best_yaml, write_csv

PARENT = "sweep_run.json"
TRIAL_CPU = 0.01  # what a DDP trial's Tune process holds beside its Ray Train workers (Ray's Tune + Train pattern)


@dataclass
class SweepResult:
    name: str
    folder: Path
    rows: list[TrialRow]
    best_key: str | None
    parent_run_id: str | None
    tracking_uri: str
    files: dict[str, Path]
    retrained: Any = None  # the PipelineResult of `then: {retrain: true}`
    mode: str = "max"


def load_sweep(path: str | os.PathLike, overrides=()):
    """The experiment (with its sweep) and the raw dict trials are built from, every override applied."""
    path = Path(path)
    if not path.is_file():
        from raykd.config import load_experiment

        load_experiment(path)  # raises the usual 'not found, did you mean' error
    raw = _read_with_bases(path, ())
    raw.setdefault("name", path.stem)
    for item in overrides:
        apply_override(raw, item)
    _absolute_paths(raw)
    exp = build_experiment(raw, (), source=str(path))
    sweep = exp.config.sweep
    if sweep is None:
        raise ConfigError(f"'{path}' has no 'sweep:' section, so there is nothing to tune. Add one (see "
                          f"conf/sweeps/digits_kd.yaml), or train it as it is with `raykd run {path}`.")
    return exp, raw


def _absolute_paths(raw: dict[str, Any]) -> None:
    """Storage and data roots as absolute paths: trials run in Tune's actors, whose working directory is not
    this one, and best.yaml is run from wherever the user stands."""
    if isinstance(raw.get("storage", "runs"), str):
        raw["storage"] = str(Path(raw.get("storage", "runs")).expanduser().resolve())
    sections = [raw.get("data")] + [n.get("data") for n in (raw.get("nodes") or {}).values() if isinstance(n, dict)]
    for data in sections:
        if isinstance(data, dict) and isinstance(data.get("root"), str):
            data["root"] = str(Path(data["root"]).expanduser().resolve())


def prepare(exp, raw: dict[str, Any]):
    """Check the tuned node and every config the space can produce; returns (sweep, trial raw, count checked)."""
    sweep = exp.config.sweep
    node_raw = raw["nodes"][sweep.node]
    if node_raw.get("cascade") or node_raw.get("members"):
        kind = "a cascade" if node_raw.get("cascade") else "an integration of finished students"
        raise ConfigError(f"sweep.node: '{sweep.node}' is {kind}; a sweep tunes one training node (tune a "
                          f"cascade's links as nodes of their own).")
    if node_raw.get("method", {}).get("name") == "packages":
        raise ConfigError(f"sweep.node: '{sweep.node}' builds video packages; a sweep tunes a training node.")
    trial_raw = _trial_raw(raw, sweep.node)
    seeds = sweep.seeds
    if node_raw.get("seeds") is not None:  # a seeded node: its seeds are the sweep's replicates
        seeds = seeds or node_raw["seeds"]
        trial_raw["nodes"][sweep.node].pop("seeds")
    if seeds != sweep.seeds:
        sweep = sweep.model_copy(update={"seeds": seeds})
    if sweep.search == "grid":
        sampled = [f for f, d in space.free(sweep).items() if d.values is None]
        if sampled:
            raise ConfigError(f"sweep.search: 'grid' tries every combination, so every field needs a list of "
                              f"values (grid: or choice:), but {', '.join(sampled)} is a range; use search: random.")
    if sweep.search == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ConfigError("sweep.search: 'optuna' needs the optuna package: pip install 'raykd[optuna]' (or "
                              "use search: random, with scheduler: asha, or grid).") from None
        if sweep.seeds:
            raise ConfigError("sweep.seeds: Optuna proposes one config per trial, so it cannot replicate each over "
                              "seeds; use search: random or grid for replicates (or sweep without seeds).")
    if space.SEED in space.fields(sweep) and sweep.seeds:
        raise ConfigError("sweep: give replicates with 'seeds: [...]' or sweep train.seed, not both.")
    if sweep.seeds:
        trial_raw["nodes"][sweep.node].get("train", {}).pop("seed", None)  # each replicate sets its own
    checked = space.check(sweep, lambda ovs: build_experiment(trial_raw, ovs, exp.source))
    return sweep, trial_raw, checked


def _trial_raw(raw: dict[str, Any], node: str) -> dict[str, Any]:
    """What a trial's experiment is built from: the tuned node and its ancestors only (other nodes, which may
    learn from it, are the retrained pipeline's business), without the sweep, `final` or registration."""
    keep, todo = set(), [node]
    while todo:
        name = todo.pop()
        if name in keep or name not in raw["nodes"]:
            continue
        keep.add(name)
        n = raw["nodes"][name] or {}
        todo.extend(r for r in (n.get("teacher"), n.get("init"), n.get("dataset"), *(n.get("members") or ())) if r)
    out = {k: copy.deepcopy(v) for k, v in raw.items() if k not in ("sweep", "final", "nodes")}
    out["nodes"] = {k: copy.deepcopy(v) for k, v in raw["nodes"].items() if k in keep}
    out.get("tracking", {}).pop("register_as", None)
    return out


def sweep_folder(exp, sweep, plan) -> Path:
    """Named by the sweep, the tuned node and its parents' hashes (`plan`: the trials' experiment's)."""
    pn = plan[sweep.node]
    ident = {"sweep": sweep.model_dump(mode="json", exclude={"then", "max_concurrent_trials"}),
             "parents": [plan[p].hash for p in pn.parents],
             "node": {k: v for k, v in pn.node.semantic_dict().items()}}
    h = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return exp.storage / "sweeps" / f"{exp.name}-{sweep.node}-{h}"


def run_sweep(path: str, overrides=(), address: str | None = None, num_cpus: int | None = None,
              log=print) -> SweepResult:
    from raykd.pipeline.lock import store_lock
    from raykd.pipeline.ray_executor import check_feasible, ensure_ray, worker_request
    from raykd.pipeline.run import check_storage, run_pipeline
    from raykd.tracking import Tracker, resolve_uri

    exp, raw = load_sweep(path, overrides)
    sweep, trial_raw, checked = prepare(exp, raw)
    base = build_experiment(trial_raw, (), exp.source)
    plan = make_plan(base)
    name = sweep.node
    check_storage(exp.storage)
    folder = sweep_folder(exp, sweep, plan)
    tuned = plan[name].node
    log(f"raykd tune: {len(sweep.space)} field(s) of node '{name}' ({', '.join(space.fields(sweep))}); "
        f"{checked} config(s) of the space checked; sweep folder {folder}")

    parents = set(plan) - {name}  # the trials' experiment holds the tuned node and its ancestors only
    if parents:
        log(f"raykd tune: training the tuned node's parents once ({', '.join(p for p in plan if p in parents)})")
        pre = run_pipeline(base, executor="ray", address=address, num_cpus=num_cpus, log=log, only=parents)
        if not pre.ok:
            failed = [n for n, o in pre.nodes.items() if o.status not in ("trained", "cached")]
            raise RaykdError(f"the tuned node's parent(s) {', '.join(failed)} did not finish, so no trial was "
                             f"started: {'; '.join(pre.nodes[n].error or '' for n in failed)}")
    ensure_ray(address, num_cpus)
    check_feasible({name: tuned})
    import ray

    workers, cpus, gpus = worker_request(tuned, ray.cluster_resources().get("GPU", 0))
    total_cpu = ray.cluster_resources().get("CPU", 0)
    if workers > 1 and workers * cpus + TRIAL_CPU > total_cpu + 1e-9:
        raise RaykdError(f"node '{name}' asks for {workers} workers x {cpus:g} CPU = {workers * cpus:g} CPU, and a "
                         f"DDP trial's Tune process holds {TRIAL_CPU} CPU more, but the cluster has {total_cpu:g} CPU: "
                         f"lower nodes.{name}.resources.cpus_per_worker (e.g. {max(0.1, (total_cpu - 0.1) / workers):.1f}).")
    folder.mkdir(parents=True, exist_ok=True)
    uri = resolve_uri(exp.storage, exp.config.tracking.uri)
    with store_lock(exp.storage):
        tracker = Tracker(uri, exp.config.tracking.experiment or exp.name, exp.storage / "mlartifacts")
    parent_id = _sweep_run(tracker, folder, exp, sweep, name)
    sweep_name = folder.name

    from raykd.sweep.trial import TrialSpec

    spec = TrialSpec(raw=trial_raw, source=exp.source, sweep=sweep, sweep_name=sweep_name, parent_run_id=parent_id,
                     tracking_uri=uri, experiment=tracker.experiment, storage=str(exp.storage),
                     request=(workers, cpus, gpus))
    try:
        results = _tune(spec, folder, tuned, log)
    except BaseException:
        _safe(tracker.client.set_terminated, parent_id, "KILLED")
        raise
    rows = rows_from(results, sweep.metric, tuned.train.epochs)
    complete_rows(sweep, rows)
    best = best_config(rows, sweep.mode)
    files = _write(folder, rows, sweep, best, raw, sweep_name)
    _track(tracker, parent_id, rows, best, sweep, files)
    result = SweepResult(sweep_name, folder, rows, best[0] if best else None, parent_id, uri, files, mode=sweep.mode)
    if sweep.then.retrain and best:
        log(f"raykd tune: retraining the best config ({best[0]}) as node '{name}' of the pipeline")
        from raykd.config import load_experiment

        retrain = load_experiment(files["best_yaml"])
        result.retrained = run_pipeline(retrain, executor="ray", address=address, num_cpus=num_cpus, log=log)
        for o in result.retrained.nodes.values():
            if (o.plan.node.seed_group or o.name) == name and o.run_id:
                _safe(tracker.set_tags, o.run_id, {"raykd.sweep_from": sweep_name, "raykd.sweep_run_id": parent_id})
    _safe(tracker.finish, parent_id, bool(best))
    return result


def _sweep_run(tracker, folder: Path, exp, sweep, node: str) -> str:
    """The sweep's MLflow run: created once, continued when the sweep resumes."""
    marker = folder / PARENT
    if marker.is_file():
        run_id = json.loads(marker.read_text()).get("run_id")
        if run_id and tracker.run_exists(run_id):
            tracker.client.update_run(run_id, status="RUNNING")
            return run_id
    space_text = ", ".join(f"{k}: {d.model_dump(exclude_none=True)}" for k, d in sweep.space.items())
    run_id = tracker.start_parent(
        f"sweep {node} {time.strftime('%Y-%m-%d %H:%M:%S')}",
        tags={"raykd.pipeline": exp.name, "raykd.sweep": folder.name, "raykd.sweep_role": "parent",
              "raykd.sweep_node": node, "raykd.host": socket.gethostname(), "raykd.pid": str(os.getpid()),
              "raykd.storage": str(exp.storage), "raykd.config_file": exp.source or "",
              "mlflow.note.content": f"raykd sweep of node '{node}' over {space_text}; metric {sweep.metric} "
                                     f"({sweep.mode}), search {sweep.search}, scheduler {sweep.scheduler}."},
        params={"sweep": sweep.model_dump(mode="json", exclude_none=True)})
    marker.write_text(json.dumps({"run_id": run_id}))
    return run_id


def _tune(spec, folder: Path, tuned, log):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from raykd.sweep.progress import TrialTable
    from raykd.sweep.trial import run_trial

    sweep = spec.sweep
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no boxes; our table is the progress view
    workers, cpus, gpus = spec.request
    if workers > 1:  # the trial only launches a Ray Train run, which holds the real resources
        resources: dict[str, float] = {"cpu": TRIAL_CPU}
    else:
        resources = {"cpu": cpus, **({"gpu": gpus} if gpus else {})}
    trainable = tune.with_resources(tune.with_parameters(run_trial, spec=spec), resources)
    epochs = tuned.train.epochs
    scheduler = ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=min(sweep.grace_period, epochs),
                              reduction_factor=sweep.reduction_factor) if sweep.scheduler == "asha" else FIFOScheduler()
    table = TrialTable(sweep.metric, epochs, log)
    run_config = tune.RunConfig(name="tune", storage_path=str(folder), verbose=0, callbacks=[table],
                                failure_config=tune.FailureConfig(max_failures=tuned.resources.max_failures))
    path = folder / "tune"
    tuner = None
    if tune.Tuner.can_restore(str(path)):
        try:
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
            log(f"raykd tune: resuming the sweep in {folder} (finished trials are kept)")
        except Exception as e:  # noqa: BLE001 - a state file cut short by a kill: start Tune afresh
            aside = path.with_name(f"tune.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(aside)
            log(f"raykd tune: Tune's saved state could not be read ({type(e).__name__}); it is kept in {aside} and "
                f"the search starts again (trials that finished are cached nodes and are not retrained)")
    if tuner is None:
        tuner = tune.Tuner(
            trainable, param_space=space.tune_space(sweep),
            tune_config=tune.TuneConfig(
                metric=sweep.metric, mode=sweep.mode, scheduler=scheduler,
                num_samples=1 if sweep.search == "grid" else sweep.num_samples,
                reuse_actors=True, search_alg=_searcher(sweep)),
            run_config=run_config)
    import logging

    quiet = [logging.getLogger(n) for n in ("ray.tune.execution.tune_controller", "ray.tune.tune")]
    levels = [q.level for q in quiet]
    for q in quiet:  # a failed trial's traceback: its cause is printed once, in the summary
        q.setLevel(logging.CRITICAL)
    try:
        return tuner.fit()
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def _searcher(sweep):
    """Tune's own searchers: random/grid sampling (seeded: the same command draws the same configs) or Optuna's TPE."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if sweep.search != "optuna":
        return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.max_concurrent_trials or 0)
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(metric=sweep.metric, mode=sweep.mode, seed=sweep.seed)
    return ConcurrencyLimiter(searcher, sweep.max_concurrent_trials) if sweep.max_concurrent_trials else searcher


def _write(folder: Path, rows, sweep, best, raw, sweep_name: str) -> dict[str, Path]:
    from raykd.sweep.plots import sweep_plot

    files = {"csv": write_csv(rows, folder / "results.csv", sweep.metric)}
    axes = list(space.free(sweep))
    grids = {f: d.values for f, d in space.free(sweep).items() if d.values is not None}
    figure = sweep_plot(rows, axes, sweep.metric, folder / "sweep.png",
                        f"{sweep_name}: {sweep.metric} ({'mean over seeds' if sweep.seeds else 'per trial'})", grids)
    if figure:
        files["plot"] = figure
    if best:
        key, trials = best
        files["best_yaml"] = write_best_yaml(
            raw, sweep.node, trials[0].values, sweep.then.seeds, folder / "best.yaml",
            f"The best config of sweep {sweep_name}: {key} ({sweep.metric} "
            f"{statistics.mean(t.metric for t in trials):.2f}, mean of {len(trials)}). Run: raykd run <this file>")
    return files


def _track(tracker, parent_id: str, rows: list[TrialRow], best, sweep, files: dict[str, Path]) -> None:
    """Tag the best trials, give the sweep run each config's headline number and its files."""
    best_runs = {r.run_id for r in best[1]} if best else set()
    for r in rows:
        if r.run_id and r.status == "stopped":
            _safe(tracker.set_tags, r.run_id, {"raykd.stopped_early": f"epoch {r.epochs}"})
            _safe(tracker.client.set_terminated, r.run_id, "KILLED")
        if r.run_id:
            _safe(tracker.set_tags, r.run_id, {"raykd.best": str(r.run_id in best_runs).lower()})
    from raykd.pipeline.headline import log_headlines, metric_key

    metrics: dict[str, float] = {}
    heads: dict[str, dict[str, Any]] = {}
    for key, trials in by_config(rows).items():
        ok = [t for t in trials if t.finished]
        label = key or "(base config)"
        if ok:
            metrics[metric_key(sweep.metric.replace("/", "_"), label)] = round(statistics.mean(t.metric for t in ok), 2)
        tests = [t.test_top1 for t in ok if t.test_top1 is not None]
        m = ok[0].metrics if ok else {}
        heads[label] = {"test_top1": statistics.mean(tests) if tests else None, "best_test_top1": None,
                        "latency_ms": m.get("latency_ms"), "params_m": m["params"] / 1e6 if "params" in m else None,
                        "run_id": (ok or trials)[0].run_id, "method": sweep.metric + " " +
                        (f"{statistics.mean(t.metric for t in ok):.2f}" if ok else "-"), "model": "-",
                        "from": f"{len(ok)}/{len(trials)} trials", "status": "/".join(sorted({t.status for t in trials}))}
    if best:
        metrics[f"best/{sweep.metric}"] = statistics.mean(t.metric for t in best[1])
        _safe(tracker.set_tags, parent_id, {"raykd.best_config": best[0],
                                            "raykd.best_run_ids": ",".join(sorted(best_runs))})
    if metrics:
        _safe(tracker.log_metrics, parent_id, metrics, 0)
    from raykd.sweep.summary import format_rows

    _safe(log_headlines, tracker.client, parent_id, tracker.experiment_id, heads, format_rows(rows, best[0] if best else None, sweep.mode),
          f"raykd sweep of '{sweep.node}' ({len(rows)} trials; best {best[0] if best else 'none'})", False)
    for path in files.values():
        _safe(tracker.log_artifact, parent_id, path, None)


def _safe(fn, *args):
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - tracking never loses a finished sweep's files
        return None
