#!/usr/bin/env bash
# Re-create the shipped nav_ambiguity diffusion policy (REALM benchmark): scripted demonstrations
# (fork / spread / chaos regions; observation = position, goal offset and forward range sensor),
# then the shipped CPU diffusion recipe.
#   bash scripts/train_nav_policy.sh   ->  outputs/train/nav_diffusion  (~20 s recording + ~25 min training; horizon 8, 6 actions executed per chunk)
# DATA: where the demonstrations are recorded (overwritten); OUT: where the policy is written.
# Copy the result to checkpoints/nav_diffusion to replace the shipped one.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 MUJOCO_GL=egl
PY=${PY:-.venv/bin/python}
data=${DATA:-outputs/data/nav_ambiguity_demos}
out=${OUT:-outputs/train/nav_diffusion}
steps=${STEPS:-4000}
"$PY" -m embodied_steer.cli record env=nav_ambiguity policy=scripted_nav episodes=100 seed=0 \
  output_dir=$data repo_id=local/nav_ambiguity_demos overwrite=true
"$PY" -m embodied_steer.cli train dataset_root=$data repo_id=local/nav_ambiguity_demos output_dir=$out \
  episodes=100 steps=$steps seed=0 torch_threads=1 down_dims=[32,64,128] horizon=8 n_action_steps=6
echo "trained: $out  (copy to checkpoints/nav_diffusion to replace the shipped one)"
