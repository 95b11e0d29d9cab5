"""The plain-SAC baseline's environment: the raw action space, the same agent features.

:class:`RawActionEnv` exposes a toolkit environment as a flat-``Box`` gymnasium env: observation =
``state`` (+ ``env_state``) of the current step, action = the environment's own action
(``(7,)`` for robosuite OSC_POSE), one environment step per agent step, reward unchanged (or shaped by a potential,
:mod:`~embodied_steer.dsrl.shaping`, with ``info["task_reward"]`` the environment's own).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from embodied_steer.core.errors import RewardError
from embodied_steer.dsrl.features import ObsFeatures
from embodied_steer.dsrl.horizon import TrainingHorizon
from embodied_steer.dsrl.shaping import Potential, shaped_reward
from embodied_steer.sim.base import to_observation


class RawActionEnv(gym.Env):
    """``env`` with flat observations (agent features, history 1) and its own action space."""

    metadata = {"render_modes": []}

    def __init__(self, env: gym.Env, *, use_env_state: bool = True, horizon: TrainingHorizon | None = None,
                 shaping: Potential | None = None, gamma: float = 0.99) -> None:
        self.env = env
        self.shaping = shaping
        self.gamma = float(gamma)
        self._last: np.ndarray | None = None
        self.horizon = horizon or TrainingHorizon()
        self._t = 0
        self.features = ObsFeatures.for_env(env.observation_space, 1, use_env_state)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.features.dim,), np.float32)
        self.action_space = env.action_space
        self.total_env_steps = 0

    def _vec(self, obs_dict: dict[str, Any]) -> np.ndarray:
        return self.features.frame(to_observation(obs_dict))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs_dict, info = self.env.reset(seed=seed)
        self._t = 0
        self._last = self._vec(obs_dict)
        return self._last, dict(info)

    def step(self, action: np.ndarray):
        obs_dict, reward, terminated, truncated, info = self.env.step(np.asarray(action, np.float32))
        if not np.isfinite(reward):
            raise RewardError(f"environment returned reward {reward}")
        self.total_env_steps += 1
        self._t += 1
        terminated, truncated, cut = self.horizon.apply(self._t, bool(terminated), bool(truncated))
        info = dict(info)
        info.update(env_steps=1, discount=0.0, horizon_cut=cut, task_reward=float(reward))
        obs = self._vec(obs_dict)
        if self.shaping is not None and self._last is not None:
            reward = shaped_reward(self.shaping, self._last, float(reward), self.gamma, terminated, obs)
        self._last = obs
        return obs, float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        self.env.close()
