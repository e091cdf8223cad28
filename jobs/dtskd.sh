#!/usr/bin/env bash
# Submit a DTSKD pipeline to a Ray cluster (default: the digits one, conf/digits/dtskd.yaml). Its
# variants and seeds then run concurrently across the cluster's GPUs.
#
#   RAY_ADDRESS=http://<head>:8265 RAYKD_STORAGE=/shared/raykd jobs/dtskd.sh [CONFIG] [key=value ...]
#   jobs/dtskd.sh conf/dtskd/cifar100/table1.yaml data.root=/datasets     # Table 1: 180 nodes
#   jobs/tables.sh conf/dtskd/cifar100 data.root=/datasets                 # every CIFAR-100 table
#
# Same environment as jobs/quickstart.sh (RAYKD_STORAGE, MLFLOW_TRACKING_URI, RAYKD_PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-conf/digits/dtskd.yaml}
[ $# -gt 0 ] && shift
exec jobs/quickstart.sh "$config" "$@"
