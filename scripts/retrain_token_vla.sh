#!/usr/bin/env bash
# Re-create the shipped small token VLA (checkpoints/lift_token_vla) from scratch:
#   bash scripts/retrain_token_vla.sh            # 300 scripted Lift demos (~2.5 min), then training (4000 steps or 22 min, whichever ends first; 1 thread)
#   STEPS=20 EPISODES=5 bash scripts/retrain_token_vla.sh   # smoke run
# Seeds are fixed (demonstration attempts 0.., training seed 0, one torch thread); like the base
# policy's recording, the demonstrations are equivalent, not bit-identical, across processes.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 MUJOCO_GL=egl
PY=${PY:-.venv/bin/python}
EPISODES=${EPISODES:-300}
STEPS=${STEPS:-4000}
DATA=${DATA:-data/lift_vla_demos}
OUT=${OUT:-outputs/train/lift_token_vla}
if [ ! -f "$DATA/meta/info.json" ] || [ "${RERECORD:-0}" = 1 ]; then
  "$PY" -m embodied_steer.cli record env=lift policy=scripted_lift episodes=$EPISODES seed=0 \
    output_dir=$DATA repo_id=local/lift_vla_demos overwrite=true
fi
"$PY" -m embodied_steer.training.token_vla --dataset "$DATA" --out "$OUT" --steps "$STEPS" \
  --max_minutes "${MAX_MINUTES:-22}" --seed 0 --torch_threads 1
echo "trained: $OUT  (copy model.safetensors, vla_config.json, tokenizer.json, train_log.csv to checkpoints/lift_token_vla to replace the shipped one)"
