"""(environment, frozen policy) → a latent-action MDP whose action is the policy's initial noise.

One step of :class:`LatentNoiseEnv`:

1. the latent action ``w ∈ [-b, b]^d`` is checked and mapped to noise ``(1, *noise_spec.shape)``
   (:class:`~embodied_steer.dsrl.latent.LatentNoiseMap`);
2. the frozen policy runs its deterministic sampler (DDIM with η = 0 / the flow ODE) on that
   noise and returns a chunk;
3. the first ``k = execute_steps`` actions are executed (the policy's history holds every
   intermediate observation, as in the evaluation runner), stopping early when the episode ends;
4. the reward is the discounted chunk return ``R = Σ_{i<n} γ^i r_i`` over the ``n ≤ k`` executed
   steps, and ``info["discount"] = γ^n`` is the discount to apply to the next chunk's value.

With a constant chunk length the MDP is an ordinary one with discount ``γ^k``
(:attr:`chunk_discount`), which is what is given to SB3's SAC. DSRL-NA reads the per-transition
``γ^n`` (SMDP-style), which only differs on the last chunk of an episode — where a terminal
transition is not bootstrapped anyway and a time-limit truncation is.

The observation is the agent's feature vector (:mod:`embodied_steer.dsrl.features`); ``info`` also
carries ``is_success``, ``env_steps`` (n), ``executed_actions`` ``(n, D_action)`` and the latent.
"""

from __future__ import annotations

import collections
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from embodied_steer.core.errors import ConfigError, RewardError
from embodied_steer.core.policy import InterventionPoint, SteerablePolicy
from embodied_steer.core.types import Observation
from embodied_steer.dsrl.features import ObsFeatures
from embodied_steer.dsrl.horizon import TrainingHorizon
from embodied_steer.dsrl.latent import LatentMode, LatentNoiseMap
from embodied_steer.dsrl.shaping import Potential, shaped_reward
from embodied_steer.sim.base import to_observation


WARMUP_NOISE = ("base", "uniform")


