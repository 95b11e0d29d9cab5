"""Potential-based shaping of the DSRL training reward (embodied_steer/dsrl/shaping.py)."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_steer.core.errors import ConfigError
from embodied_steer.dsrl.features import ObsFeatures
from embodied_steer.dsrl.horizon import TrainingHorizon
from embodied_steer.dsrl.raw import RawActionEnv
from embodied_steer.dsrl.shaping import LiftPotential, make_potential, shape_rows, shaped_reward
from embodied_steer.dsrl.toy import ToyFlowPolicy, ToyGoalEnv
from embodied_steer.dsrl.train import AdaptConfig
from embodied_steer.dsrl.wrapper import LatentNoiseEnv

LIFT = ObsFeatures(9, 10, 2)


def lift_obs(cube_z: float, gripper_to_cube: tuple[float, float, float], opening: float = 0.039,
             older: float = 0.0) -> np.ndarray:
    """An agent observation (2 frames of 9 state + 10 Lift object-state values); only the newest
    frame is set (fingers at ±``opening`` m), the older one holds ``older`` everywhere."""
    frame = np.zeros(19, np.float32)
    frame[7:9] = (opening, -opening)
    frame[9 + 2] = cube_z
    frame[9 + 7 : 9 + 10] = gripper_to_cube
    return np.concatenate([np.full(19, older, np.float32), frame])


def toy_potential(obs: np.ndarray) -> np.ndarray:
    """Closeness of the toy point to its goal: ``−|goal − pos|`` (state = pos, env_state = goal)."""
    obs = np.asarray(obs, np.float64)
    return -np.linalg.norm(obs[..., 2:4] - obs[..., 0:2], axis=-1)


def test_lift_potential_grows_with_reaching_grasping_and_lifting_and_reads_the_newest_frame():
    phi = LiftPotential(LIFT, scale=0.5)
    far = phi(lift_obs(0.821, (0.3, 0.0, 0.1)))
    near = phi(lift_obs(0.821, (0.02, 0.0, 0.0)))
    at = phi(lift_obs(0.821, (0.0, 0.0, 0.0)))
    closed = phi(lift_obs(0.821, (0.0, 0.0, 0.0), opening=0.022))
    half_up = phi(lift_obs(0.8305, (0.0, 0.0, 0.0), opening=0.022))
    lifted = phi(lift_obs(0.85, (0.0, 0.0, 0.0), opening=0.022))
    assert 0.0 <= far < near < at < closed < half_up < lifted
    assert at == pytest.approx(0.5 / 3) and closed == pytest.approx(1.0 / 3)
    assert half_up == pytest.approx(0.5 * 2.5 / 3) and lifted == pytest.approx(0.5)
    # closing the fingers away from the cube is not a grasp
    assert phi(lift_obs(0.821, (0.3, 0.0, 0.1), opening=0.0)) == pytest.approx(far, abs=0.01)
    # the older frame does not count; a batch gives one potential per row
    assert phi(lift_obs(0.821, (0.0, 0.0, 0.0), older=5.0)) == pytest.approx(at)
    batch = np.stack([lift_obs(0.821, (0.3, 0.0, 0.1)), lift_obs(0.85, (0.0, 0.0, 0.0), opening=0.022)])
    np.testing.assert_allclose(phi(batch), [far, lifted])


def test_lift_potential_refuses_agents_without_the_cube_and_bad_scales():
    with pytest.raises(ConfigError, match="env_state"):
        LiftPotential(ObsFeatures(9, 0, 2))
    with pytest.raises(ConfigError, match="shaping_scale"):
        LiftPotential(LIFT, scale=1.5)
    with pytest.raises(ConfigError, match="38"):
        LiftPotential(LIFT)(np.zeros(19))
    with pytest.raises(ConfigError, match="reward_shaping"):
        make_potential("dense", LIFT)
    assert make_potential("none", LIFT) is None


def test_shaped_chunk_reward_adds_the_discounted_potential_difference_and_zero_after_a_terminal():
    phi = LiftPotential(LIFT)
    s, s2 = lift_obs(0.821, (0.1, 0.0, 0.0)), lift_obs(0.83, (0.0, 0.0, 0.0), opening=0.022)
    assert shaped_reward(phi, s, 0.0, 0.9, False, s2) == pytest.approx(0.9 * phi(s2) - phi(s))
    assert shaped_reward(phi, s, 1.0, 0.9, True, s2) == pytest.approx(1.0 - phi(s))


def test_offline_rows_are_shaped_and_their_monte_carlo_return_moves_by_the_start_potential():
    phi = LiftPotential(LIFT)
    s0, s1, s2 = (lift_obs(0.821, (0.1, 0.0, 0.0)), lift_obs(0.821, (0.0, 0.0, 0.0)), lift_obs(0.85, (0.0, 0.0, 0.0)))
    a = np.zeros(56, np.float32)
    rows = [(s0, a, 0.0, 0.5, 0.0, s1, 0.5), (s1, a, 1.0, 0.5, 1.0, s2, 1.0)]
    shaped = shape_rows(phi, rows)
    assert shaped[0][2] == pytest.approx(0.5 * phi(s1) - phi(s0))
    assert shaped[1][2] == pytest.approx(1.0 - phi(s1))
    # G' = G − Φ(s): and G' is still the discounted sum of the shaped rewards
    assert shaped[0][6] == pytest.approx(0.5 - phi(s0))
    assert shaped[0][6] == pytest.approx(shaped[0][2] + 0.5 * shaped[1][2])
    nan_row = shape_rows(phi, [(s0, a, 0.0, 0.5, 0.0, s1, float("nan"))])[0]
    assert np.isnan(nan_row[6])


@pytest.mark.parametrize("cut", [None, "fail"])
def test_shaping_in_the_latent_env_telescopes_to_the_task_return_minus_the_start_potential(cut):
    """Over a whole training episode the shaped return (chunk rewards discounted by each chunk's
    γ^n) is the task return minus Φ(s_0): shaping moves every policy's value by the same amount."""
    horizon = TrainingHorizon(10, cut) if cut else None
    plain = LatentNoiseEnv(ToyGoalEnv(), ToyFlowPolicy(), gamma=0.9, horizon=horizon)
    shaped = LatentNoiseEnv(ToyGoalEnv(), ToyFlowPolicy(), gamma=0.9, horizon=horizon, shaping=toy_potential)
    rng = np.random.default_rng(0)
    latents = [rng.uniform(-1, 1, 8).astype(np.float32) for _ in range(8)]
    obs0, _ = shaped.reset(seed=5)
    plain.reset(seed=5)
    task_return = shaped_return = 0.0
    weight = 1.0
    for w in latents:
        _, r_task, term_p, trunc_p, info_p = plain.step(w)
        _, r, term, trunc, info = shaped.step(w)
        assert info["task_reward"] == pytest.approx(r_task) == pytest.approx(info_p["task_reward"])
        assert (term, trunc) == (term_p, trunc_p)
        task_return += weight * r_task
        shaped_return += weight * r
        weight *= info["discount"]
        if term or trunc:
            break
    assert term or trunc
    last = 0.0 if term else weight * float(toy_potential(shaped.agent_observation()))
    # a truncated episode keeps Φ(s_T) (it is bootstrapped); a terminated one ends at Φ = 0
    assert shaped_return == pytest.approx(task_return - float(toy_potential(obs0)) + last, rel=1e-5, abs=1e-6)
    assert shaped_return != pytest.approx(task_return)


