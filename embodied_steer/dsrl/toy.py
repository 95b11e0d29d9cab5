"""A toy problem where the best noise is known: for DSRL tests, demos and quick checks.

:class:`ToyGoalEnv` — a point in the plane must reach a goal. Observation ``state`` = the point's
position ``(2,)``, ``env_state`` = the goal ``(2,)`` (drawn on a circle of radius 0.6 at reset).
Action ``(2,)`` in ``[-1, 1]`` moves the point by ``0.1 · a``. Reward per step: ``−|goal − pos|``
(dense) and ``+1`` on success (``|goal − pos| < 0.15``, which terminates). Horizon 16 steps.

:class:`ToyFlowPolicy` — a frozen, *goal-blind* flow policy: its sampler integrates the velocity
field ``v(x, t) = −0.5 x`` with ``num_steps`` Euler steps from the initial noise, so its chunk is a
fixed contraction of the noise (``x₁ = (1 − 0.5/n)^n · x₀ ≈ 0.6 x₀`` per entry). With standard
normal noise it wanders randomly; the best noise points every step of the chunk towards the goal,
so a DSRL agent that sees the goal can only improve on it by choosing the noise.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch

from embodied_steer.core.policy import DenoiseCallback, InterventionPoint, NoiseSpec, PolicyInfo, SteerablePolicy
from embodied_steer.core.types import ActionBounds, Observation
from embodied_steer.sim.base import EnvSpec, RenderSettings, step_info


class ToyGoalEnv(gym.Env):
    """Reach a goal in the plane (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, horizon: int = 16, step_size: float = 0.1, radius: float = 0.6, tolerance: float = 0.15) -> None:
        self.horizon, self.step_size, self.radius, self.tolerance = horizon, step_size, radius, tolerance
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
            "env_state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
        })
        self.spec_info = EnvSpec("toy_goal", horizon, ActionBounds.symmetric(2), ("x", "y"), 20.0)
        self.render_settings = RenderSettings()
        self.instruction = "reach the goal"
        self._rng = np.random.default_rng(0)
        self.pos = np.zeros(2, np.float32)
        self.goal = np.zeros(2, np.float32)
        self._t = 0

    def _obs(self) -> dict[str, Any]:
        return {"state": self.pos.copy(), "env_state": self.goal.copy()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        angle = self._rng.uniform(0, 2 * np.pi)
        self.goal = (self.radius * np.array([np.cos(angle), np.sin(angle)])).astype(np.float32)
        self.pos = np.zeros(2, np.float32)
        self._t = 0
        return self._obs(), step_info(False, self.instruction, self.render_settings)

    def step(self, action: np.ndarray):
        a = np.clip(np.asarray(action, np.float32), -1, 1)
        self.pos = (self.pos + self.step_size * a).astype(np.float32)
        self._t += 1
        dist = float(np.linalg.norm(self.goal - self.pos))
        success = dist < self.tolerance
        reward = -dist + (1.0 if success else 0.0)
        truncated = self._t >= self.horizon and not success
        return self._obs(), reward, success, truncated, step_info(success, self.instruction, self.render_settings)


class ToyFlowPolicy(SteerablePolicy):
    """Goal-blind flow policy: Euler integration of ``v(x, t) = −0.5 x`` from the initial noise.

    Chunk ``(chunk_size, 2)``; noise spec ``(chunk_size, 2)``; declares ``NOISE`` and ``SAMPLES``.
    Deterministic given the noise.
    """

    interventions = frozenset({InterventionPoint.NOISE, InterventionPoint.SAMPLES})

    def __init__(self, chunk_size: int = 4, num_steps: int = 5, seed: int = 0, stochastic: bool = False) -> None:
        super().__init__(PolicyInfo("toy_flow", chunk_size, chunk_size, ActionBounds.symmetric(2), state_dim=2), seed=seed)
        self.num_steps = num_steps
        self.stochastic = stochastic
        """Test switch: add fresh noise at every step (like DDPM), which DSRL must refuse."""

    @property
    def noise_spec(self) -> NoiseSpec:
        return NoiseSpec((self.info.chunk_size, 2), 2)

    def generate_batched(self, histories: Sequence[Sequence[Observation]], noise: torch.Tensor) -> np.ndarray:
        """One chunk per (history, noise) pair: ``(B, chunk_size, 2)`` (the policy ignores observations)."""
        return self._generate(histories[0], int(noise.shape[0]), noise, None)

    def _generate(self, history: Sequence[Observation], n: int, noise: torch.Tensor | None,
                  denoise_callback: DenoiseCallback | None) -> np.ndarray:
        x = noise.clone() if noise is not None else torch.randn((n, *self.noise_spec.shape), generator=self.generator)
        dt = 1.0 / self.num_steps
        for _ in range(self.num_steps):
            x = x + dt * (-0.5 * x)
            if self.stochastic:
                x = x + 0.1 * torch.randn(x.shape, generator=self.generator)
        return x.clamp(-1, 1).numpy()
