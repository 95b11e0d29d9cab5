"""Action chunk → end-effector trajectory maps, checked against robosuite's own controller motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied_steer.core.errors import ConfigError
from embodied_steer.vls.trajectory import (
    AbsolutePositionMap,
    DeltaPositionMap,
    ee_position_index,
    osc_tracking,
    trajectory_map_for,
)

OSC = {"control_delta": True, "input_min": -1, "input_max": 1, "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
       "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5], "kp": 150, "damping_ratio": 1}


def test_delta_map_is_a_scaled_cumulative_sum_and_differentiable():
    m = trajectory_map_for({"controller_config": OSC}, tracking=1.0)
    assert isinstance(m, DeltaPositionMap)
    actions = torch.zeros(2, 4, 7, requires_grad=True)
    with torch.no_grad():
        actions[0, :, 0] = 0.8  # +4 cm in x per step
        actions[1, :, 2] = -2.0  # clipped to -1: -5 cm in z per step
    traj = m(actions, torch.tensor([0.1, 0.2, 0.3]))
    np.testing.assert_allclose(traj[0, :, 0].detach().numpy(), 0.1 + 0.04 * np.arange(1, 5), atol=1e-6)
    np.testing.assert_allclose(traj[1, :, 2].detach().numpy(), 0.3 - 0.05 * np.arange(1, 5), atol=1e-6)
    traj[0, -1, 0].backward()
    assert actions.grad[0, :, 0].tolist() == pytest.approx([0.05] * 4)  # every step moves the end
    assert actions.grad[0, :, 3:].abs().sum() == 0  # rotation and gripper do not move the position


def test_scale_comes_from_the_controller_config():
    slow = dict(OSC, output_max=[0.01] * 6, output_min=[-0.01] * 6)
    traj = trajectory_map_for({"controller_config": slow}, tracking=1.0)(torch.ones(1, 3, 7), torch.zeros(3))
    np.testing.assert_allclose(traj[0, :, 1].numpy(), [0.01, 0.02, 0.03], atol=1e-6)


def test_absolute_controller_is_identity():
    m = trajectory_map_for({"controller_config": dict(OSC, control_delta=False)})
    assert isinstance(m, AbsolutePositionMap)
    actions = torch.randn(3, 5, 7)
    assert torch.equal(m(actions, torch.zeros(3)), actions[..., :3])


def test_tracking_from_gains_and_bad_input():
    assert 0.2 < osc_tracking(150, 1.0, 20) < 0.35
    assert osc_tracking(600, 1.0, 20) > osc_tracking(150, 1.0, 20)  # stiffer controller tracks better
    assert trajectory_map_for({"controller_config": OSC}, control_hz=20).tracking == pytest.approx(osc_tracking(150, 1, 20))
    with pytest.raises(ConfigError, match="controller_config"):
        trajectory_map_for({"task": "Lift"})
    with pytest.raises(ConfigError, match="control_hz"):
        trajectory_map_for({"controller_config": OSC})
    with pytest.raises(ValueError, match="B, T, D_action"):
        DeltaPositionMap()(torch.zeros(4, 7), torch.zeros(3))
    with pytest.raises(ConfigError, match="end-effector position"):
        ee_position_index(["joint_0"])


@pytest.mark.slow
def test_predicted_trajectory_matches_robosuite_lift_motion():
    """A real Lift rollout of the shipped policy: over the free-space approach (the first 4 chunks,
    32 steps, before the fingers meet the cube — a contact the map does not model; later chunks were
    measured 2.7–3.0 cm off), the trajectory predicted from each executed chunk and the end-effector
    position at its start is within 1.5 cm of the simulator's on average (measured ~0.8 cm); the
    pure cumulative sum (tracking 1) is off by several cm."""
    from embodied_steer.adapters.lerobot_diffusion import LeRobotDiffusionPolicy
    from embodied_steer.catalog import find_asset
    from embodied_steer.sim.base import to_observation
    from embodied_steer.sim.robosuite_env import RobosuiteEnv

    env = RobosuiteEnv("Lift", horizon=80)
    policy = LeRobotDiffusionPolicy.from_pretrained(find_asset("checkpoints/lift_diffusion"))
    try:
        obs, _ = env.reset(seed=1001)
        policy.reset(seed=1001)
        index = ee_position_index(env.state_names)
        model = trajectory_map_for(env.spec_info.extra, control_hz=env.spec_info.control_hz)
        ideal = trajectory_map_for(env.spec_info.extra, tracking=1.0)
        errors, ideal_errors = [], []
        for _ in range(4):
            chunk = policy.act(to_observation(obs, env.instruction)).actions[:8]
            start = torch.as_tensor(obs["state"][index])
            predicted = model(torch.as_tensor(chunk)[None], start)[0].numpy()
            predicted_ideal = ideal(torch.as_tensor(chunk)[None], start)[0].numpy()
            actual = []
            for a in chunk:
                obs, *_ = env.step(a)
                policy.observe(to_observation(obs, env.instruction))
                actual.append(obs["state"][index])
            errors.append(np.linalg.norm(predicted - np.asarray(actual), axis=1).mean())
            ideal_errors.append(np.linalg.norm(predicted_ideal - np.asarray(actual), axis=1).mean())
        assert np.mean(errors) < 0.015, errors
        assert np.mean(ideal_errors) > 2 * np.mean(errors)
    finally:
        env.close()


def test_placement_overrides_move_the_object_and_reject_bad_names():
    from embodied_steer.sim.robosuite_env import RobosuiteEnv

    env = RobosuiteEnv("Lift", horizon=10, placement={"ObjectSampler": {"x_range": [0.10, 0.12]}})
    try:
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            assert 0.095 <= obs["env_state"][0] <= 0.125  # cube x (table centre at 0)
        assert env.spec_info.extra["placement"]["ObjectSampler"]["x_range"] == [0.10, 0.12]
        assert env.spec_info.extra["controller_config"]["output_max"][0] == 0.05
    finally:
        env.close()
    with pytest.raises(ConfigError, match="unknown sampler 'Cube'"):
        RobosuiteEnv("Lift", horizon=10, placement={"Cube": {"x_range": [0.1, 0.2]}})
    with pytest.raises(ConfigError, match="low <= high"):
        RobosuiteEnv("Lift", horizon=10, placement={"ObjectSampler": {"y_range": [0.2, 0.1]}})
