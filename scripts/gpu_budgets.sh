#!/usr/bin/env bash
# Latency budgets met by measurement on a GPU: for each model and job, `compress prune --budget` on the
# torch backend, one store for all, and one line per job read from its summary.json.
#
#   bash scripts/gpu_budgets.sh                          (from the repository root, after pip install -e .)
#   MODELS="resnet50" JOBS="joint 0.7,layer 0.5" bash scripts/gpu_budgets.sh
#
# MODELS: torchvision names (exported at 224x224, weights at random init; default "resnet50 resnet18"), or
# any `compress export` spec (builtin:resnet20).
# JOBS: comma-separated "MODE BUDGET" pairs (default "joint 0.7,joint 0.5,layer 0.5,filter 0.7").
# PROVIDER (default cuda), BATCH (default 1), RUNS (interleaved pairs per table entry, default 20),
# STEP_S (a job's time limit, default 300), PYTHON (default python), WORK (default a new temporary folder).
# Each job's stderr (what the solver tried) is kept in $WORK/MODEL-MODE-BUDGET.err. A refused budget is a
# result, not a failure: its line gives the reason. Exit code: 0 when every job met its budget or was refused
# with exit code 2, 1 otherwise. bench/results/h200_torch_cuda_budget_after.txt is its output on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_budgets.XXXXXX")}
mkdir -p "$WORK"
IFS=, read -ra jobs <<< "${JOBS:-joint 0.7,joint 0.5,layer 0.5,filter 0.7}"
FAILED=0
echo "compress budgets on --backend torch --provider ${PROVIDER:-cuda}, batch ${BATCH:-1} (work dir $WORK)"
for spec in ${MODELS:-resnet50 resnet18}; do
  [[ $spec == *:* ]] || spec="torchvision:$spec"
  model=${spec#*:}
  echo "=== $(date -u +%T) export $spec"
  timeout 300 "$PYTHON" -m toolchain.cli export "$spec" -o "$WORK/$model.onnx" || { FAILED=1; continue; }
  for job in "${jobs[@]}"; do
    read -r mode budget <<< "$job"
    name="$model-$mode-$budget"
    echo "=== $(date -u +%T) $model $mode $budget"
    timeout "${STEP_S:-300}" "$PYTHON" -m toolchain.cli prune "$WORK/$model.onnx" --budget "$budget" --mode "$mode" \
      --backend torch --provider "${PROVIDER:-cuda}" --batch "${BATCH:-1}" --runs "${RUNS:-20}" --confirm 3 \
      --store "$WORK/latency.sqlite" -o "$WORK/$name" --json >"$WORK/$name.json" 2>"$WORK/$name.err"
    rc=$?
    if [[ $rc -eq 0 ]]; then
      "$PYTHON" - "$WORK/$name.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); t = s["latency"]
print(f"measured {t['measured']:.3f} +- {t['measured_se']:.3f} met={t['met']} | {t['reference_ms']:.3f} -> "
      f"{t['pruned_ms']:.3f} ms | removed {len(s['removed'])} blocks | MACs {s['macs']['after'] / s['macs']['before']:.3f} "
      f"| params {s['params']['after'] / s['params']['before']:.3f}")
sys.exit(0 if t["met"] else 1)
PY
      [[ $? -eq 0 ]] || FAILED=1
    elif [[ $rc -eq 2 ]]; then
      echo "refused: $(grep '^error:' "$WORK/$name.err" | tail -n 1)"
    else
      echo "FAILED (exit $rc): $(tail -n 1 "$WORK/$name.err")"; FAILED=1
    fi
  done
done
exit $FAILED
