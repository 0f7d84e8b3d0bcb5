#!/usr/bin/env bash
# Runs ON THE TARGET at container run time (engines are never built in `docker build`: no GPU there,
# and an engine only runs on the GPU + TensorRT version it was built with).
#
#   docker run ... IMAGE build   SOURCE [compress build options]   -> compress build (TensorRT engine)
#   docker run ... IMAGE profile MODEL.onnx [compress profile options]
#   docker run ... IMAGE engines MODEL_SPEC RATIO_OR_BUDGET PRECISION   -> scripts/ci_engines.sh
#   docker run ... IMAGE all     SOURCE PRECISION [CALIB]   -> build + profile, the default flow
#   docker run ... IMAGE compress ... | bash | python ...     -> anything else, as given
set -euo pipefail

check_gpu() {
  python3 - <<'PY' || { echo "entrypoint: TensorRT or the GPU is not visible; run with --runtime nvidia (Jetson) or --gpus all (x86)" >&2; exit 2; }
import tensorrt, torch
assert torch.cuda.is_available(), "torch sees no CUDA device"
print(f"TensorRT {tensorrt.__version__} on {torch.cuda.get_device_name(0)}")
PY
}

cmd=${1:-help}
[[ $# -gt 0 ]] && shift
case "$cmd" in
  build|profile)
    # --backend ort runs on the CPU (the JetPack 5 image's path); everything else needs TensorRT + GPU
    [[ " $* " == *" --backend ort "* || " $* " == *" --backend=ort "* ]] || check_gpu
    exec compress "$cmd" "$@" ;;
  engines)
    check_gpu
    exec bash /opt/compress/scripts/ci_engines.sh "$@" ;;
  all)
    # all SOURCE PRECISION [CALIB]: engine + manifest under /work/out, then a latency profile of the model
    check_gpu
    src=${1:?usage: all SOURCE PRECISION [CALIB]}
    precision=${2:?usage: all SOURCE PRECISION [CALIB]}
    calib=${3:-mnist5k}
    out=${OUT_DIR:-/work/out}
    mkdir -p "$out"
    onnx=$src
    [[ -d $src ]] && onnx=$src/model.onnx
    args=(--backend tensorrt --precision "$precision" --batch "${BATCH:-1:1:1}"
          --timing-cache "$out/timing.cache" -o "$out/model.$precision.engine")
    [[ $precision == int8 ]] && args+=(--calib "$calib")
    [[ $precision != int8 ]] && args+=(--val "$calib")
    compress build "$src" "${args[@]}"
    # the profile times the ONNX it is given: an FP32 ONNX can be timed as fp32/fp16 (10.x flags), INT8
    # needs the QDQ ONNX, so int8 builds are profiled at fp16 (the engine's non-quantized layers run so)
    prof=$precision
    [[ $precision == int8 ]] && prof=fp16
    exec compress profile "$onnx" --backend tensorrt --precision "$prof" --blocks-only \
      --store "$out/latency.sqlite" ;;
  help|-h|--help)
    sed -n '2,10p' "$0" ;;
  *)
    exec "$cmd" "$@" ;;
esac
