"""A 2-D navigation benchmark whose demonstrations are ambiguous at known places (for REALM).

A point robot drives from the left (x ≈ 0) to a goal line at ``x = goal_x`` along a corridor.
Actions are velocities ``(vx, vy)`` in [-1, 1]; one step moves the robot by ``step_size * action``
(metres). The scripted :class:`NavDemonstrator` behaves differently in four kinds of region, and
each kind has a ground-truth best assistance type:

==================  =====================================================  ===================
region (along x)    demonstrator behaviour                                 ground truth
==================  =====================================================  ===================
corridor            drive +x, steer back to y = 0, small noise             ``none``
approach            the same, slower, in the last 0.3 m before the fork    ``none``
fork (x≈fork_x)     obstacle ahead: per episode go round above *or* below  ``discrete``
spread              vx fixed, vy drawn uniformly per step (wide 1-D)       ``correction``
chaos               vx and vy drawn uniformly per step (no consistency)    ``teleop``
==================  =====================================================  ===================

The fork is a decision *point*: once the robot has left y ≈ 0 its branch is visible in the state.
:func:`ground_truth` therefore labels a state by what the next ``lookahead`` metres ahead of it
hold, and returns ``"transition"`` where a forecast straddles two regions (excluded from scoring).

Observation format (:mod:`embodied_steer.sim.base`): ``state`` = position ``(x, y)`` (metres),
``env_state`` = offset to the goal ``(goal_x - x, -y)`` and the reading of a forward range sensor
(distance along +x to the obstacle's surface, ``sensor_range`` when nothing is in range), all in
metres. Pure NumPy, ~µs per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch

from embodied_steer.core.policy import DenoiseCallback, PolicyInfo, SteerablePolicy
from embodied_steer.core.types import ActionBounds, Observation
from embodied_steer.sim.base import EnvSpec, RenderSettings

LABELS = ("none", "discrete", "correction", "teleop")


@dataclass(frozen=True)
class NavLayout:
    """Where the regions are (metres along x) and how fast the robot moves.

    Attributes:
        goal_x: success when ``x >= goal_x``.
        fork_x: x of the decision point in front of the obstacle (centre ``fork_x + obstacle_r``).
        obstacle_r: obstacle radius; branches pass at ``y = ±branch_y``.
        branch_y: lateral offset of the two branches.
        spread: ``(x0, x1)`` of the wide-continuous-spread region.
        chaos: ``(x0, x1)`` of the no-consistent-behaviour region.
        step_size: metres moved per step at ``|action| = 1``.
        approach: metres before the fork where the demonstrator slows to ``approach_speed``
            (more demonstrations near the decision point).
        sensor_range: reach of the forward range sensor (metres).
    """

    goal_x: float = 4.0
    fork_x: float = 0.9
    obstacle_r: float = 0.25
    branch_y: float = 0.4
    spread: tuple[float, float] = (2.0, 2.8)
    chaos: tuple[float, float] = (3.1, 3.7)
    step_size: float = 0.05
    approach: float = 0.3
    approach_speed: float = 0.35
    sensor_range: float = 0.3

    def range_reading(self, x: float, y: float) -> float:
        """Forward range sensor at ``(x, y)``: distance along +x to the obstacle disc (centre
        ``(fork_x + obstacle_r, 0)``), clipped to ``[0, sensor_range]``; ``sensor_range`` when the
        ray misses the disc or the robot is past its centre (metres)."""
        cx, r = self.fork_x + self.obstacle_r, self.obstacle_r
        if abs(y) >= r or x > cx:
            return self.sensor_range
        hit = cx - np.sqrt(r * r - y * y)
        return float(np.clip(hit - x, 0.0, self.sensor_range))

    def region(self, x: float) -> str:
        """Region kind at position ``x``: ``corridor``, ``obstacle``, ``spread`` or ``chaos``."""
        if self.spread[0] <= x < self.spread[1]:
            return "spread"
        if self.chaos[0] <= x < self.chaos[1]:
            return "chaos"
        if self.fork_x <= x < self.fork_x + 2 * self.obstacle_r + 0.1:
            return "obstacle"
        if self.fork_x - self.approach <= x < self.fork_x:
            return "approach"
        return "corridor"


def ground_truth(state: np.ndarray, layout: NavLayout = NavLayout(), lookahead: float = 0.4) -> str:
    """Best assistance type for position ``state = (x, y)``, or ``"transition"``.

    A state is labelled by the region kind that a forecast of ``lookahead`` metres ahead lies in:
    ``spread`` → ``correction``, ``chaos`` → ``teleop``, corridor/approach/obstacle → ``none``.
    Right in front of the fork (within ``fork_window`` metres, still near ``y = 0``; at the approach
    speed a 6-step forecast covers ~0.1 m) the label is ``discrete``. Forecasts that straddle two
    kinds (or the fork's edge) give ``transition``.
    """
    x, y = float(state[0]), float(state[1])
    L = layout
    fork_window = 0.06
    if abs(y) < 0.03 and L.fork_x - fork_window <= x < L.fork_x + L.step_size:
        return "discrete"
    if abs(y) < 0.03 and L.fork_x - 2 * fork_window <= x < L.fork_x:
        return "transition"
    near_fork = L.fork_x - L.approach <= x < L.fork_x
    kinds = {L.region(x + f * (0.12 if near_fork else lookahead)) for f in (0.0, 0.5, 1.0)}
    kinds = {"approach" if k == "obstacle" else k for k in kinds} if near_fork else kinds
    kinds = {"corridor" if k == "obstacle" else k for k in kinds}
    if len(kinds) != 1:
        return "transition"
    return {"corridor": "none", "approach": "none", "spread": "correction", "chaos": "teleop"}[kinds.pop()]


class NavAmbiguityEnv(gym.Env):
    """The 2-D navigation benchmark as a gymnasium env in the toolkit's observation format.

    Args:
        horizon: episode length in steps (truncation).
        name: catalogue name used in results.
        terminate_on_success: end the episode when the goal line is crossed.
    """

    metadata = {"render_modes": [], "render_fps": 10}

    def __init__(self, horizon: int = 220, name: str = "nav_ambiguity", terminate_on_success: bool = True,
                 layout: NavLayout | None = None) -> None:
        self.layout = layout or NavLayout()
        self.horizon = int(horizon)
        self.terminate_on_success = terminate_on_success
        self.instruction = "drive to the goal line"
        self.state_names = ("x", "y")
        self.render_settings = RenderSettings(cameras=())
        self.observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-10.0, 10.0, (2,), np.float32),
                                                  "env_state": gym.spaces.Box(-10.0, 10.0, (3,), np.float32)})
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.spec_info = EnvSpec(
            name=name, max_episode_steps=self.horizon, action_bounds=ActionBounds.symmetric(2),
            state_names=self.state_names, control_hz=10.0, extra={"robot": "point2d"},
        )
        self.pos = np.zeros(2)
        self.steps = 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {"state": self.pos.astype(np.float32),
                "env_state": np.array([self.layout.goal_x - self.pos[0], -self.pos[1],
                                       self.layout.range_reading(*self.pos)], np.float32)}

    def _info(self) -> dict[str, Any]:
        return {"is_success": bool(self.pos[0] >= self.layout.goal_x), "instruction": self.instruction,
                "render_settings": self.render_settings.as_dict(), "ground_truth": ground_truth(self.pos, self.layout)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.pos = np.array([0.05, self.np_random.uniform(-0.04, 0.04)])
        self.steps = 0
        return self._obs(), self._info()

    def step(self, action: np.ndarray):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self.pos = np.clip(self.pos + self.layout.step_size * a, -10.0, 10.0)
        self.steps += 1
        info = self._info()
        terminated = info["is_success"] and self.terminate_on_success
        truncated = self.steps >= self.horizon
        return self._obs(), float(info["is_success"]), terminated, truncated, info

    def close(self) -> None:
        pass


class NavDemonstrator(SteerablePolicy):
    """Scripted demonstrator for :class:`NavAmbiguityEnv` (one action per call).

    Args:
        noise_std: std of Gaussian noise on every action in the corridor (action units).
        seed: seed of the per-episode branch choice and the per-step randomness.
    """

    def __init__(self, noise_std: float = 0.03, seed: int | None = 0, layout: NavLayout | None = None) -> None:
        super().__init__(PolicyInfo(name="nav_demonstrator", chunk_size=1, execute_steps=1,
                                    action_bounds=ActionBounds.symmetric(2), state_dim=2, env_state_dim=3))
        self.layout = layout or NavLayout()
        self.noise_std = noise_std
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """New episode: draw the branch taken at the fork (re-seeding the demonstrator with ``seed``)."""
        super().reset(seed)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.branch = float(self.rng.choice([-1.0, 1.0]))

    def action(self, pos: np.ndarray) -> np.ndarray:
        """Demonstrator action ``(2,)`` at position ``pos = (x, y)``."""
        L, (x, y) = self.layout, pos
        noise = self.rng.normal(0.0, self.noise_std, 2)
        kind = L.region(x)
        if kind == "obstacle":
            target = self.branch * L.branch_y if x < L.fork_x + 2 * L.obstacle_r else 0.0
            vy = np.clip(3.0 * (target - y), -1.0, 1.0)
            vx = 0.3 if abs(target - y) > 0.1 and x < L.fork_x + 2 * L.obstacle_r else 1.0
            a = np.array([vx, vy]) + noise
        elif kind == "spread":
            a = np.array([0.7 + noise[0], self.rng.uniform(-0.8, 0.8)])
        elif kind == "approach":
            a = np.array([L.approach_speed, np.clip(-2.0 * y, -1.0, 1.0)]) + noise
        elif kind == "chaos":
            a = self.rng.uniform(-1.0, 1.0, 2) + np.array([0.4, -0.5 * y])
        else:
            a = np.array([1.0, np.clip(-2.0 * y, -1.0, 1.0)]) + noise
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def _generate(self, history: Sequence[Observation], n: int, noise: torch.Tensor | None,
                  denoise_callback: DenoiseCallback | None) -> np.ndarray:
        state = history[-1].state
        return np.repeat(self.action(np.asarray(state, dtype=np.float64))[None, None], n, axis=0)