def test_raw_action_env_shapes_each_step():
    env = RawActionEnv(ToyGoalEnv(), shaping=toy_potential, gamma=0.9)
    obs, _ = env.reset(seed=1)
    nxt, r, terminated, _, info = env.step(np.array([1.0, 0.0], np.float32))
    assert not terminated
    assert r == pytest.approx(info["task_reward"] + 0.9 * toy_potential(nxt) - toy_potential(obs), rel=1e-5)


def test_lift_potential_matches_the_robosuite_lift_layout():
    """The layout and constants LiftPotential assumes, on the toolkit's Lift: the cube settles at
    z ≈ 0.821 m, the gripper→cube offset (object-state 7:10) is eef_pos − cube_pos, the fingers
    open at ≈ ±0.039 m; and the scripted expert's grasp-and-lift raises the potential to its top."""
    from embodied_steer.experts.scripted import LiftExpert
    from embodied_steer.eval.runner import run_episode
    from embodied_steer.sim.robosuite_env import RobosuiteEnv

    features = ObsFeatures(9, 10, 1)
    phi = LiftPotential(features)
    env = RobosuiteEnv("Lift")
    try:
        seen: list[np.ndarray] = []
        result = run_episode(env, LiftExpert(seed=0), episode=0, seed=0,
                             on_step=lambda o, a: seen.append(np.concatenate([o["state"], o["env_state"]])))
    finally:
        env.close()
    obs = np.stack(seen)
    settled = obs[5]
    assert settled[9 + 2] == pytest.approx(0.821, abs=0.003)
    np.testing.assert_allclose(settled[9 + 7 : 9 + 10], settled[:3] - settled[9 : 9 + 3], atol=1e-4)
    assert np.abs(obs[5:15, 7:9]).mean() == pytest.approx(0.039, abs=0.002)  # the expert opens first
    potentials = phi(obs)
    assert result.success
    assert potentials[5] < 0.5 / 3  # away from the cube, fingers open, cube down
    assert potentials[-1] > 0.45  # at the cube, fingers closed on it, almost at the success height
    assert float(phi.terms(obs[-1])["grasp"]) > 0.8


def test_adapt_config_checks_the_shaping_settings():
    with pytest.raises(ConfigError, match="reward_shaping"):
        AdaptConfig(reward_shaping="dense").check()
    with pytest.raises(ConfigError, match="shaping_scale"):
        AdaptConfig(reward_shaping="lift", shaping_scale=0.0).check()
    with pytest.raises(ConfigError, match="shaping_sharpness"):
        AdaptConfig(reward_shaping="lift", shaping_sharpness=-1.0).check()
    AdaptConfig(reward_shaping="lift").check()


def test_a_sharper_reach_separates_a_near_miss_from_a_grasp_position_more():
    """The zero-noise policy's misses stop ~3.7 cm from the cube; grasps happen within ~1 cm."""
    miss, ready = lift_obs(0.821, (0.037, 0.0, 0.0)), lift_obs(0.821, (0.01, 0.0, 0.0))
    soft = make_potential("lift", LIFT, 0.9, sharpness=10.0)
    sharp = make_potential("lift", LIFT, 0.9, sharpness=50.0)
    assert sharp(ready) - sharp(miss) > 1.8 * (soft(ready) - soft(miss)) > 0
    with pytest.raises(ConfigError, match="shaping_sharpness"):
        make_potential("lift", LIFT, 0.5, sharpness=0.0)
