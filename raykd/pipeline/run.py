"""Run an experiment's DAG: skip cached nodes, track every run in MLflow, register the final student.

The driver owns tracking: it creates the parent run and one child run per node to train (tagged
with its lineage), hands the run id to the executor, and when a node finishes logs its final
metrics, config, checkpoint and accuracy curve and closes the run.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raykd.config import Experiment
from raykd.data import check_data
from raykd.errors import ConfigError, RaykdError
from raykd.pipeline.lock import NodeLock, store_lock
from raykd.pipeline.plan import PlanNode, make_plan
from raykd.pipeline.store import PACKAGES, NodeStore
from raykd.pipeline.task import NodeTask
from raykd.plots import accuracy_curve
from raykd.tracking import PENDING, MetricLogger, Tracker, local_store_uri, relocate_store, resolve_uri


@dataclass
class NodeOutcome:
    name: str
    plan: PlanNode
    status: str  # trained | cached | failed | skipped
    result: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    seconds: float = 0.0
    error: str | None = None


@dataclass
class PipelineResult:
    experiment: str
    parent_run_id: str
    tracking_uri: str
    nodes: dict[str, NodeOutcome]
    registered: tuple[str, int] | None = None

    @property
    def ok(self) -> bool:
        return all(n.status in ("trained", "cached") for n in self.nodes.values())


def run_pipeline(exp: Experiment, executor: str = "ray", address: str | None = None, num_cpus: int | None = None,
                 log=print, only: set[str] | None = None) -> PipelineResult:
    """`only`: run just these nodes (a sweep's parents), which must include their own parents."""
    plan = {name: pn for name, pn in make_plan(exp).items() if only is None or name in only}
    storage = exp.storage
    check_storage(storage)
    for name, pn in plan.items():  # a wrong data path fails here, not minutes later in a worker
        check_data(pn.node.data, where=f"nodes.{name}.data")
    runner = _make_executor(executor, storage, address, num_cpus, log)
    runner.check({name: pn.node for name, pn in plan.items()})  # before anything is written
    storage.mkdir(parents=True, exist_ok=True)
    uri = resolve_uri(storage, exp.config.tracking.uri)
    with store_lock(storage):  # two runs starting on a new store would both create the MLflow tables
        if uri == local_store_uri(storage):  # the store's own database, which moves with it
            moved_from = relocate_store(storage)
            if moved_from:
                log(f"raykd: this store was copied or moved from '{moved_from}': its MLflow records now point "
                    f"at '{storage}'")
        tracker = Tracker(uri, exp.config.tracking.experiment or exp.name, storage / "mlartifacts")
        stale = tracker.close_stale(exp.name, socket.gethostname())
    if stale:
        log(f"raykd: marked {len(stale)} run(s) of an earlier, killed invocation as KILLED")
    source = {"mlflow.user": _user(), "mlflow.source.name": exp.source or "", "mlflow.source.type": "LOCAL"}
    parent_id = tracker.start_parent(
        f"{exp.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
        tags={"raykd.pipeline": exp.name, "raykd.executor": executor, "raykd.config_file": exp.source or "",
              "raykd.host": socket.gethostname(), "raykd.pid": str(os.getpid()), "raykd.user": _user(),
              "raykd.storage": str(storage), **source,
              "mlflow.note.content": f"raykd pipeline '{exp.name}' ({executor} executor): "
                                     + ", ".join(f"{n} ({pn.node.model}, {pn.node.method.name}"
                                                 + (f" from {pn.node.teacher})" if pn.node.teacher else ")")
                                                 for n, pn in plan.items())},
        params={"nodes": ",".join(plan), "final": exp.final, "executor": executor},
    )
    tracker.client.log_text(parent_id, exp.to_yaml(), "config.yaml")
    log(f"raykd: pipeline '{exp.name}' -> {storage}  (MLflow {uri}, experiment '{tracker.experiment}', "
        f"parent run {parent_id})")

    outcomes: dict[str, NodeOutcome] = {}
    tasks: dict[str, NodeTask] = {}
    finished = _verified_finished(plan, log)
    for name, pn in plan.items():
        store = NodeStore(pn.dir)
        if finished[name]:
            result = store.result()
            _upload_pending(uri, result.get("run_id"), pn.dir, name, log)
            outcomes[name] = NodeOutcome(name, pn, "cached", result, result.get("run_id"), result.get("seconds", 0.0))
            tracker.set_tags(parent_id, {f"raykd.node.{name}.run_id": result.get("run_id", "")})
            if result.get("run_id"):
                tracker.adopt_if_orphaned(result["run_id"], parent_id)
            log(f"raykd: node '{name}' is cached ({pn.dir.name}); not retraining")
            continue
        teacher, init = pn.node.teacher, pn.node.init
        outcomes[name] = NodeOutcome(name, pn, "pending")
        tasks[name] = NodeTask(
            name=name, hash=pn.hash, node=pn.node, out_dir=str(pn.dir),
            teacher_path=str(plan[teacher].dir / "final.pt") if teacher else None,
            init_path=str(plan[init].dir / "final.pt") if init else None,
            member_paths={m: str(plan[m].dir / "final.pt") for m in pn.node.members} or None,
            dataset_path=str(plan[pn.node.dataset].dir / PACKAGES) if pn.node.dataset else None,
            data_cache=str(storage / "data_cache"), tracking_uri=uri, run_id=None,
        )

    locks: dict[str, NodeLock] = {}
    told: set[str] = set()
    events = _Events(tracker, outcomes, log, None, None, locks)

    def claim(name: str) -> str:
        """Whether this run may start `name` now: 'run' (its lock is ours), 'wait' (another run is training
        it) or 'done' (another run finished it while we waited: it is reported as cached)."""
        o = outcomes[name]
        store = NodeStore(o.plan.dir)
        lock = locks.setdefault(name, NodeLock(o.plan.dir))
        if not lock.try_acquire({"pipeline": exp.name}):
            if name not in told:
                told.add(name)
                log(f"raykd: node '{name}' is being trained by {lock.holder()}; waiting to use its result")
            return "wait"
        if store.has_result() and store.check(deep=True) is None:  # finished by the run we waited for
            lock.release()
            result = store.result()
            o.status, o.result, o.run_id, o.seconds = "cached", result, result.get("run_id"), result.get("seconds", 0.0)
            events.safe(tracker.set_tags, parent_id, {f"raykd.node.{name}.run_id": result.get("run_id", "")})
            log(f"raykd: node '{name}' was trained by another run meanwhile ({o.plan.dir.name}); using it")
            return "done"
        if store.has_result():
            store.unfinish()
        run_id = store.run_id()  # an interrupted node continues its MLflow run
        if run_id and events.safe(tracker.reattach, run_id, parent_id):
            events.safe(tracker.set_tags, run_id, _node_tags(name, plan, outcomes, exp, source))
            events.safe(tracker.set_tags, parent_id, {f"raykd.node.{name}.run_id": run_id})
            o.run_id = tasks[name].run_id = run_id
            log(f"raykd: node '{name}' resumes (run {run_id})")
        store.write_text("config.yaml", _node_yaml(o.plan))
        return "run"

    def open_run(name: str) -> str:
        """The node's MLflow run, created as it starts (its parents' run ids are known by then)."""
        o = outcomes[name]
        if o.run_id is None:
            o.run_id = events.safe(tracker.create_child, parent_id, name,
                                   _node_tags(name, plan, outcomes, exp, source), _node_params(o.plan))
            if o.run_id is None:
                return None  # MLflow is down: the node trains untracked (its result is on disk all the same)
            NodeStore(o.plan.dir).write_run_id(o.run_id, uri)
            events.safe(tracker.set_tags, parent_id, {f"raykd.node.{name}.run_id": o.run_id})
            tasks[name].run_id = o.run_id  # only nodes to run are started or skipped
        return o.run_id

    events.open_run, events.claim = open_run, claim
    parents = {name: pn.parents for name, pn in plan.items()}
    ok = False
    try:
        if tasks:
            runner.execute(tasks, parents, events)
        ok = all(o.status in ("trained", "cached") for o in outcomes.values())
    except BaseException:
        for lock in locks.values():
            lock.release()
        for o in outcomes.values():
            if o.status in ("pending", "running") and o.run_id:
                events.safe(tracker.client.set_terminated, o.run_id, "KILLED")
        events.safe(tracker.client.set_terminated, parent_id, "KILLED")
        raise

    registered = None
    final = outcomes.get(exp.final)
    if final is not None and final.status in ("trained", "cached") and final.run_id:
        registered = events.safe(_register, tracker, exp, final, log)
    events.safe(tracker.finish, parent_id, ok)
    result = PipelineResult(exp.name, parent_id, uri, outcomes, registered)
    from raykd.pipeline.headline import log_pipeline_headlines

    # The parent run carries each node's headline numbers, the summary table and links to the nodes' runs, so
    # MLflow's experiment page compares the nodes at a glance (raykd/pipeline/headline.py). After finish: a
    # failure here (MLflow down) never leaves the parent RUNNING, and never fails the pipeline.
    events.safe(log_pipeline_headlines, tracker.client, result, tracker.experiment_id)
    return result


def _upload_pending(uri: str, run_id: str | None, node_dir: Path, name: str, log) -> None:
    """Metrics a finished node kept on disk while MLflow was down: uploaded now that it answers."""
    if not run_id or not (node_dir / PENDING).is_file():
        return
    logger = MetricLogger(uri, run_id, node_dir, log)
    try:
        n = logger.flush()
        logger.client.set_terminated(run_id, "FINISHED")  # the node finished; MLflow could not be told then
    except Exception:  # noqa: BLE001 - still down: they wait for the next run
        return
    log(f"raykd: node '{name}': uploaded {n} set(s) of metrics MLflow had missed")


def check_storage(storage: Path) -> None:
    """The storage must be a folder this process can write (checked before anything trains, so a file or a
    read-only mount is a sentence, not a traceback after the first epoch or MLflow's minutes of retries)."""
    existing = storage
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == storage else f"cannot be created: '{existing}' is a file"
        raise ConfigError(f"storage: '{storage}' {what}; storage names a folder (it is created if missing).")
    probe = existing / f".raykd-write-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise ConfigError(f"storage: '{storage}' cannot be written here ({e.strerror or e} in '{existing}'); "
                          f"choose a folder you can write, e.g. storage=~/raykd-runs.") from None


