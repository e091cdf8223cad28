"""MLflow tracking: one experiment per pipeline, a parent run per invocation, a child per node.

The driver creates every run (`MlflowClient.create_run`) and sets its final status; workers
attach by run id and only log metrics, so lineage survives retries and crosses processes
(`nested=True` does not). The default store is an absolute sqlite file under the storage path,
created once by the driver before any worker touches it; `MLFLOW_TRACKING_URI` wins when set.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from raykd.errors import RaykdError


def resolve_uri(storage: Path, configured: str | None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or local_store_uri(storage)


def local_store_uri(storage: Path) -> str:
    """The store's own MLflow database (used when no tracking server is configured)."""
    return f"sqlite:///{(Path(storage).resolve() / 'mlflow.db').as_posix()}"


def relocate_store(storage: Path) -> str | None:
    """Make a copied or moved store's own MLflow database point at where the store is now. MLflow records
    absolute artifact locations (experiments, runs, model versions, logged models), so a copy would
    otherwise keep writing into, and reading from, the original folder. Returns the old folder, or None
    when the store is where it was made (or has no database yet)."""
    import sqlite3

    db = Path(storage) / "mlflow.db"
    if not db.is_file():
        return None
    here = Path(storage).resolve()
    new_root = (here / "mlartifacts").as_uri()
    con = sqlite3.connect(db, timeout=60)
    try:
        try:
            rows = con.execute("SELECT artifact_location FROM experiments").fetchall()
        except sqlite3.DatabaseError:
            return None
        olds = {loc[: loc.index("/mlartifacts") + len("/mlartifacts")] for (loc,) in rows
                if loc and loc.startswith("file://") and "/mlartifacts" in loc} - {new_root}
        if len(olds) != 1:
            return None  # in place, or not a store raykd laid out: leave it alone
        old_root = olds.pop()
        old_dir = old_root[len("file://"): -len("/mlartifacts")]
        columns = {t: {r[1] for r in con.execute(f"PRAGMA table_info({t})")} for t in
                   ("experiments", "runs", "model_versions", "logged_models", "tags")}
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                              ("model_versions", "storage_location"), ("logged_models", "artifact_location")):
            if column in columns[table]:
                con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                            f"WHERE substr({column}, 1, ?) = ?", (new_root, len(old_root) + 1, len(old_root), old_root))
        if "value" in columns["tags"]:
            con.execute("UPDATE tags SET value = ? || substr(value, ?) WHERE key IN ('raykd.node_dir', 'raykd.storage') "
                        "AND substr(value, 1, ?) = ?", (str(here), len(old_dir) + 1, len(old_dir), old_dir))
        con.commit()
        return old_dir
    finally:
        con.close()


@contextlib.contextmanager
def fluent_uri(uri: str):
    """Point MLflow's global (fluent) API at `uri` for one block, then restore what was there,
    environment variables included."""
    import mlflow

    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


PENDING = "mlflow-pending.jsonl"  # in a node's folder: metrics MLflow did not take yet, uploaded later
RETRY_SECONDS = 60.0  # after a failed upload, how long to keep metrics on disk before asking MLflow again

# MLflow's HTTP client retries a dead server for minutes per call by default; raykd keeps what it could
# not upload on disk instead, so a call may give up quickly. Users can still set these themselves.
for _k, _v in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}.items():
    os.environ.setdefault(_k, _v)


SERVER_ADVICE = ("nothing was trained. Start it, or point MLFLOW_TRACKING_URI / tracking.uri at one that runs (unset "
                 "both to use the store's own database).")


