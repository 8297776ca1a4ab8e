#!/usr/bin/env bash
# Device check used during development: a smoke run, then a time-boxed training run.
# Usage (repo root): bash plugins/realcompo-plugin-shapes/training/gpu_check.sh BUDGET_SECONDS
set -o pipefail
BUDGET=${1:-300}
OUT=${OUT:-/tmp/out}
if [ -d plugins/realcompo-plugin-shapes/.whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site plugins/realcompo-plugin-shapes/.whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/plugins/realcompo-plugin-shapes:$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__)"
if [ "${BENCH:-0}" = 1 ]; then
  python3 plugins/realcompo-plugin-shapes/training/bench_gpu.py 2>&1 | grep -v -i warn | tee "$OUT/bench.txt"
fi
if [ "${SMOKE:-1}" = 1 ]; then
  python3 -m realcompo_plugin_shapes.training.train_all --out /tmp/smoke --device cuda --budget-seconds 60 \
    --pool-size 4000 --max-steps 20 --eval-prompts 2 --no-progress 2>&1 | grep -v -i warn | tail -8 || exit 1
fi
python3 -m realcompo_plugin_shapes.training.train_all --out /tmp/run --device cuda --budget-seconds "$BUDGET" \
  --no-progress 2>&1 | grep -v -i -E "warn|deprecat" | tee "$OUT/stdout.txt" | tail -40
cp /tmp/run/training_log.json /tmp/run/train_log.jsonl /tmp/run/samples_* "$OUT"/ 2>/dev/null
if [ "${WEIGHTS:-1}" = 1 ]; then
  tar -C /tmp/run -cf "$OUT/shapes-sd.tar" shapes-sd && tar -C /tmp/run -cf "$OUT/shapes-gligen.tar" shapes-gligen
fi
ls -la "$OUT"