def _verified_finished(plan: dict[str, PlanNode], log) -> dict[str, bool]:
    """Which nodes are finished and may be trusted: every finished node's output has its recorded size, and
    every output a node of this run will read (a parent of a node to train, found until nothing changes)
    its recorded sha256. A node that fails is marked unfinished, so it trains again, saying why."""
    finished = {name: NodeStore(pn.dir).has_result() for name, pn in plan.items()}
    stale: dict[str, str] = {}

    def check(name: str, deep: bool) -> None:
        problem = NodeStore(plan[name].dir).check(deep)
        if problem:
            stale[name], finished[name] = problem, False

    for name in plan:
        if finished[name]:
            check(name, deep=False)
    hashed: set[str] = set()
    while True:
        readers = list(dict.fromkeys(p for name, pn in plan.items() if not finished[name] for p in pn.parents
                                     if finished[p] and p not in hashed))
        if not readers:
            break
        for p in readers:
            hashed.add(p)
            check(p, deep=True)
    for name, problem in stale.items():
        log(f"raykd: node '{name}' had finished, but {problem}: it is trained again (from its checkpoint where "
            f"that is intact)")
        NodeStore(plan[name].dir).unfinish()
    return finished


class _Events:
    def __init__(self, tracker: Tracker, outcomes: dict[str, NodeOutcome], log, open_run, claim, locks):
        self.tracker, self.outcomes, self.log, self.open_run = tracker, outcomes, log, open_run
        self.claim, self.locks = claim, locks
        self.started: dict[str, float] = {}
        self.tracking_down = False

    def _release(self, name: str) -> None:
        if name in self.locks:
            self.locks[name].release()

    def safe(self, fn, *args):
        """A tracking call that must not stop the pipeline: on failure say so once and return None; once MLflow
        has failed in this run, later calls are skipped rather than each waiting on its retries."""
        if self.tracking_down:
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - MLflow down or failing: training and results go on
            if not self.tracking_down:
                self.tracking_down = True
                self.log(f"raykd: MLflow at {self.tracker.uri} failed ({type(e).__name__}: {str(e)[:200]}); training "
                         f"goes on, results are on disk, and metrics MLflow missed are uploaded by a later run")
            return None

    def on_start(self, name: str) -> None:
        self.open_run(name)
        self.started[name] = time.time()
        self.outcomes[name].status = "running"
        self.log(f"raykd: node '{name}' started")

    def on_done(self, name: str, result: dict[str, Any]) -> None:
        o = self.outcomes[name]
        o.seconds = time.time() - self.started.get(name, time.time())
        try:
            o.result, self.tracking_down = record_finished(self.tracker, o.run_id, o.plan, result, o.seconds,
                                                           self.log, self.safe, self.tracking_down)
        finally:
            self._release(name)
        o.status = "trained"
        outcome = f"test top-1 {result['test/top1']:.2f}%" if "test/top1" in result else \
            ", ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in result.items() if isinstance(v, float))
        self.log(f"raykd: node '{name}' finished in {o.seconds:.0f}s: {outcome}")

    def on_fail(self, name: str, error: BaseException) -> None:
        o = self.outcomes[name]
        skipped = str(error).startswith("skipped:")
        o.status = "skipped" if skipped else "failed"
        o.error = str(error)
        self._release(name)
        self.open_run(name)  # a skipped node gets its (killed) run too, so MLflow shows why
        if o.run_id:
            self.safe(self.tracker.client.set_tag, o.run_id, "raykd.error", str(error)[:5000])
            self.safe(self.tracker.client.set_terminated, o.run_id, "KILLED" if skipped else "FAILED")
        self.log(f"raykd: node '{name}' {o.status}: {error}")


