#!/usr/bin/env bash
# Submit every config of one of the SKD paper's result folders as its own Ray job, without waiting
# (follow them with `ray job list` / the dashboard, compare them in MLflow):
#
#   RAY_ADDRESS=http://<head>:8265 RAYKD_STORAGE=/shared/raykd jobs/skd_tables.sh conf/skd/cifar100 data.root=/datasets
#
# conf/skd/cifar100 (Tables II, III), conf/skd/cifar100/ablation (IX), conf/skd/imagenet (IV, V),
# conf/skd/imagenet/k_ablation (XI), conf/skd/ucf101 (VI, VII), conf/skd/ucf101/ablation (X).
# Jobs share RAYKD_STORAGE, so a teacher two configs have in common trains once (cached by hash).
set -euo pipefail
cd "$(dirname "$0")/.."
folder=${1:?give a folder of configs, e.g. conf/skd/cifar100}
shift
[ -d "$folder" ] || { echo "not a folder: '$folder'" >&2; exit 2; }
shopt -s nullglob
configs=("$folder"/*.yaml)
for config in "${configs[@]}"; do
  [ "$(basename "$config")" = recipe.yaml ] && continue
  echo "submitting $config"
  RAYKD_SUBMIT_ARGS="--no-wait ${RAYKD_SUBMIT_ARGS:-}" jobs/quickstart.sh "$config" "$@"
done