class LatentBox(gym.spaces.Box):
    """The latent action space ``[-b, b]^d`` whose :meth:`sample` can be the base policy's own noise.

    With ``warmup="base"`` a sample is a standard normal latent clipped to the box: every latent
    mode maps ``N(0, I)`` to noise of unit variance, so random actions reproduce the frozen
    policy's own behaviour (up to the clipping) instead of a uniform draw over the box, which the
    policy never saw. This is what an SB3 agent executes before ``learning_starts`` (the published
    DSRL collects its first rollouts with the base policy the same way).
    """

    def __init__(self, bound: float, shape: tuple[int, ...], warmup: str = "base") -> None:
        if warmup not in WARMUP_NOISE:
            raise ConfigError(f"warmup_noise must be one of {WARMUP_NOISE}, got {warmup!r}")
        super().__init__(-bound, bound, shape, np.float32)
        self.bound = float(bound)
        self.warmup = warmup

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        return self.draw(self.np_random)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One latent from ``rng`` (the warm-up distribution)."""
        if self.warmup == "uniform":
            return rng.uniform(-self.bound, self.bound, self.shape).astype(np.float32)
        return np.clip(rng.standard_normal(self.shape), -self.bound, self.bound).astype(np.float32)


def check_action_dims(env: gym.Env, policy: SteerablePolicy) -> None:
    """Raise :class:`ConfigError` when the policy's action dimension differs from the environment's."""
    env_dim = int(np.prod(env.action_space.shape))
    bounds = policy.info.action_bounds
    if bounds is not None and bounds.dim != env_dim:
        name = getattr(getattr(env, "spec_info", None), "name", type(env).__name__)
        raise ConfigError(f"policy '{policy.info.name}' acts in {bounds.dim} dimensions, env '{name}' in {env_dim}")


class LatentNoiseEnv(gym.Env):
    """Gymnasium env whose action is the frozen policy's (latent) initial noise.

    Args:
        env: a toolkit environment (Dict observation with ``state`` / ``env_state``).
        policy: the frozen base policy; must declare ``NOISE``.
        bound: half-width ``b`` of the latent box (published: 1–1.5).
        latent_mode: ``"full"`` / ``"tile"`` / ``"project"`` (see :mod:`~embodied_steer.dsrl.latent`).
        latent_dim: latent size for ``"project"``.
        gamma: per-environment-step discount γ.
        use_env_state: give the agent the privileged object state too.
        execute_steps: actions executed per chunk (default: the policy's).
        check_determinism: at the first reset, decode the same noise twice and require equal
            actions (a DDPM sampler or any other stochastic sampler fails this).
        warmup_noise: what ``action_space.sample()`` draws (the agent's random warm-up actions):
            ``"base"`` the base policy's own noise clipped to the box, or ``"uniform"`` over it
            (see :class:`LatentBox`).
        horizon: a training-only episode limit (:class:`~embodied_steer.dsrl.horizon.TrainingHorizon`),
            checked after every executed action; ``info["horizon_cut"]`` says when it ended one.
        shaping: a potential ``Φ`` over agent observations (:mod:`~embodied_steer.dsrl.shaping`);
            the step's reward is then the shaped chunk reward and ``info["task_reward"]`` the
            environment's own (always present).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        env: gym.Env,
        policy: SteerablePolicy,
        *,
        bound: float = 1.5,
        latent_mode: LatentMode = "full",
        latent_dim: int | None = None,
        gamma: float = 0.99,
        use_env_state: bool = True,
        execute_steps: int | None = None,
        check_determinism: bool = True,
        projection_seed: int = 0,
        warmup_noise: str = "base",
        horizon: TrainingHorizon | None = None,
        shaping: Potential | None = None,
    ) -> None:
        policy.require(InterventionPoint.NOISE, "DSRL (latent-noise RL)")
        check_action_dims(env, policy)
        if not 0.0 < gamma <= 1.0:
            raise ConfigError(f"gamma must be in (0, 1], got {gamma}")
        self.env = env
        self.policy = policy
        self.gamma = float(gamma)
        self.execute_steps = int(execute_steps or policy.info.execute_steps)
        if not 1 <= self.execute_steps <= policy.info.chunk_size:
            raise ConfigError(f"execute_steps must be in [1, {policy.info.chunk_size}], got {self.execute_steps}")
        self.latent = LatentNoiseMap(policy.noise_spec, latent_mode, bound, latent_dim, projection_seed)
        self.features = ObsFeatures.for_env(env.observation_space, policy.history_length, use_env_state)
        self.action_space = LatentBox(self.latent.bound, self.latent.shape, warmup_noise)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.features.dim,), np.float32)
        self._check_determinism = check_determinism
        self._frames: collections.deque[np.ndarray] = collections.deque(maxlen=self.features.history)
        self._history: collections.deque[Observation] = collections.deque(maxlen=max(1, policy.history_length))
        self._obs: Observation | None = None
        self._dt = 1.0 / float(getattr(getattr(env, "spec_info", None), "control_hz", 20.0))
        self._t = 0
        self.horizon = horizon or TrainingHorizon()
        self.shaping = shaping
        self.total_env_steps = 0
        """Environment steps executed through this wrapper since it was built (the RL budget)."""

    def use_latent(self, latent: LatentNoiseMap) -> None:
        """Act through another latent map of the same size and box (e.g. a computed basis)."""
        if latent.shape != self.latent.shape or latent.bound != self.latent.bound or latent.spec != self.latent.spec:
            raise ConfigError(f"latent map {latent.describe()} does not fit this env's latent {self.latent.describe()}")
        self.latent = latent

    @property
    def chunk_discount(self) -> float:
        """``γ^k``: the discount between consecutive full chunks."""
        return self.gamma**self.execute_steps

    @property
    def instruction(self) -> str:
        return getattr(self.env, "instruction", "")

    def _observe(self, obs_dict: dict[str, Any]) -> Observation:
        obs = to_observation(obs_dict, self.instruction, self._t * self._dt)
        self._frames.append(self.features.frame(obs))
        self._history.append(obs)
        return obs

    def _chunk(self, noise: torch.Tensor) -> np.ndarray:
        """Run the policy on this wrapper's own observation history (the policy object may be shared
        with other wrappers, e.g. an evaluation env, so its internal history is rebuilt each time)."""
        self.policy.reset()
        for obs in list(self._history)[:-1]:
            self.policy.observe(obs)
        return self.policy.act(self._history[-1], noise=noise).actions

    def agent_observation(self) -> np.ndarray:
        return self.features.stack(self._frames)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs_dict, info = self.env.reset(seed=seed)
        self.policy.reset(seed=seed)
        self._frames.clear()
        self._history.clear()
        self._t = 0
        self._obs = self._observe(obs_dict)
        if self._check_determinism:
            self._verify_determinism(self._obs)
            self._check_determinism = False
        return self.agent_observation(), dict(info)

    def _verify_determinism(self, obs: Observation) -> None:
        noise = torch.randn((1, *self.latent.spec.shape), generator=torch.Generator().manual_seed(123))
        self.policy.observe(obs)
        a = self.policy.generate(1, noise=noise).actions
        b = self.policy.generate(1, noise=noise).actions
        self.policy.reset()
        if not np.allclose(a, b, atol=1e-5):
            raise ConfigError(
                f"policy '{self.policy.info.name}' gives different actions for the same noise "
                f"(max diff {float(np.abs(a - b).max()):.3g}); DSRL needs a deterministic sampler "
                "(DDIM with eta=0 or a flow ODE, not DDPM)"
            )

    def decode(self, latent: np.ndarray | torch.Tensor) -> np.ndarray:
        """Latent ``(latent_dim,)`` → the chunk ``(T, D_action)`` the policy would output now (no env step)."""
        return self._chunk(self.latent.to_noise(latent))

    def step(self, action: np.ndarray):
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        latent = self.latent.check(action)
        start = self.agent_observation() if self.shaping is not None else None
        chunk = self._chunk(self.latent.to_noise(latent))
        total, discount = 0.0, 1.0
        terminated = truncated = cut = False
        info: dict[str, Any] = {}
        executed = []
        for i in range(self.execute_steps):
            obs_dict, reward, terminated, truncated, info = self.env.step(chunk[i])
            reward = float(reward)
            if not np.isfinite(reward):
                raise RewardError(f"environment returned reward {reward} at episode step {self._t}")
            executed.append(chunk[i])
            total += discount * reward
            discount *= self.gamma
            self._t += 1
            self.total_env_steps += 1
            self._obs = self._observe(obs_dict)
            terminated, truncated, cut = self.horizon.apply(self._t, terminated, truncated)
            if terminated or truncated:
                break
        info = dict(info)
        info.update(discount=discount, env_steps=len(executed), executed_actions=np.asarray(executed, np.float32),
                    latent=latent[0].numpy(), horizon_cut=cut, task_reward=total)
        next_obs = self.agent_observation()
        if self.shaping is not None:
            total = shaped_reward(self.shaping, start, total, discount, terminated, next_obs)
        return next_obs, total, bool(terminated), bool(truncated), info

    def close(self) -> None:
        self.env.close()
