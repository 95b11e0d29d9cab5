"""Scripted experts succeed, demonstrations land in a LeRobotDataset, and training learns from them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embodied_steer.eval.runner import run_episode
from embodied_steer.experts.scripted import ExpertNoise, LiftExpert, PickPlaceCanExpert
from embodied_steer.sim.robosuite_env import RobosuiteEnv


@pytest.fixture(scope="module")
def lift():
    env = RobosuiteEnv("Lift", horizon=120)
    yield env
    env.close()


def test_lift_expert_succeeds(lift):
    expert = LiftExpert(seed=0)
    results = [run_episode(lift, expert, episode=i, seed=i) for i in range(5)]
    assert sum(r.success for r in results) >= 4


def test_expert_noise_makes_demonstrations_differ(lift):
    from embodied_steer.sim.base import to_observation

    obs = to_observation(lift.reset(seed=0)[0], lift.instruction)
    noisy, quiet = LiftExpert(), LiftExpert(ExpertNoise(action_std=0.0, gain_range=(1.0, 1.0), offset_std=0.0))
    actions = {}
    for name, expert in (("noisy", noisy), ("quiet", quiet)):
        for seed in (1, 2):
            expert.reset(seed=seed)
            actions[name, seed] = expert.act(obs).actions
    assert np.abs(actions["noisy", 1] - actions["noisy", 2]).max() > 1e-3  # same scene, different demos
    np.testing.assert_array_equal(actions["quiet", 1], actions["quiet", 2])
    noisy.reset(seed=1)
    np.testing.assert_array_equal(noisy.act(obs).actions, actions["noisy", 1])  # reproducible per seed


@pytest.mark.slow
def test_can_expert_succeeds():
    env = RobosuiteEnv("PickPlaceCan", horizon=300)
    try:
        expert = PickPlaceCanExpert.from_env_spec(env.spec_info, seed=0)
        results = [run_episode(env, expert, episode=i, seed=i) for i in range(2)]
    finally:
        env.close()
    assert all(r.success for r in results)


def test_can_expert_needs_a_goal(lift):
    with pytest.raises(ValueError, match="does not expose a goal_pos"):
        PickPlaceCanExpert.from_env_spec(lift.spec_info)


@pytest.fixture(scope="module")
def demos(tmp_path_factory, lift):
    from embodied_steer.data.record import record_episodes

    root = tmp_path_factory.mktemp("data") / "lift_demos"
    summary = record_episodes(lift, LiftExpert(seed=0), root, repo_id="local/lift_demos", num_episodes=4, seed=0)
    return summary


def test_recording_writes_a_lerobot_dataset(demos):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    assert demos.episodes_saved == 4 and demos.root.exists()
    assert not demos.root.with_name(demos.root.name + ".partial").exists()
    ds = LeRobotDataset("local/lift_demos", root=demos.root)
    assert ds.meta.total_episodes == 4 and len(ds) == demos.frames
    item = ds[0]
    assert item["observation.state"].shape == (9,) and item["action"].shape == (7,)
    assert item["observation.environment_state"].shape == (10,)
    assert item["task"] == "lift the red cube"
    info = json.loads((demos.root / "meta" / "info.json").read_text())
    assert info["codebase_version"].startswith("v3")


def test_recording_refuses_to_overwrite_and_keeps_nothing_on_failure(demos, lift, tmp_path):
    from embodied_steer.data.record import record_episodes

    with pytest.raises(FileExistsError, match="exists"):
        record_episodes(lift, LiftExpert(seed=0), demos.root, repo_id="x/y", num_episodes=1)

    class Idle(LiftExpert):
        def _step(self, eef, env_state):
            return np.zeros(7, np.float32)

    short = RobosuiteEnv("Lift", horizon=5)
    with pytest.raises(RuntimeError, match="only 0 of 2 episodes succeeded"):
        record_episodes(short, Idle(seed=0), tmp_path / "failed", repo_id="x/y", num_episodes=2, max_attempts=2)
    short.close()
    assert not (tmp_path / "failed").exists() and not (tmp_path / "failed.partial").exists()


def test_training_reduces_loss_and_saves_a_loadable_policy(demos, tmp_path):
    from embodied_steer.adapters.lerobot_diffusion import LeRobotDiffusionPolicy
    from embodied_steer.training.diffusion import DiffusionTrainConfig, train_diffusion

    out = train_diffusion(DiffusionTrainConfig(
        dataset_root=str(demos.root), repo_id="local/lift_demos", output_dir=str(tmp_path / "ckpt"),
        steps=150, batch_size=32, lr=1e-3, down_dims=(16, 32), log_every=10, num_inference_steps=4,
    ))
    log = [line.split(",") for line in (out / "train_log.csv").read_text().splitlines()[1:]]
    losses = [float(row[1]) for row in log]
    assert np.mean(losses[-3:]) < 0.8 * losses[0]  # measured: 1.26 -> 0.85
    policy = LeRobotDiffusionPolicy.from_pretrained(out)
    assert policy.info.chunk_size == 8 and policy.noise_spec.shape == (16, 7)
    assert json.loads((out / "train_config.json").read_text())["steps"] == 150
