#!/usr/bin/env bash
# The GPU paths, checked on one NVIDIA GPU in under 10 minutes: one PASS / SKIP / FAIL line per check.
#
#   bash scripts/gpu_check.sh            (from the repository root, after pip install -e ".[dev]")
#
# Needs PyTorch with CUDA; TensorRT (pip install tensorrt, or JetPack 6) and onnxruntime-gpu
# (pip install -e ".[gpu]") are used when present, and their checks SKIP with the reason when absent.
# Without a GPU every check SKIPs and the script exits 0, so it runs anywhere.
# Exit code: 0 when nothing FAILed, 1 otherwise. Output of each check: $WORK/<check>.log and .err
# PYTHON=/path/to/python3 picks the interpreter (default: python); a symlink to a venv's python leaves the
# venv behind, so point PYTHON at the venv's own binary. Every step runs under a timeout, the GPU probe too:
# on a lent H200 an un-timed probe (import torch, onnx, onnxruntime, then the first CUDA call) once hung a
# whole 10-minute run without a line of output.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$WORK"
PYTHON=${PYTHON:-python}
COMPRESS=("$PYTHON" -m toolchain.cli)
FAILED=0

say() { printf '%-28s %s\n' "$1" "$2"; }
pass() { say "$1" "PASS  $2"; }
skip() { say "$1" "SKIP  $2"; }
fail() { say "$1" "FAIL  $2 (log: $WORK/$1.log, $WORK/$1.err)"; FAILED=1; }
# run NAME SECONDS CMD...: PASS when CMD exits 0 within SECONDS
run() {
  local name=$1 limit=$2; shift 2
  if timeout "$limit" "$@" >"$WORK/$name.log" 2>"$WORK/$name.err"; then return 0; fi
  return 1
}
has() { timeout 120 "$PYTHON" - "$1" <<'PY' >/dev/null 2>&1
import sys
what = sys.argv[1]
if what == "cuda":
    import torch; sys.exit(0 if torch.cuda.is_available() else 1)
if what == "tensorrt":
    import tensorrt; sys.exit(0)
if what == "ort-gpu":
    import onnxruntime; sys.exit(0 if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else 1)
PY
}

echo "compress GPU check (work dir $WORK, $("$PYTHON" --version 2>&1))"
# the probe in two timed steps, so a hang names its step: importing torch, then initialising CUDA
if ! timeout 180 "$PYTHON" -c "import torch" >"$WORK/probe.log" 2>"$WORK/probe.err"; then
  fail probe "import torch failed or took over 180 s with $PYTHON"
  exit 1
fi
GPU=$(timeout 180 "$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>>"$WORK/probe.err")
if [[ $? -eq 124 ]]; then
  fail probe "torch's first CUDA call (torch.cuda.is_available / get_device_name) hung for 180 s"
  exit 1
fi
if [[ -z "$GPU" ]]; then
  for c in torch-cuda-table pytest-gpu ort-cuda-table tensorrt-build-fp32 tensorrt-build-fp16 tensorrt-build-int8 tensorrt-fp16-table; do
    skip "$c" "no CUDA GPU visible to torch"
  done
  exit 0
fi
echo "GPU: $GPU"

# the model every check uses: builtin:resnet20 (32x32), exported and pruned 30% on the CPU
if ! run prepare 300 bash -c "${COMPRESS[*]} export builtin:resnet20 -o '$WORK/r20.onnx' && \
    ${COMPRESS[*]} prune '$WORK/r20.onnx' --ratio 0.3 --round-to 8 -o '$WORK/pruned'"; then
  fail prepare "export + prune of builtin:resnet20"
  exit 1
fi

# 1. the torch backend on CUDA: a latency table of the Plan-applied module, timed with CUDA events
if run torch-cuda-table 240 "${COMPRESS[@]}" profile "$WORK/r20.onnx" --backend torch --provider cuda \
    --runs 10 --points 2 --store "$WORK/torch.sqlite" --json && \
    "$PYTHON" -c "import json,sys; t=json.load(open('$WORK/torch-cuda-table.log')); sys.exit(0 if t['groups'] and t['blocks'] and t['base_ms'] > 0 else 1)" 2>/dev/null; then
  pass torch-cuda-table "$("$PYTHON" -c "import json; t=json.load(open('$WORK/torch-cuda-table.log')); print(f\"{len(t['groups'])} groups, {len(t['blocks'])} blocks, unpruned {t['base_ms']:.3f} ms\")")"
else
  fail torch-cuda-table "compress profile --backend torch --provider cuda"
fi

# 2. the gpu-marked tests (their TensorRT / onnxruntime-gpu parts skip themselves when absent)
if run pytest-gpu 300 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/; then
  pass pytest-gpu "$(tail -n 1 "$WORK/pytest-gpu.log")"
else
  fail pytest-gpu "$(tail -n 1 "$WORK/pytest-gpu.log")"
fi

# 3. onnxruntime-gpu: a table on the CUDA execution provider (IOBinding, provider checked on the session)
if has ort-gpu; then
  if run ort-cuda-table 180 "${COMPRESS[@]}" profile "$WORK/r20.onnx" --backend ort --provider cuda --runs 10 \
      --points 1 --blocks-only --store "$WORK/ort.sqlite" --json; then
    pass ort-cuda-table "CUDAExecutionProvider active"
  else
    fail ort-cuda-table "compress profile --backend ort --provider cuda"
  fi
else
  skip ort-cuda-table "onnxruntime-gpu not installed (pip install -e \".[gpu]\")"
fi

# 4. TensorRT engines through Polygraphy at each precision, with the manifest's checks
if has tensorrt; then
  for p in fp32 fp16 int8; do
    extra=(); [[ $p == int8 ]] && extra=(--calib mnist5k)
    if run "tensorrt-build-$p" 240 "${COMPRESS[@]}" build "$WORK/pruned" --backend tensorrt --precision "$p" \
        "${extra[@]}" --val mnist5k --batch 1:4:8 -o "$WORK/r20.$p.engine" --json; then
      pass "tensorrt-build-$p" "$("$PYTHON" -c "import json; m=json.load(open('$WORK/r20.$p.engine.manifest.json')); print(m['backend']['version'], m['backend']['mode'], 'cosine', round(m['accuracy']['cosine_mean'], 5), 'latency', round(m['latency']['median_ms'], 4), 'ms at batch', m['latency']['batch'])")"
    else
      fail "tensorrt-build-$p" "compress build --backend tensorrt --precision $p"
    fi
  done
  if run tensorrt-fp16-table 240 "${COMPRESS[@]}" profile "$WORK/r20.onnx" --backend tensorrt --precision fp16 \
      --runs 10 --points 1 --blocks-only --store "$WORK/trt.sqlite" --json; then
    pass tensorrt-fp16-table "FP16 engines timed for every block entry"
  else
    fail tensorrt-fp16-table "compress profile --backend tensorrt --precision fp16"
  fi
else
  for c in tensorrt-build-fp32 tensorrt-build-fp16 tensorrt-build-int8 tensorrt-fp16-table; do
    skip "$c" "TensorRT not installed (pip install tensorrt; JetPack 6 on Jetson)"
  done
fi
exit $FAILED