def record_finished(tracker: Tracker, run_id: str | None, pn: PlanNode, result: dict[str, Any], seconds: float,
                    log, safe, tracking_down: bool) -> tuple[dict[str, Any], bool]:
    """A trained node's end: its summary metrics, accuracy curve, config and checkpoint logged to its run, the run
    closed, and result.json written last (so the node is finished even if tracking hiccuped). Returns the
    recorded result and whether MLflow is (now) down. Shared by the pipeline and the sweeps' trials."""
    history = result.pop("history", [])
    recorded = {**result, "run_id": run_id, "seconds": seconds}
    store = NodeStore(pn.dir)
    recorded["output"] = store.fingerprint()
    try:
        skip = (set(history[0]) if history else set()) | {"epochs"}  # already logged per epoch
        summary = {k: v for k, v in result.items() if isinstance(v, (int, float)) and k not in skip}
        curve = accuracy_curve(history, pn.dir / "accuracy.png",
                               title=f"{pn.name} ({pn.node.model}, {pn.node.method.name})") if history else None
        if run_id:
            logger = MetricLogger(tracker.uri, run_id, pn.dir, log)  # keeps on disk what MLflow refuses
            summary = {**summary, "wall_seconds": seconds}
            if tracking_down:
                logger.keep(summary, result.get("epochs", 0))
            else:
                logger.log_metrics(summary, result.get("epochs", 0))
                tracking_down = logger.failed
            for path, sub in ((curve, None), (pn.dir / "config.yaml", None),
                              (store.final if store.final.is_file() else None, "checkpoint")):
                if path is not None:
                    safe(tracker.log_artifact, run_id, path, sub)
            safe(tracker.finish, run_id, True)
    finally:
        store.write_result(recorded)
    return recorded, tracking_down


