#!/usr/bin/env bash
# Submit a raykd pipeline to a Ray cluster with `ray job submit` (default: the quickstart).
#
#   RAY_ADDRESS=http://<head>:8265 RAYKD_STORAGE=/shared/raykd jobs/quickstart.sh [CONFIG] [key=value ...]
#
# RAYKD_STORAGE must be an absolute path every node of the cluster can read and write (NFS, a
# shared volume): node checkpoints, the data cache and, by default, the MLflow store live there.
# Set MLFLOW_TRACKING_URI to log to a team MLflow server instead. The job's code is this
# working directory; the Python on the PATH of the cluster (or RAYKD_PYTHON) needs raykd's
# dependencies (torch, ray, mlflow, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${RAY_ADDRESS:?set RAY_ADDRESS to the job server of the cluster, e.g. http://127.0.0.1:8265}"
config=${1:-conf/quickstart.yaml}
[ $# -gt 0 ] && shift
storage=${RAYKD_STORAGE:-$PWD/runs}
case "$storage" in /*) ;; *) echo "RAYKD_STORAGE must be an absolute path, got '$storage'" >&2; exit 2 ;; esac
[ -f "$config" ] || { echo "config file not found: '$config'" >&2; exit 2; }
command=${RAYKD_COMMAND:-run}  # jobs/tune.sh submits `raykd tune` through this same script
case "$command" in run|tune) ;; *) echo "RAYKD_COMMAND must be run or tune, got '$command'" >&2; exit 2 ;; esac
# A cluster started with RAY_AUTH_MODE=token (Ray 2.59+ local clusters default to it) needs the CLI in
# token mode too; a `ray start` cluster without it rejects nothing. So: token mode whenever a token is
# at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), unless RAY_AUTH_MODE says otherwise.
if [ -z "${RAY_AUTH_MODE:-}" ] && { [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -n "${RAY_AUTH_TOKEN_PATH:-}" ] || [ -f "$HOME/.ray/auth_token" ]; }; then
  export RAY_AUTH_MODE=token
fi

env_vars="\"RAY_TRAIN_ENABLE_PRINT_PATCH\": \"0\", \"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S\": \"0.5\", \"RAY_COLOR_PREFIX\": \"0\", \"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER\": \"0\""
if [ -n "${MLFLOW_TRACKING_URI:-}" ]; then
  env_vars="$env_vars, \"MLFLOW_TRACKING_URI\": \"$MLFLOW_TRACKING_URI\""
fi
runtime_env="{\"excludes\": [\".venv\", \"runs\", \".git\", \"*.pt\", \"*.db\"], \"env_vars\": {$env_vars}}"

exec ray job submit --address "$RAY_ADDRESS" --working-dir . --runtime-env-json "$runtime_env" \
  ${RAYKD_SUBMIT_ARGS:-} -- "${RAYKD_PYTHON:-python}" -m raykd.cli "$command" "$config" "storage=$storage" "$@"
