#!/usr/bin/env bash
# Re-create a shipped base policy from scratch: scripted demonstrations, then CPU training.
#   bash scripts/retrain_base_policy.sh lift   ->  checkpoints/lift_diffusion   (~1 min + ~6 min)
#   bash scripts/retrain_base_policy.sh can    ->  checkpoints/can_diffusion    (~9 min + ~15 min)
# Seeds are fixed (demonstration attempts 0.., expert seed 0, training seed 0, one torch thread), but
# the recording is not bit-identical across processes: two runs of the same recording differed from
# the 7th step of the first episode on (a few millimetres of end-effector motion; cause not found in
# robosuite/MuJoCo yet). A rerun therefore gives equivalent, not identical, demonstrations and policy.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 MUJOCO_GL=egl
PY=${PY:-.venv/bin/python}
task=${1:?usage: retrain_base_policy.sh lift|can}
case "$task" in
  lift) env=lift; expert=scripted_lift; demos=50; use=20; steps=2000 ;;
  can)  env=pickplace_can; expert=scripted_can; demos=100; use=100; steps=6000 ;;
  *) echo "unknown task '$task' (lift or can)" >&2; exit 2 ;;
esac
data=data/${env}_demos
out=outputs/train/${task}_diffusion
"$PY" -m embodied_steer.cli record env=$env policy=$expert episodes=$demos seed=0 output_dir=$data repo_id=local/${env}_demos overwrite=true
"$PY" -m embodied_steer.cli train dataset_root=$data repo_id=local/${env}_demos output_dir=$out episodes=$use steps=$steps seed=0 torch_threads=1
echo "trained: $out  (copy to checkpoints/${task}_diffusion to replace the shipped one)"
