"""robosuite wrapper: observation format, seeding, control direction, cameras, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_steer.core import ConfigError
from embodied_steer.sim.base import to_observation
from embodied_steer.sim.robosuite_env import STATE_NAMES, RobosuiteEnv


@pytest.fixture(scope="module")
def lift():
    env = RobosuiteEnv("Lift", horizon=30)
    yield env
    env.close()


@pytest.fixture(scope="module")
def can():
    env = RobosuiteEnv("PickPlaceCan", horizon=30)
    yield env
    env.close()


@pytest.mark.parametrize("name", ["lift", "can"])
def test_observation_matches_space(name, request):
    env = request.getfixturevalue(name)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["state"].shape == (len(STATE_NAMES),) and obs["state"].dtype == np.float32
    assert info["is_success"] is False and info["instruction"] == env.instruction
    assert info["render_settings"]["cameras"] == []
    o = to_observation(obs, env.instruction).validate()
    assert o.instruction and o.env_state is not None


def test_seeded_resets_are_reproducible(lift):
    a, _ = lift.reset(seed=3)
    b, _ = lift.reset(seed=3)
    c, _ = lift.reset(seed=4)
    np.testing.assert_array_equal(a["env_state"], b["env_state"])
    assert np.abs(a["env_state"][:3] - c["env_state"][:3]).max() > 1e-4


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_delta_action_moves_end_effector_in_commanded_direction(lift, axis):
    obs, _ = lift.reset(seed=0)
    start = obs["state"][:3].copy()
    action = np.zeros(7, np.float32)
    action[axis] = 0.5
    for _ in range(8):
        obs, *_ = lift.step(action)
    moved = obs["state"][:3] - start
    assert moved[axis] > 0.03
    assert np.abs(np.delete(moved, axis)).max() < moved[axis] / 3


def test_gripper_closes_on_positive_command(lift):
    obs, _ = lift.reset(seed=0)
    opening = obs["state"][7] - obs["state"][8]
    for _ in range(10):
        obs, *_ = lift.step(np.array([0, 0, 0, 0, 0, 0, 1.0], np.float32))
    assert obs["state"][7] - obs["state"][8] < opening - 0.02


def test_truncates_at_horizon(lift):
    lift.reset(seed=0)
    for t in range(30):
        _, _, terminated, truncated, info = lift.step(np.zeros(7, np.float32))
    assert truncated and not terminated and not info["is_success"]


def test_bad_actions_and_names_are_rejected(lift):
    lift.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        lift.step(np.array([np.nan, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        lift.step(np.zeros(6))
    with pytest.raises(ConfigError, match="unknown robosuite task 'Lfit'"):
        RobosuiteEnv("Lfit")
    with pytest.raises(ConfigError, match="controller 'OSC_FOO'"):
        RobosuiteEnv("Lift", controller="OSC_FOO")


def test_pickplace_exposes_its_goal(can):
    goal = can.spec_info.extra["goal_pos"]
    assert len(goal) == 3 and goal[1] > 0.3  # the can's bin lies at +y


@pytest.mark.slow
def test_cameras_render_real_images_with_recorded_settings():
    env = RobosuiteEnv("Lift", cameras=["agentview", "robot0_eye_in_hand"], image_size=(64, 64),
                       shadow_size=512, offscreen_samples=0, horizon=5)
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        top = obs["pixels"]["agentview"]
        wrist = obs["pixels"]["robot0_eye_in_hand"]
        assert top.shape == (64, 64, 3) and top.std() > 10  # not blank
        assert np.abs(top.astype(int) - wrist.astype(int)).mean() > 10  # two different views
        # upright: the bright table fills the bottom of agentview, the darker back wall the top
        assert top[-8:].mean() > top[:8].mean()
        assert info["render_settings"] == {"cameras": ["agentview", "robot0_eye_in_hand"], "height": 64,
                                           "width": 64, "shadow_size": 512, "offscreen_samples": 0}
    finally:
        env.close()


@pytest.mark.slow
def test_two_camera_envs_in_one_process_render_their_own_scenes():
    """robosuite renders into the current GL context; each env must make its own current."""
    kw = dict(cameras=["agentview"], image_size=(48, 48), shadow_size=512, offscreen_samples=0, horizon=5)
    lift = RobosuiteEnv("Lift", **kw)
    alone = lift.reset(seed=0)[0]["pixels"]["agentview"].astype(int)
    can = RobosuiteEnv("PickPlaceCan", **kw)
    try:
        can_img = can.reset(seed=0)[0]["pixels"]["agentview"].astype(int)
        again = lift.reset(seed=0)[0]["pixels"]["agentview"].astype(int)
        assert np.abs(again - alone).mean() < 2  # Lift still renders Lift
        assert np.abs(can_img - alone).mean() > 10  # and the Can scene is a different picture
    finally:
        can.close()
        lift.close()


def test_soft_reset_does_not_carry_the_previous_episode_over(lift):
    """After an episode that closed the gripper, a seeded reset behaves like the first one."""
    def first_steps():
        obs, _ = lift.reset(seed=7)
        out = [obs["state"]]
        for _ in range(3):
            out.append(lift.step(np.zeros(7, np.float32))[0]["state"])
        return np.stack(out)

    before = first_steps()
    for _ in range(10):
        lift.step(np.array([0, 0, 0, 0, 0, 0, 1.0], np.float32))
    np.testing.assert_allclose(first_steps(), before, atol=1e-9)
