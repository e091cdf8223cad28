#!/usr/bin/env bash
# Submit an SKD/RSKD pipeline to a Ray cluster (default: the digits one, conf/digits/skd.yaml).
# Its three branches and RSKD's cascades then run concurrently across the cluster's GPUs.
#
#   RAY_ADDRESS=http://<head>:8265 RAYKD_STORAGE=/shared/raykd jobs/skd.sh [CONFIG] [key=value ...]
#   jobs/skd.sh conf/skd/cifar100/resnet56_resnet20.yaml data.root=/datasets      # Table II, one pair
#
# Same environment as jobs/quickstart.sh (RAYKD_STORAGE, MLFLOW_TRACKING_URI, RAYKD_PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-conf/digits/skd.yaml}
[ $# -gt 0 ] && shift
exec jobs/quickstart.sh "$config" "$@"
