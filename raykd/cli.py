"""`raykd run | tune | report | eval | models | methods | ui`.

User mistakes (config, data, resources) print one clear paragraph and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from raykd.errors import RaykdError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # `raykd run conf.yaml --executor local train.epochs=3`: overrides after options still count
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args) or 0
    except RaykdError as e:
        print(f"raykd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nraykd: interrupted. Finished nodes are cached and interrupted ones resume from their last "
              "checkpoint: run the same command again to continue.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `raykd models | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raykd", description="Knowledge distillation pipelines on Ray, tracked in MLflow.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment's pipeline", description=(
        "Run the pipeline a YAML config describes. Overrides are dotted keys, e.g. train.epochs=3 "
        "nodes.kd.method.temperature=2."))
    run.add_argument("config", help="YAML experiment file, e.g. conf/quickstart.yaml")
    run.add_argument("overrides", nargs="*", help="dotted overrides key=value")
    run.add_argument("--executor", choices=("ray", "local"), default="ray",
                     help="ray: independent nodes concurrently, each a Ray task (a Ray Train run with several "
                          "workers) (default); local: in-process, one by one")
    run.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    run.add_argument("--num-cpus", type=_at_least_one("a whole number of CPUs"), default=None, help="CPUs for a local Ray (default: all)")
    run.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    run.add_argument("--per-seed", action="store_true",
                     help="in the summary, each seed's row below a seeded node's mean +/- std")
    run.set_defaults(func=cmd_run)

    tune = sub.add_parser("tune", help="search a node's hyperparameters with Ray Tune (the config's sweep: section)",
                          description=("Train the sweep node's parents once, then search its space with Ray Tune: "
                                       "trials run concurrently, each a cached node tracked in MLflow under one "
                                       "sweep run. Run the same command again to resume."))
    tune.add_argument("config", help="YAML experiment file with a sweep: section, e.g. conf/sweeps/digits_kd.yaml")
    tune.add_argument("overrides", nargs="*", help="dotted overrides key=value (sweep.num_samples=8 too)")
    tune.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    tune.add_argument("--num-cpus", type=_at_least_one("a whole number of CPUs"), default=None,
                      help="CPUs for a local Ray (default: all)")
    tune.set_defaults(func=cmd_tune)

    ev = sub.add_parser("eval", help="evaluate an exported student (final.pt)")
    ev.add_argument("checkpoint", help="a node's final.pt")
    ev.add_argument("--data", default=None, help="dataset name (default: the one it was trained on)")
    ev.add_argument("--data-root", default=None, help="dataset folder, for datasets other than digits")
    ev.add_argument("--split", choices=("test", "val"), default="test")
    ev.add_argument("--device", default="auto")
    ev.set_defaults(func=cmd_eval)

    sub.add_parser("models", help="list registered models").set_defaults(func=cmd_models)
    sub.add_parser("methods", help="list distillation methods").set_defaults(func=cmd_methods)

    ui = sub.add_parser("ui", help="serve the MLflow UI of a local store on 127.0.0.1")
    ui.add_argument("--storage", default="runs", help="storage path holding mlflow.db (default: runs)")
    ui.add_argument("--port", type=_at_least_one("a port number"), default=None,
                    help="port to serve on (default: 5000, or a free one if 5000 is taken)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.set_defaults(func=cmd_ui)

    rep = sub.add_parser("report", help="paper-style tables and figures of a pipeline run, from MLflow", description=(
        "Tables (text, markdown, CSV, booktabs LaTeX) and figures (validation curves, t-SNE) of one pipeline run, "
        "read from MLflow alone; seed replicates as mean +/- std. Default: the store's latest pipeline run."))
    which = rep.add_mutually_exclusive_group()
    which.add_argument("--experiment", default=None, metavar="NAME", help="MLflow experiment: its latest pipeline run")
    which.add_argument("--run", dest="run_id", default=None, metavar="PARENT_RUN_ID", help="one pipeline parent run")
    which.add_argument("--config", default=None, metavar="CONFIG.yaml",
                       help="experiment file: its storage, tracking URI and experiment")
    rep.add_argument("--storage", default=None, metavar="DIR",
                     help="storage path holding mlflow.db (default: runs, or the config's)")
    rep.add_argument("--tracking-uri", default=None, metavar="URI",
                     help="MLflow tracking URI, e.g. a team server (default: $MLFLOW_TRACKING_URI, else the store's)")
    rep.add_argument("--out", default=None, metavar="DIR",
                     help="folder to write (default: <storage>/reports/<experiment>-<run id[:8]>)")
    rep.add_argument("--per-seed", action="store_true", help="each seed's row below its group's mean +/- std")
    rep.add_argument("--curves", default=None, metavar="NODE,NODE",
                     help="nodes or seed groups drawn in curves.png (default: every group)")
    rep.add_argument("--tsne", default=None, metavar="NODE",
                     help="also tsne.png: t-SNE of that student's penultimate features on the test set")
    rep.add_argument("--format", choices=("text", "markdown", "csv", "latex"), default="text",
                     help="what is printed (every form is written)")
    rep.set_defaults(func=cmd_report)
    return p


def cmd_run(args) -> int:
    from raykd.config import load_experiment

    exp = load_experiment(args.config, args.overrides)
    if args.print_config:
        print(exp.to_yaml(), end="")
        return 0
    from raykd.pipeline import run_pipeline
    from raykd.pipeline.run import install_sigterm_handler
    from raykd.pipeline.summary import format_table

    install_sigterm_handler()
    if exp.config.sweep is not None:
        print(f"raykd: {args.config} has a sweep: section; `raykd run` trains the config as written (node "
              f"'{exp.config.sweep.node}' with its own values). To search it: raykd tune {args.config}")
    result = run_pipeline(exp, executor=args.executor, address=args.address, num_cpus=args.num_cpus)
    print()
    print(format_table(result, per_seed=args.per_seed))
    return 0 if result.ok else 1


def cmd_tune(args) -> int:
    from raykd.pipeline.run import install_sigterm_handler
    from raykd.sweep.run import run_sweep
    from raykd.sweep.summary import format_sweep

    install_sigterm_handler()
    result = run_sweep(args.config, args.overrides, address=args.address, num_cpus=args.num_cpus)
    print()
    print(format_sweep(result))
    return 0 if result.best_key else 1


def _at_least_one(what: str):
    """An argparse type: a whole number >= 1, the error saying what it counts (CPUs, a port)."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected {what} >= 1, got '{text}'")
        return value
    return convert


