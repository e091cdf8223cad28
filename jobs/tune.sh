#!/usr/bin/env bash
# Submit a sweep (`raykd tune`, a config with a `sweep:` section) to a Ray cluster with `ray job submit`
# (default: the digits one, conf/sweeps/digits_kd.yaml). The tuned node's parents train once, then Ray Tune
# runs the trials concurrently across the cluster's GPUs, each a cached node tracked in MLflow under one
# sweep run; `then: {retrain: true}` retrains the best config as an ordinary node afterwards.
#
#   RAY_ADDRESS=http://<head>:8265 RAYKD_STORAGE=/shared/raykd jobs/tune.sh [CONFIG] [key=value ...]
#   jobs/tune.sh conf/sweeps/mtkd_ssr_t1_t2_cifar100.yaml data.root=/datasets        # MTKD-SSR Figs. 3-4: T1 x T2
#   jobs/tune.sh conf/sweeps/skd_topk_cifar100.yaml data.root=/datasets              # SKD Table XI: DF's K
#   jobs/tune.sh conf/sweeps/dtskd_beta_cifar100.yaml data.root=/datasets sweep.scheduler=none
#
# Overrides reach the sweep too (sweep.num_samples=8, sweep.max_concurrent_trials=4). Submitting the same
# command again resumes the sweep: its state lives in $RAYKD_STORAGE/sweeps/<name>-<node>-<hash>/ (Tune's
# state, results.csv, sweep.png, best.yaml), so finished trials are not re-run. RAYKD_STORAGE must be an
# absolute path every node of the cluster can read and write (NFS, a shared volume): Tune's trial state, the
# nodes' checkpoints, the data cache and, by default, the MLflow store live there. Set MLFLOW_TRACKING_URI to
# log to a team MLflow server instead. The job's code is this working directory; the Python on the PATH of
# the cluster (or RAYKD_PYTHON) needs raykd's dependencies (torch, ray[tune], mlflow, ...; optuna for
# sweep.search=optuna). RAYKD_SUBMIT_ARGS is passed to `ray job submit` (e.g. --no-wait). It submits through
# jobs/quickstart.sh, which it shares every check and setting with.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-conf/sweeps/digits_kd.yaml}
[ $# -gt 0 ] && shift
RAYKD_COMMAND=tune exec jobs/quickstart.sh "$config" "$@"
