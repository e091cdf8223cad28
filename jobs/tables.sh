#!/usr/bin/env bash
# Submit every config of a folder of paper tables as its own Ray job, one after another (each table's
# nodes run concurrently across the cluster; compare the tables in MLflow):
#
#   RAY_ADDRESS=http://<head>:8265 RAYKD_STORAGE=/shared/raykd jobs/tables.sh conf/dtskd/cifar100 data.root=/datasets
#
# SKD: conf/skd/cifar100 (Tables II, III), conf/skd/cifar100/ablation (IX), conf/skd/imagenet (IV, V),
# conf/skd/imagenet/k_ablation (XI), conf/skd/ucf101 (VI, VII), conf/skd/ucf101/ablation (X).
# DTSKD: conf/dtskd/cifar100 (Tables 1 and 5-12), conf/dtskd/imagenet (3).
# MTKD-SSR: conf/mtkd_ssr/cifar100 (Table 1), conf/mtkd_ssr/cifar100/ablation (6-9), conf/mtkd_ssr/imagenet (4).
# Jobs share RAYKD_STORAGE, so a node two configs have in common (a teacher, a baseline, DTSKD itself)
# trains once and later tables find it cached. They are submitted one after another, so each table
# has the cluster to itself; RAYKD_SUBMIT_ARGS=--no-wait submits them all at once: a node two tables
# share is still trained once (one run trains it, the other waits for it and uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
folder=${1:?give a folder of configs, e.g. conf/dtskd/cifar100}
shift
[ -d "$folder" ] || { echo "not a folder: '$folder'" >&2; exit 2; }
shopt -s nullglob
configs=("$folder"/*.yaml)
failed=()
for config in "${configs[@]}"; do
  [ "$(basename "$config")" = recipe.yaml ] && continue
  echo "submitting $config"
  jobs/quickstart.sh "$config" "$@" || failed+=("$config")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
