#!/usr/bin/env bash
# One prepared GPU session (device machine): throughput table, then a short real run
# (train with AMP + channels_last, resume no-op, predict with flip TTA, score).
#   bash bench/gpu_check.sh            (writes logs to ${OUT:-/tmp})
set -euo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
python3 bench/bench_train.py --archs resnet18 resnet50 resnext50 --crop-size 128 --batch 256 --steps 30 --compile 2>&1 | tee "$OUT/throughput_b256.txt"
python3 bench/bench_train.py --archs resnet18 resnext50 --crop-size 128 --batch 64 --steps 40 2>&1 | tee "$OUT/throughput_b64.txt"
D=$(mktemp -d)
python3 -m landmarklib.synth "$D/data" --n-train 4000 --n-test 400 --seed 0 >/dev/null 2>&1
TQDM_DISABLE=1 python3 -m landmarklib.train --data-dir "$D/data" --run-dir "$D/run" --arch resnext50 --epochs 6 \
  --lr 1e-3 --drop-at 4 --drop-factor 0.1 --batch-size 64 --crop-size 128 --augment flip 2>&1 | tee "$OUT/train_gpu.txt"
TQDM_DISABLE=1 python3 -m landmarklib.train --data-dir "$D/data" --run-dir "$D/run" --arch resnext50 --epochs 6 \
  --lr 1e-3 --drop-at 4 --drop-factor 0.1 --batch-size 64 --crop-size 128 --augment flip 2>&1 | tail -2
TQDM_DISABLE=1 python3 -m landmarklib.predict --data-dir "$D/data" --checkpoint "$D/run/best.pt" --out "$D/sub.csv" --tta flip
python3 -m landmarklib.score "$D/sub.csv" --data-dir "$D/data" | tee -a "$OUT/train_gpu.txt"
cp "$D/run/history.csv" "$OUT/history_gpu.csv"