def _node_tags(name: str, plan, outcomes: dict[str, NodeOutcome], exp: Experiment, source: dict[str, str]) -> dict[str, str]:
    """Lineage tags of a node's run: its config's identity and its parents' nodes, hashes and runs."""
    pn = plan[name]
    teacher = pn.node.teacher
    teacher_run = outcomes[teacher].run_id if teacher else None
    tags = {
        "raykd.pipeline": exp.name, "raykd.node": name, "raykd.node_hash": pn.hash,
        "raykd.method": pn.node.method.name, "raykd.model": pn.node.model,
        "raykd.seed": str(pn.node.train.seed), "raykd.parents": ",".join(pn.parents),
        "raykd.node_dir": str(pn.dir), "mlflow.runName": name, **source,
        "mlflow.note.content": f"{pn.node.model} trained with {pn.node.method.name}"
                               + (f" from teacher node '{teacher}' (run {teacher_run})" if teacher else "")
                               + f"; node folder {pn.dir}",
    }
    if teacher:
        tags.update({"raykd.teacher_node": teacher, "raykd.teacher_run_id": teacher_run or "",
                     "raykd.teacher_hash": plan[teacher].hash})
    if pn.node.seed_group:
        tags["raykd.seed_group"] = pn.node.seed_group
    if pn.node.branch:
        tags.update({"raykd.branch": pn.node.branch, "raykd.cascade_level": str(pn.node.level)})
    if pn.node.members:
        tags.update({"raykd.members": ",".join(pn.node.members),
                     "raykd.member_run_ids": ",".join(outcomes[m].run_id or "" for m in pn.node.members)})
        tags["mlflow.note.content"] = f"{pn.node.method.name} of {', '.join(pn.node.members)}; node folder {pn.dir}"
    for role, parent in (("dataset", pn.node.dataset), ("init", pn.node.init)):
        if parent:
            tags.update({f"raykd.{role}_node": parent, f"raykd.{role}_run_id": outcomes[parent].run_id or "",
                         f"raykd.{role}_hash": plan[parent].hash})
    return tags


