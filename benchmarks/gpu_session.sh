#!/usr/bin/env bash
# One lent-GPU session, run once: train the Shapes GLIGEN, check its grounding, then time the
# full-size benchmark.
# Needs diffusers as a wheel in .whl/ (the GPU machine has torch and transformers, no network).
# Results land in $OUT: train.log, grounding_check.log, shapes-weights.tgz, bench.log,
# bench_full.json, gpu.txt.
set -u
OUT=${OUT:-/tmp/realcompo-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
root=$PWD
export PYTHONPATH=/tmp/site:$root:$root/plugins/realcompo-plugin-sd:$root/plugins/realcompo-plugin-gligen:$root/plugins/realcompo-plugin-shapes
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
date -u +%Y-%m-%dT%H:%MZ >> "$OUT/gpu.txt"

# The bundled T2I model is kept; the GLIGEN stage alone gets the budget (open gates, x0-weighted
# loss), then grounding_check says whether the boxes are used (mirrored/true > 1 at high noise).
timeout "${TRAIN_TIMEOUT:-330}" python3 -m realcompo_plugin_shapes.training.train_all \
  --out /tmp/train --device cuda --budget-seconds "${TRAIN_BUDGET:-290}" \
  --t2i-from plugins/realcompo-plugin-shapes/realcompo_plugin_shapes/weights/shapes-sd \
  --gligen-loss-weight x0 > "$OUT/train.log" 2>&1
echo "training exit $?" | tee -a "$OUT/train.log"
tail -n 5 "$OUT/train.log"
timeout 120 python3 -m realcompo_plugin_shapes.training.grounding_check /tmp/train/shapes-gligen 2>&1 \
  | grep -v "kept in float32" | tee "$OUT/grounding_check.log"
(cd /tmp/train && tar czf "$OUT/shapes-weights.tgz" shapes-sd shapes-gligen training_log.json) && ls -la "$OUT"

timeout "${BENCH_TIMEOUT:-210}" python3 benchmarks/balance_speed.py --size full --device cuda --steps 50 \
  --repeats 3 --json "$OUT/bench_full.json" 2>&1 | grep -v "kept in float32" | tee "$OUT/bench.log"
