"""DSRL: the latent-noise wrapper, the latent maps, DSRL-NA's losses, the adapted policy, checkpoints."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from embodied_steer.core.errors import ConfigError, NoiseBoundsError, RewardError, UnsupportedIntervention
from embodied_steer.core.policy import NoiseSpec
from embodied_steer.dsrl.horizon import TrainingHorizon
from embodied_steer.dsrl.latent import LatentNoiseMap
from embodied_steer.dsrl.raw import RawActionEnv
from embodied_steer.dsrl.toy import ToyFlowPolicy, ToyGoalEnv
from embodied_steer.dsrl.wrapper import LatentNoiseEnv
from embodied_steer.sim.base import to_observation


# ------------------------------------------------------------------------------------------ latent maps
def test_full_latent_is_a_reshape():
    m = LatentNoiseMap(NoiseSpec((4, 3), 3), "full", bound=1.5)
    w = torch.linspace(-1, 1, 12)[None]
    assert m.shape == (12,)
    assert torch.equal(m.to_noise(w), w.reshape(1, 4, 3))


def test_tile_latent_repeats_over_the_horizon():
    m = LatentNoiseMap(NoiseSpec((5, 2), 2), "tile", bound=1.0)
    noise = m.to_noise(np.array([[0.25, -0.5]], np.float32))
    assert noise.shape == (1, 5, 2)
    assert torch.allclose(noise[0], torch.tensor([[0.25, -0.5]] * 5))


def test_projected_latent_has_unit_variance_noise_on_average():
    m = LatentNoiseMap(NoiseSpec((16, 7), 7), "project", bound=10.0, latent_dim=8, seed=3)
    w = torch.randn(4000, 8, generator=torch.Generator().manual_seed(0)).clamp(-10, 10)
    noise = m.to_noise(w)
    assert noise.shape == (4000, 16, 7)
    assert noise.var(0).mean().item() == pytest.approx(1.0, rel=0.1)
    again = LatentNoiseMap.from_dict(m.to_dict())
    assert torch.allclose(again.to_noise(w[:5]), noise[:5])


@pytest.mark.parametrize("bad, message", [
    (np.full((1, 12), 1.6, np.float32), "outside the box"),
    (np.zeros((1, 11), np.float32), "shape"),
    (np.full((1, 12), np.nan, np.float32), "NaN"),
])
def test_bad_latents_are_rejected(bad, message):
    m = LatentNoiseMap(NoiseSpec((4, 3), 3), "full", bound=1.5)
    with pytest.raises(NoiseBoundsError, match=message):
        m.to_noise(bad)


def test_bad_latent_settings_are_config_errors():
    with pytest.raises(ConfigError, match="mode"):
        LatentNoiseMap(NoiseSpec((4, 3), 3), "sparse")
    with pytest.raises(ConfigError, match="latent_dim"):
        LatentNoiseMap(NoiseSpec((4, 3), 3), "project")
    with pytest.raises(ConfigError, match="positive"):
        LatentNoiseMap(NoiseSpec((4, 3), 3), "full", bound=0.0)


def test_a_given_latent_basis_round_trips_and_bad_rows_are_config_errors():
    spec = NoiseSpec((4, 3), 3)
    rows = torch.linalg.qr(torch.randn(12, 2, generator=torch.Generator().manual_seed(1)))[0].T
    m = LatentNoiseMap(spec, "project", bound=1.0, latent_dim=2, basis="sensitivity", rows=rows)
    w = torch.tensor([[0.5, -1.0]])
    assert torch.allclose(m.to_noise(w).reshape(1, -1), (w @ rows) * (12 / 2) ** 0.5, atol=1e-6)
    again = LatentNoiseMap.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again.basis == "sensitivity" and torch.equal(again.to_noise(w), m.to_noise(w))
    assert "rows" not in m.describe()
    old = {k: v for k, v in LatentNoiseMap(spec, "project", 1.0, 2, seed=5).to_dict().items() if k != "basis"}
    assert LatentNoiseMap.from_dict(old).basis == "random"  # maps saved before bases existed
    for kw, message in [({"rows": rows[:1]}, "shape"), ({"rows": rows * 2}, "orthonormal"),
                        ({"rows": rows * float("nan")}, "NaN"), ({}, "needs its rows"),
                        ({"basis": "pca", "rows": rows}, "latent_basis must be one of"),
                        ({"rows": rows, "scales": [1.0, -1.0]}, "scales"), ({"rows": rows, "scales": [1.0]}, "scales")]:
        with pytest.raises(ConfigError, match=message):
            LatentNoiseMap(spec, "project", 1.0, 2, **({"basis": "sensitivity"} | kw))
    with pytest.raises(ConfigError, match="needs latent mode 'project'"):
        LatentNoiseMap(spec, "tile", 1.0, basis="sensitivity", rows=rows)


def test_sensitivity_basis_is_the_top_right_singular_space_of_a_linear_sampler():
    from embodied_steer.dsrl.sensitivity import sensitivity_basis

    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    v, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    a = u[:, :3] @ torch.diag(torch.tensor([3.0, 2.0, 1.0])) @ v[:, :3].T  # (6 actions, 12 noise), rank 3

    def decode(obs, noise):
        return noise.reshape(len(noise), -1) @ a.T + obs[:, :1]  # the state shifts, the noise moves

    rows, scales, summary = sensitivity_basis(decode, torch.randn(5, 4, generator=g), (4, 3), 2, bound=1.0)
    top2 = v[:, :2].T
    assert torch.allclose(rows.T @ rows, top2.T @ top2, atol=1e-4)  # the same subspace
    assert summary["trace_share_zero"] == pytest.approx(13 / 14, abs=1e-4)  # (9 + 4) / (9 + 4 + 1)
    assert summary["trace_share_random_basis"] == pytest.approx(2 / 12)
    again, _, _ = sensitivity_basis(decode, torch.randn(5, 4, generator=g), (4, 3), 2, bound=1.0)
    assert torch.allclose(again, rows, atol=1e-5)  # signs fixed: the same rows, not just the same span

    # whitened, a unit latent along either axis moves the actions alike: as far as an average random
    # row would (squared move tr(AᵀA) / d = 14 / 2), not 9 : 4 as the unscaled top rows do
    white = LatentNoiseMap(NoiseSpec((4, 3), 3), "project", 1.0, 2, basis="sensitivity", rows=rows, scales=scales)
    moves = [float((white.to_noise(torch.eye(2)[i : i + 1]).reshape(1, -1) @ a.T).square().sum()) for i in range(2)]
    assert moves == pytest.approx([7.0, 7.0], rel=1e-3)
    assert torch.equal(LatentNoiseMap.from_dict(white.to_dict()).to_noise(torch.ones(1, 2)), white.to_noise(torch.ones(1, 2)))


def test_sensitivity_basis_spends_the_latent_on_the_executed_steps():
    from embodied_steer.dsrl.sensitivity import compute_latent_map

    # the toy sampler moves each action entry with its own noise entry; 2 of the 4 steps are executed
    env = LatentNoiseEnv(ToyGoalEnv(), ToyFlowPolicy(chunk_size=4), latent_mode="project", latent_dim=4,
                         execute_steps=2, bound=1.0)
    obs = np.stack([env.reset(seed=i)[0] for i in range(3)])
    latent, summary = compute_latent_map(env, obs, 8, seed=0, scale="unit")
    assert latent.basis == "sensitivity" and summary["trace_share_zero"] == pytest.approx(1.0)
    assert float(latent.rows[:, 4:].abs().max()) < 1e-5  # nothing on the noise of unexecuted steps
    white, _ = compute_latent_map(env, obs, 8, seed=0)  # whitened (the default): the same rows, equal scales
    assert torch.allclose(white.rows, latent.rows) and torch.allclose(white.scales, white.scales[0].expand(4))

    def executed_move(m):  # squared move of the executed actions per unit latent along each axis
        env.reset(seed=0)
        zero = env._chunk(m.to_noise(np.zeros(4, np.float32)))[:2]
        return np.mean([np.square(env._chunk(m.to_noise(np.eye(4, dtype=np.float32)[i]))[:2] - zero).sum()
                        for i in range(4)])

    assert executed_move(latent) > 1.5 * executed_move(env.latent)  # a random basis spends ~half on unexecuted steps
    env.use_latent(latent)
    env.reset(seed=0)
    assert np.allclose(env.decode(np.eye(4, dtype=np.float32)[0]), env._chunk(latent.to_noise(np.eye(4)[0])))
    with pytest.raises(ConfigError, match="does not fit"):
        env.use_latent(LatentNoiseMap(env.latent.spec, "project", 1.0, 3))


# ------------------------------------------------------------------------------------------ the wrapper
def toy_wrapper(**kw) -> LatentNoiseEnv:
    return LatentNoiseEnv(ToyGoalEnv(), ToyFlowPolicy(), **kw)


def test_spaces_follow_the_noise_spec_and_the_features():
    env = toy_wrapper(bound=1.25)
    assert env.action_space.shape == (8,) and env.action_space.high.max() == pytest.approx(1.25)
    assert env.observation_space.shape == (4,)  # state (2) + env_state (2), history 1
    assert toy_wrapper(latent_mode="tile").action_space.shape == (2,)
    assert toy_wrapper(use_env_state=False).observation_space.shape == (2,)


def test_random_latents_are_the_base_noise_clipped_to_the_box_unless_uniform_is_asked():
    base = toy_wrapper(bound=1.5).action_space
    base.seed(0)
    draws = np.stack([base.sample() for _ in range(4000)])
    assert draws.dtype == np.float32 and np.abs(draws).max() <= 1.5
    # a standard normal clipped at 1.5 keeps ~87 % of draws inside (-1.5, 1.5) and has std ~0.87;
    # a uniform over the box puts a third of its mass beyond |1|
    assert np.mean(np.abs(draws) < 1.5) == pytest.approx(0.866, abs=0.02)
    assert np.mean(np.abs(draws) > 1.0) == pytest.approx(0.317, abs=0.03)
    uniform = toy_wrapper(bound=1.5, warmup_noise="uniform").action_space
    rng = np.random.default_rng(0)
    u = np.stack([uniform.draw(rng) for _ in range(500)])
    assert np.mean(np.abs(u) > 1.0) == pytest.approx(1 / 3, abs=0.03)
    assert np.mean(np.abs(u) > 1.45) == pytest.approx(0.05 / 1.5, abs=0.01)
    with pytest.raises(ConfigError, match="warmup_noise"):
        toy_wrapper(warmup_noise="gaussian")


def test_chunk_reward_is_discounted_and_the_discount_is_reported():
    gamma = 0.9
    env = toy_wrapper(gamma=gamma)
    obs, _ = env.reset(seed=3)
    w = np.full(8, 0.3, np.float32)
    _, reward, terminated, _, info = env.step(w)
    # replay the same chunk on a fresh env by hand
    ref_env = ToyGoalEnv()
    ref_env.reset(seed=3)
    policy = ToyFlowPolicy()
    policy.observe(to_observation(ref_env._obs()))
    chunk = policy.generate(1, noise=torch.as_tensor(w).reshape(1, 4, 2)).actions[0]
    rewards = [ref_env.step(a)[1] for a in chunk]
    assert info["env_steps"] == 4 and not terminated
    assert reward == pytest.approx(sum(gamma**i * r for i, r in enumerate(rewards)), rel=1e-6)
    assert info["discount"] == pytest.approx(gamma**4)
    assert env.chunk_discount == pytest.approx(gamma**4)
    np.testing.assert_allclose(info["executed_actions"], chunk)
    assert env.total_env_steps == 4


def test_episode_end_inside_a_chunk_stops_execution():
    env = LatentNoiseEnv(ToyGoalEnv(horizon=6), ToyFlowPolicy(), gamma=0.5)
    env.reset(seed=0)
    env.step(np.zeros(8, np.float32))
    _, _, terminated, truncated, info = env.step(np.zeros(8, np.float32))
    assert truncated and not terminated
    assert info["env_steps"] == 2 and info["discount"] == pytest.approx(0.25)


@pytest.mark.parametrize("cut", ["truncate", "fail"])
def test_training_horizon_cuts_episodes_as_a_time_limit_or_a_failure(cut):
    # The toy env's own horizon is 16; a training limit of 6 ends the second chunk after 2 actions.
    env = LatentNoiseEnv(ToyGoalEnv(), ToyFlowPolicy(), gamma=0.5, horizon=TrainingHorizon(6, cut))
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(np.zeros(8, np.float32))
    assert not (terminated or truncated) and not info["horizon_cut"]
    _, _, terminated, truncated, info = env.step(np.zeros(8, np.float32))
    assert info["env_steps"] == 2 and info["horizon_cut"] and not info["is_success"]
    assert (terminated, truncated) == ((True, False) if cut == "fail" else (False, True))
    env.reset(seed=0)  # the count restarts with every episode
    assert not env.step(np.zeros(8, np.float32))[4]["horizon_cut"]


def test_training_horizon_leaves_a_success_and_the_env_limit_alone():
    limit = TrainingHorizon(4, "fail")
    assert limit.apply(4, True, False) == (True, False, False)  # the env terminated it (success)
    assert limit.apply(4, False, True) == (False, True, False)  # the env's own time limit
    assert limit.apply(3, False, False) == (False, False, False)
    assert TrainingHorizon().apply(10**6, False, False) == (False, False, False)


def test_raw_action_env_has_the_same_training_horizon():
    env = RawActionEnv(ToyGoalEnv(), horizon=TrainingHorizon(3, "fail"))
    env.reset(seed=0)
    ends = [env.step(np.zeros(2, np.float32))[2:5] for _ in range(3)]
    assert [e[0] for e in ends] == [False, False, True] and ends[-1][2]["horizon_cut"]


@pytest.mark.parametrize("steps, cut, message", [(0, "fail", "train_horizon"), (10, "drop", "train_horizon_cut")])
def test_bad_training_horizons_are_config_errors(steps, cut, message):
    with pytest.raises(ConfigError, match=message):
        TrainingHorizon(steps, cut)


def test_same_noise_same_transition_different_noise_different():
    w = np.random.default_rng(0).uniform(-1, 1, 8).astype(np.float32)
    results = []
    for noise in (w, w, -w):
        env = toy_wrapper()
        env.reset(seed=11)
        obs, reward, *_ = env.step(noise)
        results.append((obs, reward))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]
    assert not np.allclose(results[0][0], results[2][0])


def test_noise_outside_the_box_is_an_error():
    env = toy_wrapper(bound=1.0)
    env.reset(seed=0)
    with pytest.raises(NoiseBoundsError, match=r"\[-1.0, 1.0\]"):
        env.step(np.full(8, 1.5, np.float32))


def test_policy_without_noise_hook_is_refused():
    class Blind(ToyFlowPolicy):
        interventions = frozenset()

    with pytest.raises(UnsupportedIntervention, match="noise"):
        LatentNoiseEnv(ToyGoalEnv(), Blind())


def test_action_dimension_mismatch_is_refused():
    env = ToyGoalEnv()
    env.action_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    with pytest.raises(ConfigError, match="3"):
        LatentNoiseEnv(env, ToyFlowPolicy())


def test_stochastic_sampler_is_refused():
    env = LatentNoiseEnv(ToyGoalEnv(), ToyFlowPolicy(stochastic=True))
    with pytest.raises(ConfigError, match="deterministic sampler"):
        env.reset(seed=0)


def test_nan_reward_is_an_error():
    class NaNReward(ToyGoalEnv):
        def step(self, action):
            obs, _, term, trunc, info = super().step(action)
            return obs, float("nan"), term, trunc, info

    env = LatentNoiseEnv(NaNReward(), ToyFlowPolicy())
    env.reset(seed=0)
    with pytest.raises(RewardError, match="nan"):
        env.step(np.zeros(8, np.float32))


def test_tiny_lerobot_diffusion_in_a_lift_shaped_env():
    from helpers import ACTION_DIM, ENV_DIM, STATE_DIM, tiny_diffusion_policy

    class LiftShaped(ToyGoalEnv):
        def __init__(self):
            super().__init__()
            self.action_space = gym.spaces.Box(-1, 1, (ACTION_DIM,), np.float32)
            self.observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
                                                      "env_state": gym.spaces.Box(-np.inf, np.inf, (ENV_DIM,), np.float32)})

        def _obs(self):
            return {"state": np.full(STATE_DIM, self.pos[0], np.float32), "env_state": np.zeros(ENV_DIM, np.float32)}

        def step(self, action):
            return super().step(np.asarray(action)[:2])

    policy = tiny_diffusion_policy()
    env = LatentNoiseEnv(LiftShaped(), policy, latent_mode="tile")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2 * (STATE_DIM + ENV_DIM),)  # the policy's two-step history
    assert env.action_space.shape == (ACTION_DIM,)
    _, _, _, _, info = env.step(np.full(ACTION_DIM, 0.5, np.float32))
    assert info["executed_actions"].shape == (policy.info.execute_steps, ACTION_DIM)

    # a sensitivity basis through LeRobot's batched decode: orthonormal rows that move the actions
    from embodied_steer.dsrl.sensitivity import compute_latent_map

    proj = LatentNoiseEnv(LiftShaped(), policy, latent_mode="project", latent_dim=3)
    states = np.stack([proj.reset(seed=i)[0] for i in range(2)])
    latent, summary = compute_latent_map(proj, states, 2, seed=0)
    assert torch.allclose(latent.projection_rows @ latent.projection_rows.T, torch.eye(3), atol=1e-4)
    assert summary["trace_share_zero"] > summary["trace_share_random_basis"]
    proj.use_latent(latent)
    proj.reset(seed=0)
    assert not np.allclose(proj.decode(np.zeros(3, np.float32)), proj.decode(np.full(3, 0.5, np.float32)))


def test_ddpm_diffusion_is_refused_as_nondeterministic():
    from helpers import tiny_diffusion_policy

    from embodied_steer.dsrl.toy import ToyGoalEnv as _Env

    policy = tiny_diffusion_policy(scheduler="DDPM")
    env = _Env()
    env.action_space = gym.spaces.Box(-1, 1, (7,), np.float32)
    env.observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (9,), np.float32),
                                             "env_state": gym.spaces.Box(-np.inf, np.inf, (10,), np.float32)})
    env._obs = lambda: {"state": np.zeros(9, np.float32), "env_state": np.zeros(10, np.float32)}
    wrapped = LatentNoiseEnv(env, policy)
    with pytest.raises(ConfigError, match="DDIM"):
        wrapped.reset(seed=0)


# ------------------------------------------------------------------------------------------ DSRL-NA
def na_agent(seed=0):
    from embodied_steer.dsrl.na import DSRLNA, NASettings, make_decoder

    env = toy_wrapper()
    decode = make_decoder(env.policy, env.features, env.execute_steps)
    agent = DSRLNA(env.features.dim, 4 * 2, env.latent, decode, NASettings(hidden=[32, 32], batch_size=16), seed)
    return env, agent, decode


def na_batch(n=16, terminal=0.0):
    g = torch.Generator().manual_seed(0)
    return {"obs": torch.randn(n, 4, generator=g), "action": torch.rand(n, 8, generator=g) * 2 - 1,
            "reward": torch.randn(n, generator=g), "discount": torch.full((n,), 0.9),
            "terminal": torch.full((n,), terminal), "next_obs": torch.randn(n, 4, generator=g)}


def test_na_decoder_matches_the_policy():
    env, _, decode = na_agent()
    obs, _ = env.reset(seed=2)
    w = torch.full((1, 8), 0.7)
    expected = env.decode(w.numpy()[0])[: env.execute_steps].reshape(-1)
    np.testing.assert_allclose(decode(torch.as_tensor(obs)[None], env.latent.to_noise(w))[0].numpy(), expected, atol=1e-6)


def test_na_terminal_target_is_the_reward_and_losses_fall():
    _, agent, _ = na_agent()
    batch = na_batch(terminal=1.0)
    with torch.no_grad():
        for p in agent.q_a_target.parameters():
            p.add_(100.0)  # a wildly wrong target critic must not matter on terminal transitions
    expected = ((agent.q_a(batch["obs"], batch["action"]) - batch["reward"]) ** 2).mean()
    assert agent.critic_loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    first = {k: v for k, v in agent.update(batch).items()}
    for _ in range(60):
        last = agent.update(batch)
    assert last["loss/q_a"] < 0.2 * first["loss/q_a"]
    assert last["loss/q_w"] < first["loss/q_w"] or last["loss/q_w"] < 1e-2


def test_na_update_reports_what_the_actor_does_without_drawing_random_numbers():
    _, agent, _ = na_agent()
    stats = agent.update(na_batch())
    assert {"actor/entropy", "actor/mean_latent_norm", "actor/std", "actor/q_w_at_mean"} <= stats.keys()
    obs = na_batch()["obs"]
    with torch.no_grad():  # a zero mean head puts the deterministic latent at the zero-noise policy
        agent.actor.mu.weight.zero_()
        agent.actor.mu.bias.zero_()
        agent.actor.log_std.weight.zero_()
        agent.actor.log_std.bias.fill_(math.log(0.5))
    torch_state, gen_state = torch.get_rng_state(), agent.generator.get_state()
    diag = agent.actor_diagnostics(obs, torch.full((obs.shape[0],), -3.0))
    assert torch.equal(torch.get_rng_state(), torch_state) and torch.equal(agent.generator.get_state(), gen_state)
    assert diag["actor/mean_latent_norm"] == 0.0
    assert diag["actor/std"] == pytest.approx(0.5)
    assert diag["actor/entropy"] == pytest.approx(3.0)
    expected_q = agent.q_w(obs, torch.zeros(obs.shape[0], 8)).min(0).values.mean().item()
    assert diag["actor/q_w_at_mean"] == pytest.approx(expected_q, rel=1e-5)


def test_na_noise_backup_bootstraps_from_the_noise_critic_without_decoding():
    from embodied_steer.dsrl.na import DSRLNA, NASettings

    env = toy_wrapper()

    def no_decode(obs, noise):
        raise AssertionError("the noise backup must not run the base policy")

    agent = DSRLNA(env.features.dim, 8, env.latent, no_decode,
                   NASettings(hidden=[32, 32], batch_size=32, decode_batch=4, backup="noise"), 0)
    batch = na_batch(n=32)
    with torch.no_grad():
        agent.q_w_target.nets[0][-1].bias.add_(5.0)  # member 0 high: the min must come from member 1
        torch.manual_seed(7)
        w_next, _ = agent.actor(batch["next_obs"])
        q_next = agent.q_w_target(batch["next_obs"], w_next)[1]
        y = batch["reward"] + batch["discount"] * q_next
        expected = ((agent.q_a(batch["obs"], batch["action"]) - y) ** 2).mean()
        torch.manual_seed(7)
        assert agent.critic_loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="na_backup"):
        DSRLNA(env.features.dim, 8, env.latent, no_decode, NASettings(hidden=[8], backup="both"), 0)


def test_na_base_prior_pulls_the_actor_to_the_base_noise_at_a_fixed_temperature():
    from embodied_steer.dsrl.na import DSRLNA, NASettings

    env, _, decode = na_agent()
    agent = DSRLNA(env.features.dim, 8, env.latent, decode,
                   NASettings(hidden=[32, 32], batch_size=16, prior="base", init_temperature=0.5), 0)
    obs = na_batch()["obs"]
    torch.manual_seed(3)
    loss, log_prob = agent.actor_loss(obs)
    torch.manual_seed(3)
    w, same_log_prob = agent.actor(obs)
    kl = same_log_prob + 0.5 * w.pow(2).sum(-1) + 4 * math.log(2 * math.pi)  # 8-dim latent
    expected = (0.5 * kl - agent.q_w(obs, w).min(0).values).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # starting from a flat noise critic, the prior moves the actor's mean towards zero noise; alpha stays put
    with torch.no_grad():
        agent.actor.mu.bias.fill_(1.0)
        for p in agent.q_w.parameters():
            p.zero_()
    start = agent.actor.deterministic(obs).abs().mean().item()
    for _ in range(150):
        agent.update(na_batch())
    assert agent.actor.deterministic(obs).abs().mean().item() < 0.5 * start
    assert agent.log_alpha.exp().item() == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="na_prior"):
        DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[8], prior="uniform"), 0)


def test_na_zero_mean_actor_starts_at_the_zero_latent_and_learns_from_there():
    from embodied_steer.dsrl.na import DSRLNA, NASettings

    env, default, decode = na_agent(seed=3)
    agent = DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[32, 32], batch_size=16,
                                                                        actor_init="zero_mean"), 3)
    obs = na_batch()["obs"]
    assert default.actor.deterministic(obs).abs().max().item() > 1e-3  # the random head is somewhere else
    assert agent.actor.deterministic(obs).abs().max().item() == 0.0
    # only the mean head differs: the critics start from the same weights as the default agent's
    for a, b in zip(default.q_a.parameters(), agent.q_a.parameters()):
        assert torch.equal(a, b)
    agent.q_w.forward = lambda o, w: torch.stack([w[:, 0], w[:, 0]])  # pays for w[0] > 0: pulls the mean off zero
    for _ in range(30):
        loss, _ = agent.actor_loss(obs)
        agent.opt["actor"].zero_grad()
        loss.backward()
        agent.opt["actor"].step()
    assert agent.actor.deterministic(obs)[:, 0].mean().item() > 0.05
    with pytest.raises(ConfigError, match="na_actor_init"):
        DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[8], actor_init="zeros"), 0)


def test_na_actor_lr_slows_only_the_actor():
    from embodied_steer.dsrl.na import DSRLNA, NASettings

    env, _, decode = na_agent(seed=3)
    moved = {}
    for actor_lr in (None, 3e-5):
        agent = DSRLNA(env.features.dim, 8, env.latent, decode,
                       NASettings(hidden=[32, 32], batch_size=16, lr=3e-3, actor_lr=actor_lr, actor_init="zero_mean"), 3)
        assert agent.opt["q_a"].param_groups[0]["lr"] == 3e-3
        assert agent.opt["actor"].param_groups[0]["lr"] == (3e-3 if actor_lr is None else actor_lr)
        obs = na_batch()["obs"]
        agent.q_w.forward = lambda o, w: torch.stack([w[:, 0], w[:, 0]])  # pays for w[0] > 0
        for _ in range(30):
            loss, _ = agent.actor_loss(obs)
            agent.opt["actor"].zero_grad()
            loss.backward()
            agent.opt["actor"].step()
        moved[actor_lr] = agent.actor.deterministic(obs)[:, 0].mean().item()
    assert moved[None] > 0.05  # both move the same way, the slow actor by ~1/100 as far
    assert 0 < moved[3e-5] < moved[None] / 20
    for bad in (0.0, -1e-4, float("nan")):
        with pytest.raises(ConfigError, match="na_actor_lr"):
            DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[8], actor_lr=bad), 0)


def test_na_distillation_decodes_only_decode_batch_states():
    from embodied_steer.dsrl.na import DSRLNA, NASettings

    env, _, decode = na_agent()
    seen = []

    def counting(obs, noise):
        seen.append(obs.shape[0])
        return decode(obs, noise)

    agent = DSRLNA(env.features.dim, 8, env.latent, counting,
                   NASettings(hidden=[32, 32], batch_size=32, decode_batch=4, backup="noise"), 0)
    stats = agent.update(na_batch(n=32))
    assert seen == [4] and np.isfinite(list(stats.values())).all()


def test_episode_returns_are_known_only_for_terminated_episodes():
    from embodied_steer.dsrl.na import ChunkReplay, episode_returns

    rewards, discounts = np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5])
    np.testing.assert_allclose(episode_returns(rewards, discounts, terminated=True), [0.25, 0.5, 1.0])
    assert np.isnan(episode_returns(rewards, discounts, terminated=False)).all()  # cut by a time limit: unknown
    replay = ChunkReplay(4, 2, 3)
    slots = [replay.add(np.zeros(2), np.zeros(3), r, d, 0.0, np.zeros(2)) for r, d in zip(rewards, discounts)]
    assert np.isnan(replay.data["mc_return"][:3]).all()
    replay.set_mc_returns(slots, episode_returns(rewards, discounts, True))
    np.testing.assert_allclose(replay.data["mc_return"][:3], [0.25, 0.5, 1.0])


def test_na_mc_bound_floors_the_td_target_where_the_return_is_known():
    from embodied_steer.dsrl.na import DSRLNA, NASettings

    env, _, decode = na_agent()
    agent = DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[32, 32], batch_size=16, mc_bound=True), 0)
    batch = na_batch(terminal=1.0)  # TD target = the chunk reward
    batch["mc_return"] = torch.full((16,), float("nan"))
    batch["mc_return"][:8] = 10.0  # known and above the TD target: the floor applies
    batch["mc_return"][8:12] = -10.0  # known and below it: TD wins
    y = batch["reward"].clone()
    y[:8] = 10.0
    expected = ((agent.q_a(batch["obs"], batch["action"]) - y) ** 2).mean()
    assert agent.critic_loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    agent.s.mc_bound = False
    plain = ((agent.q_a(batch["obs"], batch["action"]) - batch["reward"]) ** 2).mean()
    assert agent.critic_loss(batch).item() == pytest.approx(plain.item(), rel=1e-5)


def test_na_mc_mix_averages_the_td_target_with_the_known_return():
    from embodied_steer.core.errors import ConfigError
    from embodied_steer.dsrl.na import DSRLNA, NASettings

    env, _, decode = na_agent()
    agent = DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[32, 32], batch_size=16, mc_mix=0.25), 0)
    batch = na_batch(terminal=1.0)  # TD target = the chunk reward
    batch["mc_return"] = torch.full((16,), float("nan"))
    batch["mc_return"][:8] = 0.0  # a failure's return pulls the target down (the floor would ignore it)
    batch["mc_return"][8:12] = 4.0
    y = batch["reward"].clone()
    y[:8] = 0.75 * y[:8]
    y[8:12] = 0.75 * y[8:12] + 0.25 * 4.0
    expected = ((agent.q_a(batch["obs"], batch["action"]) - y) ** 2).mean()
    assert agent.critic_loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="na_mc_mix"):
        DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[8], mc_mix=0.5, mc_bound=True), 0)
    with pytest.raises(ConfigError, match="na_mc_mix"):
        DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[8], mc_mix=1.5), 0)


def test_na_actor_ema_deploys_a_polyak_average_of_the_trained_actor(tmp_path):
    from embodied_steer.core.errors import ConfigError
    from embodied_steer.dsrl.na import DSRLNA, NASettings

    env, _, decode = na_agent()
    rate = 0.25
    agent = DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[32, 32], batch_size=16, actor_ema=rate), 0)
    assert agent.deployed_actor is not agent.actor
    before = {k: v.clone() for k, v in agent.deployed_actor.state_dict().items()}
    agent.update(na_batch())
    trained = agent.actor.state_dict()
    for k, v in agent.deployed_actor.state_dict().items():  # θ̄ = (1 − ρ) θ̄_before + ρ θ after one actor step
        torch.testing.assert_close(v, (1 - rate) * before[k] + rate * trained[k])
    assert any(not torch.equal(v, trained[k]) for k, v in agent.deployed_actor.state_dict().items())
    obs = na_batch()["obs"][0].numpy()
    det = torch.as_tensor(obs)[None]
    np.testing.assert_allclose(agent.act(obs, deterministic=True, deployed=True),
                               agent.deployed_actor.deterministic(det)[0].numpy(), rtol=1e-6)
    assert not np.allclose(agent.act(obs, deterministic=True, deployed=True), agent.act(obs, deterministic=True))
    agent.save(tmp_path)  # the average is part of the checkpoint
    again = DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[32, 32], batch_size=16, actor_ema=rate), 1)
    again.load(tmp_path)
    for k, v in again.deployed_actor.state_dict().items():
        torch.testing.assert_close(v, agent.deployed_actor.state_dict()[k])
    off = DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[32, 32], batch_size=16), 0)
    assert off.deployed_actor is off.actor and "actor_ema" not in off.networks()
    for bad in (-0.1, 1.0, "fast"):
        with pytest.raises(ConfigError, match="na_actor_ema"):
            DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[8], actor_ema=bad), 0)


def test_na_actor_ema_warmup_averages_the_first_actors_equally(tmp_path):
    from embodied_steer.dsrl.na import DSRLNA, NASettings

    env, _, decode = na_agent()
    settings = NASettings(hidden=[32, 32], batch_size=16, actor_ema=0.25, actor_ema_warmup=True)
    agent = DSRLNA(env.features.dim, 8, env.latent, decode, settings, 0)
    initial = {k: v.clone() for k, v in agent.actor.state_dict().items()}
    actors = []
    for _ in range(3):
        agent.update(na_batch())
        actors.append({k: v.clone() for k, v in agent.actor.state_dict().items()})
        if len(actors) == 1:  # rate 1 at the first step: the average is the trained actor, not the initial one
            for k, v in agent.deployed_actor.state_dict().items():
                torch.testing.assert_close(v, actors[0][k])
            assert any(not torch.equal(v, initial[k]) for k, v in agent.deployed_actor.state_dict().items())
    for k, v in agent.deployed_actor.state_dict().items():  # the plain mean of the three actors ...
        torch.testing.assert_close(v, sum(a[k] for a in actors) / 3)
    assert agent.ema_rate() == 0.25  # ... then the exponential rate from n = 1/ρ on
    agent.update(na_batch())
    assert agent.ema_updates == 4 and agent.ema_rate() == 0.25
    agent.save(tmp_path)  # the count is part of the checkpoint: a resumed run does not warm up again
    again = DSRLNA(env.features.dim, 8, env.latent, decode, settings, 1)
    again.load(tmp_path)
    assert again.ema_updates == 4

    def drop_the_count() -> None:  # what a checkpoint written before the count holds
        optim = torch.load(tmp_path / "optim.pt", weights_only=False)
        del optim["actor_ema_updates"]
        torch.save(optim, tmp_path / "optim.pt")

    drop_the_count()  # an average from before the count never warmed up: it keeps the plain rate
    again.load(tmp_path)
    assert again.ema_rate() == 0.25
    plain = DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[32, 32], batch_size=16, actor_ema=0.25), 0)
    assert plain.ema_rate() == 0.25  # without the warm-up the first step already uses ρ
    no_average = DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[32, 32], batch_size=16), 0)
    no_average.update(na_batch())
    no_average.save(tmp_path)  # a checkpoint of a run without the average, and from before the count
    drop_the_count()
    again.load(tmp_path)  # the average starts at the trained actor and warms up from there
    assert again.ema_updates == 0 and again.ema_rate() == 1.0
    for k, v in again.deployed_actor.state_dict().items():
        torch.testing.assert_close(v, no_average.actor.state_dict()[k])
    with pytest.raises(ConfigError, match="na_actor_ema_warmup"):
        DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[8], actor_ema_warmup=True), 0)


def test_critic_dropout_is_active_in_training_only_and_keeps_the_weight_layout():
    from embodied_steer.dsrl.networks import CriticEnsemble

    torch.manual_seed(0)
    plain = CriticEnsemble(5, 3, [64, 64], n=2)
    dropped = CriticEnsemble(5, 3, [64, 64], n=2, dropout=0.2)
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    dropped.load_state_dict(plain.state_dict())
    obs, act = torch.randn(32, 5), torch.randn(32, 3)
    assert not torch.allclose(dropped(obs, act), dropped(obs, act))  # a new mask per pass in training mode
    dropped.eval()
    torch.testing.assert_close(dropped(obs, act), plain(obs, act))
    with pytest.raises(ValueError, match="dropout"):
        CriticEnsemble(5, 3, [8], dropout=1.0)


def test_na_critic_dropout_regularises_the_action_critic_only():
    from embodied_steer.core.errors import ConfigError
    from embodied_steer.dsrl.na import DSRLNA, NASettings

    env, _, decode = na_agent()
    agent = DSRLNA(env.features.dim, 8, env.latent, decode,
                   NASettings(hidden=[32, 32], batch_size=16, critic_dropout=0.3), 0)
    has_dropout = lambda net: any(isinstance(m, torch.nn.Dropout) for m in net.modules())  # noqa: E731
    assert has_dropout(agent.q_a) and has_dropout(agent.q_a_target)
    assert not has_dropout(agent.q_w) and not has_dropout(agent.actor)
    batch = na_batch()
    assert agent.critic_loss(batch).item() != agent.critic_loss(batch).item()  # dropout masks differ per pass
    agent.update(batch)  # trains as usual
    for bad in (-0.1, 1.0, "half"):
        with pytest.raises(ConfigError, match="na_critic_dropout"):
            DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[8], critic_dropout=bad), 0)


def test_na_critic_utd_takes_extra_td_steps_on_fresh_minibatches():
    from embodied_steer.dsrl.na import DSRLNA, NASettings

    env, _, decode = na_agent()
    agent = DSRLNA(env.features.dim, 8, env.latent, decode,
                   NASettings(hidden=[32, 32], batch_size=16, critic_utd=3, backup="noise"), 0)
    drawn = []

    def more():
        drawn.append(1)
        return na_batch()

    agent.update(na_batch(), more)
    assert len(drawn) == 2 and agent.opt["q_a"].state[agent.q_a.nets[0][0].weight]["step"].item() == 3
    assert agent.opt["q_w"].state[agent.q_w.nets[0][0].weight]["step"].item() == 1
    with pytest.raises(ConfigError, match="na_critic_utd"):
        DSRLNA(env.features.dim, 8, env.latent, decode, NASettings(hidden=[8], critic_utd=0), 0)


def test_na_target_uses_the_minimum_of_the_ensemble():
    _, agent, _ = na_agent()
    batch = na_batch(terminal=0.0)
    with torch.no_grad():  # make the two target critics constant 1 and 5 (last layer: zero weights, bias)
        for net, value in zip(agent.q_a_target.nets, (1.0, 5.0)):
            net[-1].weight.zero_()
            net[-1].bias.fill_(value)
    y = batch["reward"] + 0.9 * 1.0
    expected = ((agent.q_a(batch["obs"], batch["action"]) - y) ** 2).mean()
    assert agent.critic_loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)


def test_na_actor_loss_moves_only_the_actor_and_respects_the_box():
    _, agent, _ = na_agent()
    obs = na_batch()["obs"]
    w, _ = agent.actor(obs)
    assert w.detach().abs().max().item() <= agent.latent.bound
    loss, _ = agent.actor_loss(obs)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())
    assert all(p.grad is None for p in agent.q_a.parameters())


class PreferFirstCoordinate(torch.nn.Module):
    """A stand-in noise critic (two members) that scores a latent by its first coordinate."""

    def forward(self, obs, w):
        return torch.stack([w[:, 0], w[:, 0] + 1.0])


def test_choose_latent_is_the_mean_or_the_critics_best_candidate():
    from embodied_steer.dsrl.networks import NoiseActor, choose_latent

    torch.manual_seed(0)
    actor = NoiseActor(4, 3, [16], bound=1.5)
    obs = torch.randn(5, 4)
    mean = actor.deterministic(obs)
    torch.testing.assert_close(choose_latent(actor, obs), mean)
    torch.testing.assert_close(choose_latent(actor, obs, PreferFirstCoordinate(), select=1), mean)
    torch.manual_seed(1)
    best = choose_latent(actor, obs, PreferFirstCoordinate(), select=32)
    torch.manual_seed(1)
    samples = actor(obs.repeat_interleave(31, 0))[0].reshape(5, 31, 3)
    candidates = torch.cat([mean[:, None], samples], 1)
    torch.testing.assert_close(best, candidates[torch.arange(5), candidates[..., 0].argmax(1)])
    assert (best[:, 0] > mean[:, 0]).all() and best.abs().max() <= 1.5
    torch.manual_seed(2)  # exploring: the best of `select` samples, never the mean
    explored = choose_latent(actor, obs, PreferFirstCoordinate(), select=8, explore=True)
    torch.manual_seed(2)
    samples = actor(obs.repeat_interleave(8, 0))[0].reshape(5, 8, 3)
    torch.testing.assert_close(explored, samples[torch.arange(5), samples[..., 0].argmax(1)])
    torch.manual_seed(3)
    one = choose_latent(actor, obs, PreferFirstCoordinate(), select=1, explore=True)
    torch.manual_seed(3)
    torch.testing.assert_close(one, actor(obs)[0])


def test_adapter_with_a_noise_critic_round_trips_and_selects(tmp_path):
    from embodied_steer.dsrl.features import ObsFeatures
    from embodied_steer.dsrl.networks import CriticEnsemble, NoiseActor
    from embodied_steer.dsrl.policy import DSRLPolicy, NoiseActorAct, load_noise_adapter, save_adapter
    from embodied_steer.core.errors import CheckpointError

    base = ToyFlowPolicy()
    latent = LatentNoiseMap(base.noise_spec, "tile", 1.5)
    features = ObsFeatures(2, 2, 1)
    torch.manual_seed(0)
    actor = NoiseActor(features.dim, latent.latent_dim, [16], 1.5, layernorm=True)
    critic = CriticEnsemble(features.dim, latent.latent_dim, [16, 8], 2, layernorm=True)
    with pytest.raises(CheckpointError, match="noise critic"):
        save_adapter(tmp_path / "bad", actor, latent, features, hidden=[16], base_config=None, algo="dsrl_na", select=4)
    folder = save_adapter(tmp_path / "ad", actor, latent, features, hidden=[16], base_config=None, algo="dsrl_na",
                          noise_critic=critic, select=8)
    adapter = load_noise_adapter(folder)
    assert adapter.select == 8
    for k, v in critic.state_dict().items():
        torch.testing.assert_close(adapter.noise_critic.state_dict()[k], v)
    policy = DSRLPolicy(base, adapter.actor, adapter.latent, adapter.features, noise_critic=adapter.noise_critic,
                        select=adapter.select)
    env = ToyGoalEnv()
    obs, _ = env.reset(seed=0)
    history = [to_observation(obs)]
    vec = torch.as_tensor(features.from_history(history))[None]
    torch.manual_seed(5)
    chosen = policy.latent_for(history)
    torch.manual_seed(5)
    mean = actor.deterministic(vec)
    candidates = torch.cat([mean, actor(vec.repeat(7, 1))[0]])
    scores = critic(vec.repeat(8, 1), candidates).min(0).values
    torch.testing.assert_close(chosen[0], candidates[scores.argmax()])
    torch.manual_seed(5)
    torch.testing.assert_close(NoiseActorAct(adapter, base).noise_for(history), latent.to_noise(chosen))
    with pytest.raises(CheckpointError, match="noise critic"):
        DSRLPolicy(base, actor, latent, features, select=3)
    # act=sample: the adapter acts with a sample of the actor, recorded in adapter.json and restored
    sampled = save_adapter(tmp_path / "sampled", actor, latent, features, hidden=[16], base_config=None,
                           algo="dsrl_na", sample=True)
    loaded = load_noise_adapter(sampled)
    assert loaded.sample and loaded.meta["act"] == "sample"
    policy = DSRLPolicy(base, loaded.actor, loaded.latent, loaded.features, sample=loaded.sample)
    torch.manual_seed(9)
    drawn = policy.latent_for(history)
    torch.manual_seed(9)
    torch.testing.assert_close(drawn, actor(vec)[0])
    assert not torch.allclose(drawn, actor.deterministic(vec))
    meta = json.loads((sampled / "adapter.json").read_text())
    (sampled / "adapter.json").write_text(json.dumps(meta | {"act": "mode"}))
    with pytest.raises(CheckpointError, match="act must be"):
        load_noise_adapter(sampled)
    (folder / "noise_critic.safetensors").unlink()
    with pytest.raises(CheckpointError, match="noise_critic.safetensors is missing"):
        load_noise_adapter(folder)


def test_na_refuses_camera_policies():
    from embodied_steer.dsrl.features import ObsFeatures
    from embodied_steer.dsrl.na import make_decoder

    policy = ToyFlowPolicy()
    policy.info.cameras = ("agentview",)
    with pytest.raises(ConfigError, match="cameras"):
        make_decoder(policy, ObsFeatures(2, 2, 1), 4)
    from embodied_steer.dsrl.sensitivity import compute_latent_map

    env = LatentNoiseEnv(ToyGoalEnv(), policy, latent_mode="project", latent_dim=2)
    with pytest.raises(ConfigError, match="latent_basis=random"):  # its Jacobians would need the images too
        compute_latent_map(env, np.zeros((2, 4), np.float32), 2, seed=0)


def test_offline_transitions_from_lift_demos(tmp_path):
    """Offline DSRL-NA data from a LeRobot dataset of scripted Lift demonstrations (two recorded
    here, the same recipe as data/lift_demos)."""
    from embodied_steer.data.record import record_episodes
    from embodied_steer.dsrl.features import ObsFeatures
    from embodied_steer.dsrl.na import offline_transitions
    from embodied_steer.experts.scripted import LiftExpert
    from embodied_steer.sim.robosuite_env import RobosuiteEnv

    env = RobosuiteEnv("Lift")
    try:
        root = tmp_path / "lift_demos"
        record_episodes(env, LiftExpert(seed=0), root, repo_id="local/lift_demos", num_episodes=2, seed=0)
    finally:
        env.close()
    info = json.loads((root / "meta" / "info.json").read_text())
    rows = offline_transitions(root, ObsFeatures(9, 10, 2), k=8, gamma=0.9, action_dim=7)
    assert len(rows) == info["total_frames"]
    obs, action, ret, disc, terminal, nxt, mc = rows[0]
    assert obs.shape == (38,) and action.shape == (56,) and nxt.shape == (38,)
    length = next(i for i, r in enumerate(rows) if r[4] == 1.0 and r[3] == pytest.approx(0.9)) + 1
    assert mc == pytest.approx(0.9 ** (length - 1))  # reward 1 at the last frame, discounted back to the first
    assert rows[1][6] == pytest.approx(0.9 ** (length - 2))
    terminals = [r for r in rows if r[4] == 1.0]
    assert all(r[2] > 0 for r in terminals)  # the success reward is inside every terminal chunk
    assert sum(r[4] == 0.0 and r[2] == 0.0 for r in rows) > 0
    last = max(terminals, key=lambda r: r[3])  # one-step chunk at an episode's last frame
    assert last[2] == pytest.approx(1.0) and last[3] == pytest.approx(0.9)


# ------------------------------------------------------------------------------------------ adapted policy
def test_adapted_policy_acts_with_the_actor_noise_and_round_trips(tmp_path):
    from embodied_steer.dsrl.features import ObsFeatures
    from embodied_steer.dsrl.networks import NoiseActor
    from embodied_steer.dsrl.policy import DSRLPolicy, save_adapter
    from embodied_steer.core.policy import InterventionPoint
    from embodied_steer.sim.base import to_observation

    base = ToyFlowPolicy()
    latent = LatentNoiseMap(base.noise_spec, "tile", 1.5)
    features = ObsFeatures(2, 2, 1)
    torch.manual_seed(0)
    actor = NoiseActor(4, 2, [16], 1.5)
    policy = DSRLPolicy(base, actor, latent, features)
    assert InterventionPoint.NOISE not in policy.interventions
    env = ToyGoalEnv()
    obs_dict, _ = env.reset(seed=0)
    obs = to_observation(obs_dict)
    chunk = policy.act(obs).actions
    w = actor.deterministic(torch.as_tensor(features.frame(obs))[None])
    base.reset()
    np.testing.assert_allclose(chunk, base.act(obs, noise=latent.to_noise(w)).actions)
    save_adapter(tmp_path / "adapter", actor, latent, features, hidden=[16],
                 base_config={"_target_": "embodied_steer.dsrl.toy.ToyFlowPolicy"}, algo="test")
    loaded = DSRLPolicy.from_adapter(tmp_path / "adapter")
    np.testing.assert_allclose(loaded.act(obs).actions, chunk, atol=1e-6)


def test_missing_adapter_files_are_named(tmp_path):
    from embodied_steer.core.errors import CheckpointError
    from embodied_steer.dsrl.policy import DSRLPolicy

    with pytest.raises(CheckpointError, match="adapter.json"):
        DSRLPolicy.from_adapter(tmp_path)


def test_with_tiny_flow_policies_and_cameras(tmp_path):
    from embodied_steer.adapters.tiny import tiny_pi0, tiny_smolvla
    from embodied_steer.core.types import ActionBounds

    class CameraEnv(ToyGoalEnv):
        def __init__(self, state_dim):
            super().__init__()
            self.state_dim = state_dim
            self.action_space = gym.spaces.Box(-1, 1, (7,), np.float32)
            self.observation_space = gym.spaces.Dict({
                "state": gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
                "pixels": gym.spaces.Dict({"agentview": gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)})})

        def _obs(self):
            return {"state": np.full(self.state_dim, self.pos[0], np.float32),
                    "pixels": {"agentview": np.full((32, 32, 3), 100, np.uint8)}}

        def step(self, action):
            return super().step(np.asarray(action)[:2])

    for build in (tiny_pi0, tiny_smolvla):
        policy = build(tmp_path / build.__name__, chunk_size=8, n_action_steps=4, num_steps=3)
        policy.info.action_bounds = ActionBounds.symmetric(7)
        policy.camera_map = {k: "agentview" for k in policy.info.extra["image_keys"]}
        env = LatentNoiseEnv(CameraEnv(policy.info.state_dim), policy, latent_mode="project", latent_dim=6)
        obs, _ = env.reset(seed=0)
        assert env.action_space.shape == (6,) and obs.shape == (policy.info.state_dim,)
        _, reward, _, _, info = env.step(np.full(6, 0.5, np.float32))
        assert info["executed_actions"].shape == (4, 7) and math.isfinite(reward)


def test_shipped_lift_adapter_config_builds_a_policy_that_acts():
    from pathlib import Path

    from omegaconf import OmegaConf

    from embodied_steer.cli import compose, instantiate_policy
    from embodied_steer.core.policy import InterventionPoint

    if not (Path(__file__).resolve().parents[1] / "checkpoints" / "lift_dsrl" / "adapter.json").is_file():
        pytest.skip("checkpoints/lift_dsrl not shipped")
    cfg = compose("eval", ["policy=lift_dsrl"])
    policy = instantiate_policy(cfg.policy)
    assert policy.info.name == "lift_dsrl" and InterventionPoint.NOISE not in policy.interventions
    from helpers import lift_like_observation

    obs = lift_like_observation()
    first = policy.act(obs).actions
    assert first.shape == (8, 7) and np.isfinite(first).all()
    policy.reset()
    np.testing.assert_array_equal(policy.act(obs).actions, first)  # the actor's mean noise: deterministic
    assert OmegaConf.select(cfg, "policy.adapter_path").endswith("checkpoints/lift_dsrl")


def test_noise_actor_act_switches_an_adapter_onto_a_loaded_policy(tmp_path):
    """``intervention.dsrl=<adapter>`` (and the ROS policy server's ``dsrl`` setting) gives exactly the
    adapted policy's actions without rebuilding the base; wrong adapters and combinations are refused."""
    from embodied_steer.core.errors import CheckpointError
    from embodied_steer.dsrl.features import ObsFeatures
    from embodied_steer.dsrl.networks import NoiseActor
    from embodied_steer.dsrl.policy import DSRLPolicy, NoiseActorAct, load_noise_adapter, save_adapter
    from embodied_steer.eval.interventions import make_act_fn

    base = ToyFlowPolicy()
    latent = LatentNoiseMap(base.noise_spec, "tile", 1.5)
    features = ObsFeatures(2, 2, 1)
    torch.manual_seed(1)
    actor = NoiseActor(4, 2, [16], 1.5)
    save_adapter(tmp_path / "adapter", actor, latent, features, hidden=[16],
                 base_config={"_target_": "embodied_steer.dsrl.toy.ToyFlowPolicy"}, algo="test")
    env = ToyGoalEnv()
    obs = to_observation(env.reset(seed=3)[0])
    expected = DSRLPolicy(ToyFlowPolicy(), actor, latent, features).act(obs).actions
    act = make_act_fn({"dsrl": str(tmp_path / "adapter")}, base)
    assert isinstance(act, NoiseActorAct)
    chunk = act(base, obs)
    np.testing.assert_allclose(chunk.actions, expected, atol=1e-6)
    assert chunk.info["dsrl"].endswith("adapter")
    plain = base.act(obs).actions  # the policy's own noise acts differently
    assert not np.allclose(plain, expected)

    with pytest.raises(ValueError, match="cannot be combined"):
        make_act_fn({"dsrl": str(tmp_path / "adapter"), "noise_scale": 0.5}, base)
    with pytest.raises(CheckpointError, match="adapter.json"):
        make_act_fn({"dsrl": str(tmp_path / "missing")}, base)
    other = LatentNoiseMap(NoiseSpec((3, 2), 2), "full", 1.5)  # trained for another noise shape
    save_adapter(tmp_path / "other", NoiseActor(4, other.latent_dim, [16], 1.5), other, features, hidden=[16],
                 base_config=None, algo="test")
    with pytest.raises(CheckpointError, match="noise of shape"):
        NoiseActorAct(load_noise_adapter(tmp_path / "other"), base)
    (tmp_path / "other" / "adapter.json").write_text("{}")
    with pytest.raises(CheckpointError, match="malformed"):
        load_noise_adapter(tmp_path / "other")
