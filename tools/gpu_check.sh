#!/usr/bin/env bash
# EdgeViT on an NVIDIA GPU, in one go, for the first machine that has one: sets up, trains a few
# epochs on CUDA, evaluates on CUDA, classifies the samples on CUDA and on the CPU, and writes one
# JSON result (tools/gpu_check.py: CUDA against the CPU for every shipped scheme, speed, and PyTorch
# on the same GPU). Never run here (no GPU); GPU_CHECK_DEVICE=CPU rehearses it on any machine.
#
#   bash tools/gpu_check.sh              # -> runs/gpu/result.json and runs/gpu/*.log
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${GPU_CHECK_DEVICE:-CUDA}
EPOCHS=${GPU_CHECK_EPOCHS:-3}
LIMIT=${GPU_CHECK_LIMIT:-0}  # training images (0: all); a rehearsal on a CPU wants a few thousand
IMAGES=${GPU_CHECK_IMAGES:-1000}  # test images compared against the CPU
OUT=runs/gpu
mkdir -p "$OUT"
say() { echo "gpu_check: $*" >&2; }

if [ "$DEVICE" = CUDA ]; then
  command -v nvidia-smi >/dev/null || { say "no nvidia-smi: this machine has no NVIDIA driver"; exit 1; }
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2
fi
make setup
# PyTorch from PyPI: on an x86-64 Linux machine its default wheel is the CUDA build
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[bench]'
PY=.venv/bin/python

say "training $EPOCHS epochs on $DEVICE"
# the shipped recipe, with a smaller bank of damaged images: making the full one takes the CPU half an hour
$PY -m edgevit.train --device "$DEVICE" --epochs "$EPOCHS" --limit "$LIMIT" --degraded-images 6000 \
  --degraded-negatives 2000 --out "$OUT/gpu.safetensors" 2>&1 | tee "$OUT/train.log"
say "evaluating on $DEVICE"
$PY -m edgevit.evaluate "$OUT/gpu.safetensors" --device "$DEVICE" --json > "$OUT/evaluate-trained.json"
$PY -m edgevit.evaluate --device "$DEVICE" --json --limit "$IMAGES" > "$OUT/evaluate-shipped.json"
say "classifying the samples on $DEVICE and on the CPU"
.venv/bin/edgevit-classify --device "$DEVICE" --json samples/ > "$OUT/classify-$DEVICE.jsonl"
.venv/bin/edgevit-classify --device CPU --json samples/ > "$OUT/classify-CPU.jsonl"
$PY - "$OUT/classify-$DEVICE.jsonl" "$OUT/classify-CPU.jsonl" <<'PYEOF' | tee "$OUT/classify-compare.log"
import json, sys
rows = [[json.loads(line) for line in open(path)] for path in sys.argv[1:]]
same = sum(a.get("digit") == b.get("digit") for a, b in zip(*rows))
print(f"samples: {same} of {len(rows[0])} answered alike on the device and the CPU")
PYEOF
say "comparing every scheme against the CPU, and PyTorch on the same GPU"
$PY tools/gpu_check.py --device "$DEVICE" --images "$IMAGES" --out "$OUT/result.json" --trained "$OUT/gpu.safetensors" \
  --log "$OUT/train.log" --log "$OUT/classify-compare.log" > /dev/null
say "done: $OUT/result.json"
