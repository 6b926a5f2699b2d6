#!/usr/bin/env bash
# The GPU checks in one command (at most ~8 minutes on one CUDA GPU), from the repository root:
#
#   bash benchmarks/gpu_check.sh            # PYTHON=... to use another interpreter
#
# 1. the attack speed table on the GPU: PGD-10 ours in fp32, fp16 and bf16 autocast (and amp='auto',
#    which is autocast on CUDA), against ten bare forward+backward passes in each precision and against
#    torchattacks' PGD-10 in fp32 (benchmarks/attack_speed.py --device cuda);
# 2. one training step of supervised, SSAT, TRADES and Madry in fp32, fp16 and bf16, with the passes
#    each step makes (benchmarks/ssat_step_cost.py --device cuda) at the paper's 224 px;
# 3. a short run of the paper-scale configuration of the label-scarcity experiment (--paper-scale:
#    224 px, ResNet-18, SGD; a small pool and few iterations, results to $OUT or a temporary folder,
#    never into experiments/label_scarcity/results/paper_scale.jsonl).
#
# Every section prints the card's name; paste the whole output into benchmarks/RESULTS.md with the date.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUTDIR=${OUT:-$(mktemp -d)}
mkdir -p "$OUTDIR"
status=0

echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
"$PYTHON" - <<'PY' || { echo "no usable CUDA device: nothing to check"; exit 2; }
import torch
from monai_adv.precision import resolve_precision
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
print(f"# torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"amp='auto' on cuda -> {resolve_precision('auto', 'cuda')}")
PY
"$PYTHON" -c "import torchattacks" 2>/dev/null || "$PYTHON" -m pip install --quiet --no-deps torchattacks==3.5.1 \
    || echo "(torchattacks not installable here: its column stays empty)"

section() {  # section TITLE SECONDS COMMAND...
    local title=$1 limit=$2
    shift 2
    echo
    echo "## $title"
    timeout "$limit" "$@"
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "(section '$title' ended with exit code $rc${rc:+; 124 means it ran past ${limit}s})"
        status=1
    fi
}

section "attack speed (fp32, fp16, bf16; ours and torchattacks)" 200 \
    "$PYTHON" benchmarks/attack_speed.py --device cuda --repeats 5 --threads 4
section "one training step per method and precision (224 px, batch 32)" 120 \
    "$PYTHON" benchmarks/ssat_step_cost.py --device cuda --size 224 --batch 32 --iters 5 --repeats 3 \
    --threads 4 --precisions fp32 fp16 bf16 --methods supervised ssat trades madry
section "paper-scale configuration, short run (224 px ResNet-18, 10% labels, 2 methods, 60 iterations)" 150 \
    "$PYTHON" -m experiments.label_scarcity.run --paper-scale --stage train --data synthetic \
    --synthetic-fractions 0.1 --seeds 0 --methods standard rst --synthetic-iterations 60 \
    --n-pool 150 --n-test 50 --threads 4 \
    --cache "$OUTDIR/cache" --runs "$OUTDIR/runs" --results "$OUTDIR/paper_scale_short.jsonl"
echo
echo "# rows of the short paper-scale run: $OUTDIR/paper_scale_short.jsonl"
exit $status
