"""Where a report reads from: the tracking store, the experiment and the pipeline parent run.

Every way of naming them that can be wrong (a store that is not there, a server that does not answer,
an experiment or run that does not exist, a run that is not a pipeline parent) is one RaykdError
sentence naming it, before anything is read or written.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from raykd.errors import RaykdError

PAGE = 500  # runs asked for at a time while looking for the latest parent


@dataclass
class Source:
    uri: str
    storage: Path
    client: object  # MlflowClient
    experiment: object  # mlflow.entities.Experiment
    parent: object  # mlflow.entities.Run

    @property
    def parent_id(self) -> str:
        return self.parent.info.run_id


def is_node_run(run) -> bool:
    return "raykd.node" in run.data.tags


def is_parent_run(run) -> bool:
    """A pipeline invocation (tag raykd.pipeline, no raykd.node) or a sweep's parent (raykd.sweep_role)."""
    tags = run.data.tags
    if is_node_run(run) or tags.get("raykd.sweep_role") == "trial":
        return False
    return "raykd.pipeline" in tags or tags.get("raykd.sweep_role") == "parent"


def locate(*, experiment: str | None = None, run_id: str | None = None, config: str | None = None,
           storage: str | Path | None = None, tracking_uri: str | None = None) -> Source:
    """Resolve the store and the parent run. `config` gives storage, tracking URI and experiment name as
    `raykd run` would use them; explicit `storage` / `tracking_uri` win over it."""
    from raykd.tracking import local_store_uri, resolve_uri

    configured_uri = None
    if config is not None:
        from raykd.config import load_experiment

        exp = load_experiment(config)
        storage = storage if storage is not None else exp.storage
        configured_uri = exp.config.tracking.uri
        experiment = exp.config.tracking.experiment or exp.name
    storage = Path(storage if storage is not None else "runs").expanduser()
    uri = tracking_uri or resolve_uri(storage, configured_uri)
    check_reachable(uri, local=uri == local_store_uri(storage))
    client = _client(uri)
    if run_id is not None:
        parent = _parent_by_id(client, uri, run_id)
        exp_entity = client.get_experiment(parent.info.experiment_id)
    else:
        exp_entity = _experiment(client, uri, experiment) if experiment is not None else None
        parent = _latest_parent(client, uri, exp_entity)
        if exp_entity is None:
            exp_entity = client.get_experiment(parent.info.experiment_id)
    return Source(uri, storage, client, exp_entity, parent)


def check_reachable(uri: str, local: bool = False) -> None:
    """A sqlite store must exist (MLflow would silently create an empty one) and an HTTP server must
    answer within seconds (MLflow's client would retry for minutes, then print a traceback)."""
    if uri.startswith("sqlite:///"):  # sqlite:///relative.db or sqlite:////absolute.db
        path = unquote(uri[len("sqlite:///"):].split("?")[0])
        if path and path != ":memory:" and not Path(path).is_file():
            hint = " pass --storage DIR (the folder holding mlflow.db), --config CONFIG.yaml or --tracking-uri URI" \
                if local else " check --tracking-uri"
            raise RaykdError(f"no MLflow store at '{path}': run a pipeline first, or{hint}.")
        return
    from raykd.tracking import check_server

    check_server(uri, advice="start it, or pass the server that holds the runs with --tracking-uri.")


def _client(uri: str):
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(uri, registry_uri=uri)


def _experiment(client, uri: str, name: str):
    try:
        exp = client.get_experiment_by_name(name)
    except Exception as e:  # noqa: BLE001 - a server that fails, a URI MLflow cannot use
        raise RaykdError(f"cannot read MLflow at '{uri}': {type(e).__name__}: {str(e)[:300]}") from None
    if exp is not None and exp.lifecycle_stage != "deleted":
        return exp
    names = [e.name for e in client.search_experiments() if e.name != "Default"]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else (f" Experiments there: {', '.join(names[:12])}." if names
                                                         else " It has no experiments: run a pipeline first.")
    state = "was deleted" if exp is not None else "does not exist"
    raise RaykdError(f"MLflow experiment '{name}' {state} at {uri}.{hint}")


def _parent_by_id(client, uri: str, run_id: str):
    try:
        run = client.get_run(run_id)
    except Exception as e:  # noqa: BLE001 - MLflow raises its own exception types for a missing run
        if "RESOURCE_DOES_NOT_EXIST" in str(e) or "not found" in str(e).lower() or "No run" in str(e):
            raise RaykdError(f"no MLflow run '{run_id}' at {uri}.") from None
        raise RaykdError(f"cannot read run '{run_id}' from MLflow at '{uri}': {type(e).__name__}: "
                         f"{str(e)[:300]}") from None
    if run.info.lifecycle_stage == "deleted":
        raise RaykdError(f"MLflow run '{run_id}' was deleted.")
    if is_parent_run(run):
        return run
    tags = run.data.tags
    up = tags.get("mlflow.parentRunId")
    if is_node_run(run) or tags.get("raykd.sweep_role") == "trial":
        what = f"node '{tags['raykd.node']}'" if is_node_run(run) else "a sweep trial"
        hint = f"; its pipeline's parent run is {up} (--run {up})" if up else ""
        raise RaykdError(f"run '{run_id}' is {what}, not a pipeline parent run{hint}.")
    raise RaykdError(f"run '{run_id}' ('{run.info.run_name}') is not a raykd pipeline parent run (it has no "
                     f"raykd.pipeline tag); pass a run `raykd run` made, or --experiment NAME for the latest.")


def _latest_parent(client, uri: str, experiment):
    """The newest top-level pipeline (or sweep) parent run, of one experiment or of the whole store."""
    try:
        ids = [experiment.experiment_id] if experiment is not None else \
            [e.experiment_id for e in client.search_experiments()]
        token = None
        while ids:
            page = client.search_runs(ids, "", max_results=PAGE, order_by=["attributes.start_time DESC"],
                                      page_token=token)
            for run in page:
                if is_parent_run(run) and "mlflow.parentRunId" not in run.data.tags:
                    return run
            token = page.token
            if not token:
                break
    except RaykdError:
        raise
    except Exception as e:  # noqa: BLE001
        raise RaykdError(f"cannot read MLflow at '{uri}': {type(e).__name__}: {str(e)[:300]}") from None
    where = f"experiment '{experiment.name}'" if experiment is not None else "any experiment"
    raise RaykdError(f"no raykd pipeline run in {where} at {uri}: run a pipeline first (`raykd run CONFIG`).")