def cmd_eval(args) -> int:
    import torch

    from raykd.config import DataConfig
    from raykd.data import load_data, make_loader
    from raykd.engine import load_student, pick_device
    from raykd.engine.evaluate import evaluate

    device = pick_device(args.device)
    model, meta = load_student(args.checkpoint, device)
    data_cfg = dict(meta["data"])
    if args.data:
        data_cfg["name"] = args.data
    if args.data_root:
        data_cfg["root"] = args.data_root
    cfg = DataConfig.model_validate(data_cfg)
    data = load_data(cfg, Path(args.checkpoint).resolve().parents[2] / "data_cache")
    if data.num_classes != meta["num_classes"]:
        raise RaykdError(f"'{args.checkpoint}' predicts {meta['num_classes']} classes but {cfg.name} has {data.num_classes}.")
    if bool(meta.get("video")) != data.is_video:
        kind = "clips" if meta.get("video") else "images"
        raise RaykdError(f"'{args.checkpoint}' classifies {kind} but {cfg.name} holds "
                         f"{'clips' if data.is_video else 'images'}; choose a {kind} dataset with --data "
                         f"({'digits_video, ucf101' if meta.get('video') else 'digits, cifar10, ...'}).")
    split = data.test if args.split == "test" else data.val
    loader = make_loader(split, cfg, cfg.eval_batch_size, train=False, device=device, mean=tuple(meta["mean"]),
                         std=tuple(meta["std"]), cpus=os.cpu_count() or 1)
    with torch.no_grad():
        m = evaluate(model, loader)
    print(f"{meta['model']} on {cfg.name} {args.split} ({len(split)} images): top-1 {m['top1']:.2f}%  "
          f"top-5 {m['top5']:.2f}%  loss {m['loss']:.4f}")
    return 0


