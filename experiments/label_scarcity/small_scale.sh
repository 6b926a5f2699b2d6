#!/usr/bin/env bash
# The runs behind experiments/label_scarcity/small_scale.md, in order (each skips what --results already holds).
# One torch thread per run; about 50 minutes of one CPU core in all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=experiments/label_scarcity/results/small_scale.jsonl
KERMANY=${KERMANY:-../shared/data/kermany-oct-sample}
ALL="standard madry trades ssat ssat_warm ssat_teacher"
$PY -m experiments.label_scarcity.small_scale --data synthetic --label-fraction 0.1 --seeds 0 1 2 --methods $ALL --results $R
$PY -m experiments.label_scarcity.small_scale --data synthetic --label-fraction 0.3 --seeds 0 1 2 --methods $ALL --results $R
# the synthetic-trained weights the real-data runs may start from: every synthetic label, 1000 iterations
$PY -m experiments.label_scarcity.small_scale --data synthetic --label-fraction 1.0 --seeds 0 1 2 --methods standard \
    --iterations 1000 --save-standard experiments/label_scarcity/runs/synthetic_standard_seed{seed}.pt --results $R
if [ -d "$KERMANY" ]; then
    for INIT in "" "--init-from experiments/label_scarcity/runs/synthetic_standard_seed{seed}.pt"; do
        $PY -m experiments.label_scarcity.small_scale --data kermany --root "$KERMANY" --split test --test-fraction 0.25 \
            --label-fraction 0.2 --seeds 0 1 2 --methods $ALL --results $R $INIT
    done
fi
$PY -m experiments.label_scarcity.small_scale --report --results $R --plot experiments/label_scarcity/figures/small_scale_accuracy_vs_eps.png