def check_server(uri: str, timeout: float = 5.0, advice: str = SERVER_ADVICE) -> None:
    """An HTTP tracking server must answer within seconds, before anything trains or is read (MLflow's own
    client would retry for minutes first, then fail with a traceback); `advice` ends the error."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise RaykdError(f"the MLflow tracking server at {uri} does not answer ({reason}); {advice}") from None


class MetricLogger:
    """What a worker holds: a client and a run id. Picklable, so Ray can ship it.

    A metric upload that fails never fails training: the metrics are appended to the node folder's
    `mlflow-pending.jsonl` (with a warning, once), and uploaded, in order, by the next upload that
    succeeds, by the driver when the node is done, or by the next run that finds the node cached."""

    def __init__(self, uri: str, run_id: str, spool_dir: Path | str | None = None, log=print):
        self.uri, self.run_id, self.log = uri, run_id, log
        self.spool = Path(spool_dir) / PENDING if spool_dir is not None else None
        self._client = None
        self._failed_at: float | None = None

    def __getstate__(self):
        return {**self.__dict__, "_client": None, "log": print}

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.uri)
        return self._client

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.spool is None:
            return self._upload(metrics, step)
        if self._failed_at is not None and time.time() - self._failed_at < RETRY_SECONDS:
            return self.keep(metrics, step)
        try:
            self.flush()
            self._upload(metrics, step)
            self._failed_at = None
        except Exception as e:  # noqa: BLE001 - any tracking failure: keep the metrics, never fail training
            if self._failed_at is None:
                self.log(f"raykd: MLflow at {self.uri} did not take this node's metrics ({type(e).__name__}); "
                         f"training goes on and they are kept in {self.spool} until it answers")
            self._failed_at = time.time()
            self.keep(metrics, step)

    @property
    def failed(self) -> bool:
        """Whether the last upload failed (what it carried is kept on disk)."""
        return self._failed_at is not None

    def flush(self) -> int:
        """Upload what was kept on disk (raises if MLflow still fails); returns how many epochs went up."""
        if self.spool is None or not self.spool.is_file():
            return 0
        lines = [json.loads(line) for line in self.spool.read_text().splitlines() if line.strip()]
        for entry in lines:
            self._upload(entry["metrics"], entry["step"], entry.get("time"))
        self.spool.unlink()
        return len(lines)

    def replay(self, history: list[dict[str, Any]], key: str = "train/loss") -> None:
        """After a resume: log the epochs of `history` MLflow does not have yet (a run stopped between
        writing its checkpoint and logging that epoch's metrics)."""
        try:
            logged = {m.step for m in self.client.get_metric_history(self.run_id, _clean(key))}
        except Exception:  # noqa: BLE001
            return
        for h in history:
            if h["epoch"] not in logged:
                self.log_metrics({k: v for k, v in h.items() if k != "epoch"}, h["epoch"])

    def _upload(self, metrics: dict[str, float], step: int, at: int | None = None) -> None:
        from mlflow.entities import Metric

        now = at or int(time.time() * 1000)
        batch = [Metric(_clean(k), float(v), now, step) for k, v in metrics.items() if _is_number(v)]
        for i in range(0, len(batch), 900):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 900])

    def keep(self, metrics: dict[str, float], step: int) -> None:
        entry = {"step": step, "time": int(time.time() * 1000),
                 "metrics": {k: float(v) for k, v in metrics.items() if _is_number(v)}}
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spool, "a") as f:
            f.write(json.dumps(entry) + "\n")


