#!/usr/bin/env bash
# Thin wrapper: the TPU pod launcher is Python (testable dry runs); see launch/tpu_pod.py for every action.
#   launch/tpu_pod.sh --name xfer-v5p --zone us-east5-a --queued up --accelerator v5p-32 \
#       --runtime_version v2-alpha-tpuv5 --spot -- xfer train --config configs/pretrain.py
exec python3 "$(dirname "$0")/tpu_pod.py" "$@"
