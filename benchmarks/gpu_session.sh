#!/usr/bin/env bash
# One lent-GPU session, run once: the Shapes GLIGEN grounding probe at GPU scale, then time the
# full-size benchmark.
# Needs diffusers as a wheel in .whl/ (the GPU machine has torch and transformers, no network).
# Results land in $OUT: grounding_probe.jsonl / .log, bench.log, bench_full.json, gpu.txt.
set -u
OUT=${OUT:-/tmp/realcompo-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
root=$PWD
export PYTHONPATH=/tmp/site:$root:$root/plugins/realcompo-plugin-sd:$root/plugins/realcompo-plugin-gligen:$root/plugins/realcompo-plugin-controlnet:$root/plugins/realcompo-plugin-shapes
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
date -u +%Y-%m-%dT%H:%MZ >> "$OUT/gpu.txt"

# Can a Shapes GLIGEN learn *where* with far more steps than the CPU allows? The probe's best CPU
# variant (whole UNet, attention supervision on pure noise, position heads), 6 000 steps; watch
# share_true - share_mirrored at t 999 / 900 grow (docs/benchmarks.md, "Can a Shapes GLIGEN learn where?").
timeout "${PROBE_TIMEOUT:-330}" python3 -m realcompo_plugin_shapes.training.grounding_probe --device cuda \
  --steps "${PROBE_STEPS:-6000}" --eval-every 500 --batch-size 64 --attention-loss 0.5 --position-loss 1 \
  --log "$OUT/grounding_probe.jsonl" > "$OUT/grounding_probe.log" 2>&1
echo "probe exit $?" | tee -a "$OUT/grounding_probe.log"
tail -n 3 "$OUT/grounding_probe.log"

timeout "${BENCH_TIMEOUT:-210}" python3 benchmarks/balance_speed.py --size full --device cuda --steps 50 \
  --repeats 3 --json "$OUT/bench_full.json" 2>&1 | grep -v "kept in float32" | tee "$OUT/bench.log"

# SD3 / Flux + ControlNet at 1024² with full-size random weights: balanced / (T2I + L2I) and peak memory.
export PYTHONPATH=$PYTHONPATH:$root/plugins/realcompo-plugin-mmdit
for family in flux sd3; do
  dtype=bfloat16; [ "$family" = sd3 ] && dtype=float16
  timeout "${MMDIT_TIMEOUT:-150}" python3 benchmarks/mmdit_speed.py --family $family --device cuda --dtype $dtype \
    --size 1024 --steps 10 --repeats 1 --json "$OUT/mmdit_$family.json" > "$OUT/mmdit_$family.log" 2>&1
  echo "mmdit $family exit $?" | tee -a "$OUT/mmdit_$family.log"
done
