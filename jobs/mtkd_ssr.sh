#!/usr/bin/env bash
# Submit an MTKD-SSR pipeline to a Ray cluster (default: the digits one, conf/digits/mtkd_ssr.yaml). The
# teacher and its stage probes train first; then every student (KD, VID, SD, MTKD-SSR and its variants)
# runs concurrently across the cluster's GPUs.
#
#   RAY_ADDRESS=http://<head>:8265 RAYKD_STORAGE=/shared/raykd jobs/mtkd_ssr.sh [CONFIG] [key=value ...]
#   jobs/mtkd_ssr.sh conf/mtkd_ssr/cifar100/resnet34_resnet18.yaml data.root=/datasets   # one Table 1 pair
#   jobs/mtkd_ssr.sh conf/mtkd_ssr/cifar100/ablation/table6.yaml data.root=/datasets     # Table 6
#   jobs/tables.sh conf/mtkd_ssr/cifar100 data.root=/datasets            # Table 1: its five pairs
#   jobs/tables.sh conf/mtkd_ssr/cifar100/ablation data.root=/datasets   # Tables 6-9
#
# Same environment as jobs/quickstart.sh (RAYKD_STORAGE, MLFLOW_TRACKING_URI, RAYKD_PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-conf/digits/mtkd_ssr.yaml}
[ $# -gt 0 ] && shift
exec jobs/quickstart.sh "$config" "$@"