def _register(tracker: Tracker, exp: Experiment, final: NodeOutcome, log) -> tuple[str, int] | None:
    from raykd.engine import load_student

    name = exp.config.tracking.register_as or f"{exp.name}-{final.name}"
    with store_lock(exp.storage):  # two runs of one pipeline must not both register the node
        existing = tracker.registered_from(name, final.run_id)
        if existing is not None:
            return name, existing
        model, _ = load_student(NodeStore(final.plan.dir).final)
        version = tracker.register_student(final.run_id, model, name)
    log(f"raykd: registered '{final.name}' as MLflow model '{name}' version {version} (alias @final)")
    return name, version


def _make_executor(kind: str, storage: Path, address, num_cpus, log):
    if kind == "local":
        from raykd.pipeline.local import LocalExecutor

        return LocalExecutor(log=log)
    if kind == "ray":
        from raykd.pipeline.ray_executor import RayExecutor

        return RayExecutor(str(storage / "ray"), address=address, num_cpus=num_cpus, log=log)
    raise RaykdError(f"unknown executor '{kind}': use 'ray' or 'local'.")


def _node_params(pn: PlanNode) -> dict[str, Any]:
    n = pn.node
    return {
        "model": n.model, "model_kwargs": n.model_kwargs or "{}", "teacher": n.teacher or "",
        **({"members": ",".join(n.members)} if n.members else {}),
        "method": n.method.model_dump(mode="json"), "train": n.train.model_dump(mode="json"),
        "data": n.data.model_dump(mode="json"), "resources": n.resources.model_dump(mode="json"),
    }


def _node_yaml(pn: PlanNode) -> str:
    import yaml

    return yaml.safe_dump({"node": pn.name, "hash": pn.hash, **_node_params(pn)}, sort_keys=False)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def install_sigterm_handler() -> None:
    """Turn SIGTERM (ray job stop, kill) into KeyboardInterrupt so runs are marked KILLED."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
