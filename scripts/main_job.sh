#!/usr/bin/env bash
# The main job on the built-in default: export the papers' CIFAR ResNet-56, show what can be pruned,
# prune half of every prunable group's channels (aligned to 8) plus one residual block, verify parity.
set -euo pipefail
out=${1:-runs/default}
mkdir -p "$out"
compress export builtin:resnet56 -o "$out/resnet56.onnx"
compress analyze "$out/resnet56.onnx" | tail -n 1
cat > "$out/plan.json" <<'JSON'
{"version": 1, "channels": {}, "remove": ["layer2.4"], "round_to": 8}
JSON
compress prune "$out/resnet56.onnx" --ratio 0.5 --round-to 8 -o "$out/uniform50"
compress prune "$out/resnet56.onnx" --plan "$out/plan.json" -o "$out/minus-layer2.4"
compress verify "$out/uniform50"
compress verify "$out/minus-layer2.4"
