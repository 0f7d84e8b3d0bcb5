#!/usr/bin/env bash
# export -> prune -> (fine-tune) -> build for ONE model: what the engines workflow runs on each runner,
# and what you run locally to reproduce it.
#
#   bash scripts/ci_engines.sh MODEL_SPEC RATIO_OR_BUDGET PRECISION [BACKEND]
#
#   MODEL_SPEC       builtin:resnet20, torchvision:resnet18, ... (compress export)
#   RATIO_OR_BUDGET  ratio=0.3 (remove 30% of every prunable group's channels), budget=0.6 (measured
#                    latency <= 0.6 x unpruned on BACKEND), or a bare number (= ratio)
#   PRECISION        fp32 | fp16 | int8
#   BACKEND          tensorrt (default when `nvidia-smi` or a Jetson is present) | ort
#
# Environment (all optional):
#   OUT_DIR=engines   where the artifact + manifest land     WORK_DIR=$OUT_DIR/work  intermediates
#   CALIB=mnist5k     calibration DATA for int8 (also the accuracy check's val set, unless VAL is set)
#   VAL=              validation DATA for the accuracy check   MAX_DROP=   fail when top-1 drops more
#   BATCH=1:1:1       MIN:OPT:MAX batch profile                 INPUT_SHAPE=  N,C,H,W for export
#   CHECKPOINT=       trained weights for export                FINETUNE_EPOCHS=0  fine-tune on CALIB
#   CALIB_METHOD=minmax (entropy, percentile)                   COMPRESS=compress  the CLI to call
#
# Exit codes follow the CLI: 0 ok, 1 a check failed (e.g. MAX_DROP), 2 bad input.
# On this CPU-only machine BACKEND=ort works end to end; tensorrt needs an NVIDIA GPU + TensorRT.
set -euo pipefail

if [[ $# -lt 3 || $# -gt 4 ]]; then
  sed -n '2,24p' "$0" >&2
  exit 2
fi
SPEC=$1
AMOUNT=$2
PRECISION=$3
if [[ $# -eq 4 ]]; then
  BACKEND=$4
elif command -v nvidia-smi >/dev/null 2>&1 || [[ -f /etc/nv_tegra_release ]]; then
  BACKEND=tensorrt
else
  BACKEND=ort
fi
case "$PRECISION" in fp32|fp16|int8) ;; *) echo "precision must be fp32, fp16 or int8, got '$PRECISION'" >&2; exit 2 ;; esac
case "$BACKEND" in ort|tensorrt) ;; *) echo "backend must be ort or tensorrt, got '$BACKEND'" >&2; exit 2 ;; esac
case "$AMOUNT" in
  ratio=*)  PRUNE=(--ratio "${AMOUNT#ratio=}") ;;
  budget=*) PRUNE=(--budget "${AMOUNT#budget=}" --backend "$BACKEND") ;;
  *[!0-9.]*|"") echo "second argument must be ratio=R, budget=B or a number, got '$AMOUNT'" >&2; exit 2 ;;
  *)        PRUNE=(--ratio "$AMOUNT") ;;
esac

COMPRESS=${COMPRESS:-compress}
OUT_DIR=${OUT_DIR:-engines}
CALIB=${CALIB:-mnist5k}
BATCH=${BATCH:-1:1:1}
CALIB_METHOD=${CALIB_METHOD:-minmax}
NAME=$(printf '%s' "$SPEC" | tr -c 'A-Za-z0-9._-' '-')-${AMOUNT//=/}-$PRECISION
WORK_DIR=${WORK_DIR:-$OUT_DIR/work/$NAME}
EXT=$([[ $BACKEND == tensorrt ]] && echo engine || echo onnx)
ARTIFACT=$OUT_DIR/$NAME.$BACKEND.$EXT
mkdir -p "$OUT_DIR" "$WORK_DIR"
step() { printf '\n== %s\n' "$*" >&2; }

step "export $SPEC"
EXPORT=("$COMPRESS" export "$SPEC" -o "$WORK_DIR/model.onnx")
[[ -n ${INPUT_SHAPE:-} ]] && EXPORT+=(--input-shape "$INPUT_SHAPE")
[[ -n ${CHECKPOINT:-} ]] && EXPORT+=(--checkpoint "$CHECKPOINT")
"${EXPORT[@]}"

step "prune ${PRUNE[*]}"
"$COMPRESS" prune "$WORK_DIR/model.onnx" "${PRUNE[@]}" --round-to 8 -o "$WORK_DIR/pruned"

if [[ ${FINETUNE_EPOCHS:-0} -gt 0 ]]; then
  step "fine-tune $FINETUNE_EPOCHS epoch(s) on $CALIB"
  "$COMPRESS" finetune "$WORK_DIR/pruned" --data "$CALIB" --epochs "$FINETUNE_EPOCHS"
fi

step "build $BACKEND $PRECISION -> $ARTIFACT"
BUILD_ARGS=(--backend "$BACKEND" --precision "$PRECISION" --batch "$BATCH" -o "$ARTIFACT")
[[ $PRECISION == int8 ]] && BUILD_ARGS+=(--calib "$CALIB" --calib-method "$CALIB_METHOD")
[[ -n ${VAL:-} ]] && BUILD_ARGS+=(--val "$VAL")
[[ -z ${VAL:-} && $PRECISION != int8 ]] && BUILD_ARGS+=(--val "$CALIB")
[[ -n ${MAX_DROP:-} ]] && BUILD_ARGS+=(--max-drop "$MAX_DROP")
"$COMPRESS" build "$WORK_DIR/pruned" "${BUILD_ARGS[@]}"

MANIFEST=$ARTIFACT.manifest.json
[[ -f $MANIFEST ]] || { echo "no manifest beside $ARTIFACT" >&2; exit 1; }
step "done: $ARTIFACT + $MANIFEST"
echo "$ARTIFACT"
