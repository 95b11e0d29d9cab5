"""Scripted experts for robosuite Lift and PickPlaceCan (OSC_POSE controller).

They are ordinary :class:`SteerablePolicy` objects that read the end-effector position from
``obs.state`` and object poses from ``obs.env_state`` (privileged simulator state), so they run in
the same evaluation loop as learned policies. They produce demonstrations for training the shipped
base policy; per-episode randomness (gains, heights, timing) and per-step action noise make the
demonstrations realistically varied rather than identical.

Actions are OSC_POSE deltas: ``(7,)`` = position delta (1.0 ≙ 5 cm per step), rotation delta (kept
0: top-down grasps), gripper (-1 open, +1 close).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from embodied_steer.core.errors import ObservationError
from embodied_steer.core.policy import DenoiseCallback, PolicyInfo, SteerablePolicy
from embodied_steer.core.types import ActionBounds, Observation

POS_SCALE = 0.05  # metres per step at |action| = 1 (robosuite OSC_POSE default output_max)
OPEN, CLOSE = -1.0, 1.0


@dataclass
class ExpertNoise:
    """Randomness of a scripted expert.

    Attributes:
        action_std: std of Gaussian noise added to the position part of every action (action units).
        gain_range: per-episode range of the proportional gain (1/steps to close the error).
        offset_std: per-episode std (metres) of a constant xy offset of the grasp point.
    """

    action_std: float = 0.1
    gain_range: tuple[float, float] = (0.6, 1.0)
    offset_std: float = 0.004


class _PhaseExpert(SteerablePolicy):
    """Shared machinery: a phase machine that outputs one action per call."""

    object_slice = slice(0, 3)

    def __init__(self, name: str, noise: ExpertNoise | None = None, seed: int | None = None) -> None:
        super().__init__(
            PolicyInfo(
                name=name,
                chunk_size=1,
                execute_steps=1,
                action_bounds=ActionBounds.symmetric(7),
                state_dim=9,
            )
        )
        self.noise = noise or ExpertNoise()
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.phase = 0
        self.phase_steps = 0
        self.gain = float(self.rng.uniform(*self.noise.gain_range))
        self.offset = np.append(self.rng.normal(0.0, self.noise.offset_std, 2), 0.0)
        self._on_reset()

    def _on_reset(self) -> None:
        pass

    def _advance(self) -> None:
        self.phase += 1
        self.phase_steps = 0

    def _move(self, eef: np.ndarray, target: np.ndarray, gripper: float, max_speed: float = 1.0) -> np.ndarray:
        delta = (target - eef) / POS_SCALE * self.gain
        delta = np.clip(delta, -max_speed, max_speed)
        delta = delta + self.rng.normal(0.0, self.noise.action_std, 3)
        return np.concatenate([np.clip(delta, -1, 1), np.zeros(3), [gripper]]).astype(np.float32)

    def _generate(self, history: Sequence[Observation], n: int, noise: torch.Tensor | None,
                  denoise_callback: DenoiseCallback | None) -> np.ndarray:
        obs = history[-1]
        if obs.state is None or obs.env_state is None:
            raise ObservationError(f"{self.info.name} needs state and env_state (privileged object poses)")
        action = self._step(obs.state[:3].astype(np.float64), obs.env_state.astype(np.float64))
        self.phase_steps += 1
        return np.repeat(action[None, None], n, axis=0)

    def _step(self, eef: np.ndarray, env_state: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class LiftExpert(_PhaseExpert):
    """Reach above the cube, descend, close, lift. ``env_state[:3]`` is the cube position."""

    def __init__(self, noise: ExpertNoise | None = None, seed: int | None = None) -> None:
        super().__init__("scripted_lift", noise, seed)

    def _on_reset(self) -> None:
        self.hover = float(self.rng.uniform(0.06, 0.10))
        self.close_steps = int(self.rng.integers(6, 12))

    def _step(self, eef: np.ndarray, env_state: np.ndarray) -> np.ndarray:
        cube = env_state[self.object_slice] + self.offset
        above = cube + [0.0, 0.0, self.hover]
        if self.phase == 0:  # reach above the cube
            if np.linalg.norm((above - eef)[:2]) < 0.01 and abs(above[2] - eef[2]) < 0.02 or self.phase_steps > 80:
                self._advance()
            return self._move(eef, above, OPEN)
        if self.phase == 1:  # descend around the cube
            grasp = cube + [0.0, 0.0, -0.005]
            if abs(grasp[2] - eef[2]) < 0.01 or self.phase_steps > 40:
                self._advance()
            return self._move(eef, grasp, OPEN, max_speed=0.6)
        if self.phase == 2:  # close the gripper in place
            if self.phase_steps >= self.close_steps:
                self._advance()
            return self._move(eef, eef, CLOSE, max_speed=0.0)
        lift = np.array([eef[0], eef[1], cube[2] + 0.25])
        return self._move(eef, lift, CLOSE, max_speed=0.7)


class PickPlaceCanExpert(_PhaseExpert):
    """Grasp the can, carry it above its bin, lower, release and retreat.

    Args:
        goal: ``(3,)`` centre of the can's target bin placement (metres, world frame); robosuite's
            ``target_bin_placements`` for the can (the env wrapper exposes it as
            ``spec_info.extra["goal_pos"]``).
    """

    def __init__(self, goal: Sequence[float], noise: ExpertNoise | None = None, seed: int | None = None) -> None:
        self.goal = np.asarray(goal, dtype=np.float64)
        super().__init__("scripted_pickplace_can", noise, seed)

    @classmethod
    def from_env_spec(cls, env_spec, noise: ExpertNoise | None = None, seed: int | None = None) -> "PickPlaceCanExpert":
        """Build the expert for an environment whose ``spec_info.extra`` names the can's goal."""
        goal = env_spec.extra.get("goal_pos")
        if goal is None:
            raise ValueError(f"env '{env_spec.name}' does not expose a goal_pos; is it a PickPlace task?")
        return cls(goal, noise, seed)

    def _on_reset(self) -> None:
        self.hover = float(self.rng.uniform(0.07, 0.11))
        self.carry_z = float(self.rng.uniform(1.05, 1.12))
        self.close_steps = int(self.rng.integers(6, 12))

    def _step(self, eef: np.ndarray, env_state: np.ndarray) -> np.ndarray:
        can = env_state[self.object_slice] + self.offset
        if self.phase == 0:  # reach above the can
            above = can + [0.0, 0.0, self.hover]
            if np.linalg.norm((above - eef)[:2]) < 0.01 and abs(above[2] - eef[2]) < 0.02 or self.phase_steps > 80:
                self._advance()
            return self._move(eef, above, OPEN)
        if self.phase == 1:  # descend
            grasp = can + [0.0, 0.0, 0.0]
            if abs(grasp[2] - eef[2]) < 0.01 or self.phase_steps > 40:
                self._advance()
            return self._move(eef, grasp, OPEN, max_speed=0.6)
        if self.phase == 2:  # grasp
            if self.phase_steps >= self.close_steps:
                self._advance()
            return self._move(eef, eef, CLOSE, max_speed=0.0)
        if self.phase == 3:  # lift
            up = np.array([eef[0], eef[1], self.carry_z])
            if abs(up[2] - eef[2]) < 0.02 or self.phase_steps > 40:
                self._advance()
            return self._move(eef, up, CLOSE, max_speed=0.8)
        if self.phase == 4:  # carry above the goal
            over = np.array([self.goal[0], self.goal[1], self.carry_z])
            if np.linalg.norm((over - eef)[:2]) < 0.015 or self.phase_steps > 100:
                self._advance()
            return self._move(eef, over, CLOSE, max_speed=0.8)
        if self.phase == 5:  # lower into the bin
            low = np.array([self.goal[0], self.goal[1], self.goal[2] + 0.1])
            if abs(low[2] - eef[2]) < 0.02 or self.phase_steps > 40:
                self._advance()
            return self._move(eef, low, CLOSE, max_speed=0.6)
        if self.phase == 6:  # release
            if self.phase_steps >= 8:
                self._advance()
            return self._move(eef, eef, OPEN, max_speed=0.0)
        retreat = np.array([eef[0], eef[1], self.goal[2] + 0.35])
        return self._move(eef, retreat, OPEN, max_speed=0.8)
