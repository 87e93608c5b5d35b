#!/usr/bin/env bash
# Reproduce the bundled default models from ../shared/data on this CPU machine (about 40 + 85 + 75 + 80 + 30 minutes).
#   bash scripts/train_default_models.sh [DATA_DIR]
# Results go to runs/; copy runs/*/best.{safetensors,json} into bldgseg/models/weights/ to bundle them.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
PY=.venv/bin/python

# aerial-buildings: Accra + Zanzibar + Atlanta -> tested on Kampala (unseen city) through the full pipeline.
# The bundled weights are the 40-minute run continued for 85 minutes (bf16 autocast: measure it on your CPU first),
# then the post-processing ablation and the int8 IR (docs/accuracy.md).
$PY scripts/train_aerial.py --data "$DATA" --minutes 40 --out runs/aerial-buildings
$PY scripts/train_aerial.py --data "$DATA" --minutes 85 --lr 5e-4 --cpu-precision bf16 --steps-per-epoch 100 \
  --init-weights runs/aerial-buildings/best.safetensors --out runs/aerial-buildings-long
$PY scripts/ablate_postprocess.py runs/aerial-buildings-long/best.safetensors --json runs/ablation.json --write

# aerial-buildings-dense (opt-in): the default trained on with a 2-px gap between touching buildings in its targets
# (75 minutes, bf16), then its post-processing on validation; bundled under that name (card "name").
$PY scripts/train_aerial.py --data "$DATA" --minutes 75 --lr 5e-4 --cpu-precision bf16 --steps-per-epoch 100 \
  --contact-gap 1 --init-weights runs/aerial-buildings-long/best.safetensors --out runs/aerial-buildings-dense
$PY scripts/ablate_postprocess.py runs/aerial-buildings-dense/best.safetensors --json runs/ablation-dense.json --write

# aerial-instances: the instance head fine-tuned from the retrained aerial-buildings (80 minutes, bf16), then its
# centre settings, post-processing and threshold chosen on validation (docs/accuracy.md).
$PY scripts/train_aerial.py --instances --init-weights runs/aerial-buildings-long/best.safetensors --minutes 80 \
  --lr 1e-3 --cpu-precision bf16 --steps-per-epoch 100 --name aerial-instances --out runs/aerial-instances
$PY scripts/tune_instances.py runs/aerial-instances/best.safetensors --data "$DATA" --write
$PY scripts/ablate_postprocess.py runs/aerial-instances/best.safetensors --json runs/ablation-instances.json --write

# facade: LabelMeFacade (non-commercial research data), split by photo collection.
.venv/bin/bldgseg train \
  "$DATA/facade/labelmefacade/images" --labels "$DATA/facade/labelmefacade/labels" \
  --palette labelmefacade --name facade --arch unet --encoder tu-efficientnet_lite0 --encoder-weights imagenet \
  --crop 256 --batch-size 8 --epochs 1000 --steps-per-epoch 40 --max-minutes 30 --val-fraction 0.15 --seed 0 \
  --config scripts/facade_train.yaml --out runs/facade