class Tracker:
    """Driver-side: creates the experiment, parent and child runs, logs artifacts, registers."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path):
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # schema-creation chatter
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.uri = uri
        check_server(uri)
        # No mlflow.set_tracking_uri here: MLflow 3 also exports it as $MLFLOW_TRACKING_URI, which
        # would leak this store into every later pipeline of the process (see fluent_uri).
        self.client = MlflowClient(uri, registry_uri=uri)
        try:
            exp = self.client.get_experiment_by_name(experiment)  # creates the sqlite schema once
            if exp is None:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=Path(artifact_root).resolve().as_uri()
                    if "://" not in uri or uri.startswith("sqlite") else None)
            else:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                self.experiment_id = exp.experiment_id
            exp = self.client.get_experiment(self.experiment_id)
            if "mlflow.experimentKind" not in exp.tags:
                # MLflow 3's UI opens untagged experiments in its GenAI (traces) view.
                self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", "custom_model_development")
        except Exception as e:  # unreachable server, bad URI: say which
            raise RaykdError(f"cannot use MLflow tracking URI '{uri}': {type(e).__name__}: {e}") from None
        self.experiment = experiment

    def start_parent(self, name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def create_child(self, parent_id: str, name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"mlflow.parentRunId": parent_id, **tags})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def reattach(self, run_id: str, parent_id: str) -> bool:
        """Continue an interrupted node's run under this invocation's parent; False if gone."""
        try:
            run = self.client.get_run(run_id)
        except Exception:
            return False
        if run.info.experiment_id != self.experiment_id or run.info.lifecycle_stage == "deleted":
            return False
        self.client.set_tag(run_id, "mlflow.parentRunId", parent_id)
        self.client.update_run(run_id, status="RUNNING")
        return True

    def close_stale(self, pipeline: str, host: str) -> list[str]:
        """Mark KILLED the RUNNING runs of `pipeline` whose driver on this host is gone (a SIGKILL
        or a lost session leaves them RUNNING forever otherwise). Returns their run ids."""
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`raykd.pipeline` = '{pipeline}' and attributes.status = 'RUNNING'", max_results=1000)
        parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
        dead = {rid for rid, r in parents.items()
                if r.data.tags.get("raykd.host") == host and not _alive(r.data.tags.get("raykd.pid"))}
        closed = []
        for r in runs:
            if r.info.run_id in dead or r.data.tags.get("mlflow.parentRunId") in dead:
                self.client.set_terminated(r.info.run_id, "KILLED")
                closed.append(r.info.run_id)
        return closed

    def adopt_if_orphaned(self, run_id: str, parent_id: str) -> bool:
        """Move a finished node's run under this invocation when its own invocation was killed
        or failed, so the latest parent shows the whole pipeline. Finished invocations keep theirs."""
        try:
            old = self.client.get_run(run_id).data.tags.get("mlflow.parentRunId")
            if old and self.client.get_run(old).info.status in ("KILLED", "FAILED"):
                self.client.set_tag(run_id, "mlflow.parentRunId", parent_id)
                return True
        except Exception:
            pass
        return False

    def run_exists(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            return self.client.get_run(run_id).info.lifecycle_stage != "deleted"
        except Exception:
            return False

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(_clean(k), str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 90):
            self.client.log_batch(run_id, params=items[i : i + 90])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        MetricLogger(self.uri, run_id).log_metrics(metrics, step)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def log_artifact(self, run_id: str, path: Path, subdir: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), subdir)

    def finish(self, run_id: str, ok: bool = True) -> None:
        self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")

    def register_student(self, run_id: str, model, registered_name: str, alias: str = "final") -> int:
        """Log the student with mlflow.pytorch (pickle format: the pt2 default cannot .eval()),
        register it and point `alias` at the new version. Returns the version number."""
        import logging

        import mlflow
        import mlflow.pytorch

        # Pickle is chosen on purpose (see docstring); its generic warning would only alarm users.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        with fluent_uri(self.uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(model, name="student", registered_model_name=registered_name,
                                            serialization_format="pickle", await_registration_for=60)
        versions = self.client.search_model_versions(f"name='{registered_name}'")
        mine = [v for v in versions if v.run_id == run_id or v.source == info.model_uri]
        version = max(int(v.version) for v in (mine or versions))
        self.client.set_registered_model_alias(registered_name, alias, str(version))
        self.client.update_run(run_id, status="FINISHED")
        return version

    def registered_from(self, registered_name: str, run_id: str) -> int | None:
        try:
            versions = self.client.search_model_versions(f"name='{registered_name}'")
        except Exception:
            return None
        mine = [int(v.version) for v in versions if v.run_id == run_id]
        return max(mine) if mine else None


def _clean(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _alive(pid: str | None) -> bool:
    if not pid or not pid.isdigit():
        return True  # unknown: leave it alone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