def cmd_report(args) -> int:
    from raykd.report import ReportOptions, make_report, print_report

    curves = [c.strip() for c in args.curves.split(",") if c.strip()] if args.curves else None
    report = make_report(ReportOptions(
        experiment=args.experiment, run_id=args.run_id, config=args.config, storage=args.storage,
        tracking_uri=args.tracking_uri, out=args.out, per_seed=args.per_seed, curves=curves, tsne=args.tsne,
        format=args.format))
    print_report(report, args.format)
    return 0 if report.logged else 1


def cmd_models(args) -> int:
    from raykd import models
    from raykd.models.torchvision_models import TORCHVISION_MODELS

    print(f"{'model':20s} {'params':>9s}  {'input':8s} stage channels")
    for name in models.list_models():
        imagenet = name in TORCHVISION_MODELS or name == "mobilenet_v1"
        classes = 1000 if imagenet else 100
        m = models.create(name, num_classes=classes)
        print(f"{name:20s} {models.count_parameters(m) / 1e6:8.3f}M  {'224 px' if imagenet else '32 px':8s} "
              f"{m.stage_channels}  ({classes} classes)")
    print("Any model runs on clips as raykd.models.VideoClassifier(backbone).")
    return 0


def cmd_methods(args) -> int:
    from raykd import methods

    for name in methods.list_methods():
        cls = methods.get_method(name)
        defaults = cls.Config(name=name).model_dump(exclude={"name"})
        teacher = ("self-teacher" if cls.teacher_is_self else "teacher" if cls.needs_teacher
                   else "init: model" if cls.needs_init else "no teacher")
        print(f"{name:8s} {teacher:12s} {cls.summary}")
        print(f"{'':21s} defaults: {', '.join(f'{k}={v}' for k, v in defaults.items()) or '-'}")
        if cls.source:
            print(f"{'':21s} source: {cls.source}")
    return 0


UI_PORT = 5000


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ui_port(host: str, requested: int | None) -> int:
    """The port the UI will serve on: the one asked for, which must be free (another server answering there
    would show another store), or 5000, or a free one when 5000 is taken (and then it says so)."""
    import socket

    if requested is not None:
        if not _port_free(host, requested):
            raise RaykdError(f"port {requested} on {host} is in use by another program, so the UI would not be "
                             f"this store's: choose another --port, or leave --port out to pick a free one.")
        return requested
    if _port_free(host, UI_PORT):
        return UI_PORT
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    print(f"raykd: port {UI_PORT} is in use by another program; serving on port {port} instead", file=sys.stderr)
    return port


def cmd_ui(args) -> int:
    import subprocess
    import time
    import urllib.request

    db = Path(args.storage).expanduser().resolve() / "mlflow.db"
    if not db.is_file():
        raise RaykdError(f"no MLflow store at '{db}': run a pipeline first, or pass --storage PATH.")
    import signal

    # Ctrl-C (or a SIGTERM) stops the UI even where the shell started us with SIGINT ignored
    # (a background job of a script), so the server below is never left running.
    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    port = _ui_port(args.host, args.port)
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db.as_posix()}",
           "--host", args.host, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=sys.stderr)  # our stdout carries just the URL
    url = f"http://{args.host}:{port}"
    for _ in range(120):
        if proc.poll() is not None:
            raise RaykdError(f"the MLflow server exited (code {proc.returncode}) before it served on port {port}.")
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    try:
        print(f"raykd: MLflow UI for {db} at {url}  (Ctrl-C to stop)", flush=True)
        try:  # links to each experiment, asked of the server itself (no mlflow import here)
            import json

            with urllib.request.urlopen(url + "/api/2.0/mlflow/experiments/search?max_results=100", timeout=5) as r:
                for e in json.load(r).get("experiments", []):
                    if e["name"] != "Default":
                        # MLflow 3's UI opens in its GenAI mode unless told; a pipeline's experiment opens on the
                        # saved view raykd.pipeline.headline writes (each node's test top-1 a column)
                        view = "&viewStateShareKey=raykd-pipelines" if any(
                            t.get("key") == "mlflow.sharedViewState.raykd-pipelines" for t in e.get("tags", [])) else ""
                        print(f"  {e['name']}: {url}/#/experiments/{e['experiment_id']}/runs"
                              f"?workflowType=machine_learning{view}", flush=True)
        except Exception:
            pass  # the links are a convenience; the server is what matters
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:  # Ctrl-C at any moment stops the server too, and never waits on it forever
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
