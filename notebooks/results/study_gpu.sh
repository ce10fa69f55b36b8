#!/usr/bin/env bash
# The budget study's paper preset on one GPU (issue 15), held to at most 8 minutes of wall time:
# ResNet-34 U-Net, 256 px, 512 nominal patches, K = 5, 10 partitions, MS-SSIM 11x11, on 512 px
# CWFID tiles (smir_lib/configs/studies/gpu.yaml), then the same tables and figures as the CPU
# study in notebooks/results/study_gpu.{md,json,png}.
#
#   SMIR_DATA_DIR=/path/to/data bash notebooks/results/study_gpu.sh
#   PROTOCOL=gpu_strategies bash notebooks/results/study_gpu.sh    (issue 28: the masking-strategies axis,
#                                                                   same root: gpu's units are reused)
#
# NOT RUN YET: no GPU was lent to the session that wrote it, so the protocol's budget is an
# estimate. `timeout` stops the units at RUN_S seconds whatever the speed; the report then lists
# the units that did not finish, and running the script again resumes them. After a first run,
# `smir study plan --protocol gpu --timings runs/study_gpu --processes 1`
# shows the measured rate: raise or lower pretrain_budgets in gpu.yaml to fill the 8 minutes.
set -u
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
ROOT=${ROOT:-runs/study_gpu}
PROTOCOL=${PROTOCOL:-gpu}   # gpu, or gpu_strategies (smir_lib/configs/studies/)
RUN_S=${RUN_S:-420}   # 7 minutes of units, about a minute left for start-up and the report
timeout "$RUN_S" "$PY" -m smir_lib study run --protocol "$PROTOCOL" --root "$ROOT" --threads 8 --wait 0
echo "units stopped or finished (exit $?); writing the report"
"$PY" -m smir_lib study report --protocol "$PROTOCOL" --root "$ROOT" --out "notebooks/results/study_$PROTOCOL" \
    --note "GPU run: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), units cut at ${RUN_S} s"
