"""Potential-based reward shaping for the DSRL training MDP (Ng, Harada & Russell, 1999).

With a sparse success reward the critic learns from one bit per episode. A potential ``Φ(s)``
that grows as the task progresses adds, for a chunk of ``n`` steps from ``s`` to ``s'``,

    R' = R + γ^n · Φ(s') · (1 − terminal) − Φ(s),

the per-step shaping ``γΦ(s_{t+1}) − Φ(s_t)`` summed with discounting over the chunk (it
telescopes). A terminal state has ``Φ = 0``, so over a whole episode the shaped return is the task
return minus ``Φ(s_0)``: every policy's value moves by the same amount at a given start state and
the best policy — and the ranking of latents at a state — is what it was. What changes is that a
chunk that brings the gripper to the cube or raises the cube is credited at once, from the
transition itself, instead of only through the episode's final success. A time-limit truncation
is bootstrapped (``Φ(s')`` counts); the training horizon's ``fail`` cut is terminal (it does not).

Only training transitions are shaped; evaluation reports the task's own success and return, and
the logged training returns are the task's too (``info["task_reward"]``).

Potentials read the agent's feature vector (:class:`~embodied_steer.dsrl.features.ObsFeatures`,
its newest frame), so the same function shapes online chunks and offline dataset rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from embodied_steer.core.errors import ConfigError
from embodied_steer.dsrl.features import ObsFeatures

SHAPINGS = ("none", "lift")


def check_shaping(name: str, scale: float, sharpness: float) -> None:
    """Raise :class:`ConfigError` for an unknown shaping ``name`` or, when it shapes, a bad
    ``scale`` / ``sharpness`` (cheap: no environment needed)."""
    if name not in SHAPINGS:
        raise ConfigError(f"reward_shaping must be one of {SHAPINGS}, got {name!r}")
    if name != "none":
        _check_potential_settings(scale, sharpness)


def _check_potential_settings(scale: float, sharpness: float) -> None:
    if not 0.0 < float(scale) < 1.0:
        raise ConfigError(f"shaping_scale must be in (0, 1) (the success reward is 1), got {scale}")
    if not float(sharpness) > 0.0:
        raise ConfigError(f"shaping_sharpness must be > 0 (1/m), got {sharpness}")


class Potential(Protocol):
    """``Φ``: agent observations ``(..., dim)`` → potentials ``(...,)`` (float64)."""

    def __call__(self, obs: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class LiftPotential:
    """Progress on robosuite Lift — reach, grasp, lift — from the newest frame of the agent observation.

    ``Φ = scale · (reach + reach · closure + lift) / 3`` with

    * ``reach = 1 − tanh(sharpness · |gripper→cube|)`` (robosuite's own reaching term),
    * ``closure = clip((open_q − q) / (open_q − grasp_q), 0, 1)``, ``q`` the mean finger opening
      (m): how far the fingers have closed, counted only as far as the gripper is at the cube,
    * ``lift = clip((z − rest_z) / (success_z − rest_z), 0, 1)``: how far the cube is towards the
      success height.

    Layout read: the robot ``state`` is ``eef_pos`` (3), ``eef_quat`` (4), ``gripper_qpos`` (2,
    ±m per finger); Lift's ``object-state`` (the agent's ``env_state``) is ``cube_pos`` (3, m),
    ``cube_quat`` (4), ``gripper_to_cube_pos`` (3, m). Constants measured on this toolkit's Lift
    (``tests/test_dsrl_shaping.py`` checks them): the cube rests at z ≈ 0.821 m and Lift succeeds
    above 0.84 m (4 cm over the 0.8 m table top, robosuite's rule); the open fingers sit at
    ≈ 0.039 m, closed on the cube at ≈ 0.022 m.

    Args:
        features: the agent's observation layout (9 robot state values and the 10 Lift
            ``env_state`` values).
        scale: the largest potential, in units of the success reward (keep it below 1: a shaped
            chunk that ends in success then still earns more than one that only approaches it).
        sharpness: 1/m in the reaching term (robosuite uses 10: the term then changes by only 0.25
            between 3.7 cm, where the zero-noise policy's misses stop, and 1 cm; 50 makes it 0.5).
    """

    features: ObsFeatures
    scale: float = 0.5
    sharpness: float = 10.0
    rest_z: float = 0.821
    success_z: float = 0.84
    open_q: float = 0.039
    grasp_q: float = 0.022

    def __post_init__(self) -> None:
        if self.features.env_state_dim < 10 or self.features.state_dim < 9:
            raise ConfigError(
                "reward_shaping=lift reads the gripper from the agent's state (9 values) and the cube from its "
                f"env_state (10 Lift object-state values); the agent has {self.features.state_dim} and "
                f"{self.features.env_state_dim} (is use_env_state false, or the env not Lift?)")
        _check_potential_settings(self.scale, self.sharpness)

    def terms(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """``reach``, ``grasp`` (= reach · closure) and ``lift``, each in [0, 1], shape ``obs.shape[:-1]``."""
        obs = np.asarray(obs, np.float64)
        if obs.shape[-1] != self.features.dim:
            raise ConfigError(f"potential expects agent observations of {self.features.dim} values, got {obs.shape[-1]}")
        frame = obs[..., -self.features.frame_dim :]  # the newest frame
        state, env_state = frame[..., : self.features.state_dim], frame[..., self.features.state_dim :]
        reach = 1.0 - np.tanh(self.sharpness * np.linalg.norm(env_state[..., 7:10], axis=-1))
        opening = np.abs(state[..., 7:9]).mean(axis=-1)
        closure = np.clip((self.open_q - opening) / (self.open_q - self.grasp_q), 0.0, 1.0)
        lift = np.clip((env_state[..., 2] - self.rest_z) / (self.success_z - self.rest_z), 0.0, 1.0)
        return {"reach": reach, "grasp": reach * closure, "lift": lift}

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        t = self.terms(obs)
        return self.scale * (t["reach"] + t["grasp"] + t["lift"]) / 3.0


def make_potential(name: str, features: ObsFeatures, scale: float = 0.5, sharpness: float = 10.0) -> Potential | None:
    """The potential called ``name`` (``"none"``: no shaping, ``None``) with its largest value
    ``scale`` and, for ``lift``, the reaching term's ``sharpness`` (1/m)."""
    check_shaping(name, scale, sharpness)
    if name == "none":
        return None
    return LiftPotential(features, scale=float(scale), sharpness=float(sharpness))


def shaped_reward(potential: Potential, obs: np.ndarray, reward: float, discount: float, terminal: bool,
                  next_obs: np.ndarray) -> float:
    """``R + γ^n Φ(s') (1 − terminal) − Φ(s)`` for one chunk transition (``discount`` = ``γ^n``)."""
    after = 0.0 if terminal else float(potential(next_obs))
    return float(reward) + float(discount) * after - float(potential(obs))


def shape_rows(potential: Potential, rows: list[tuple]) -> list[tuple]:
    """Shape offline rows ``(s, a, R, γ^n, terminal, s', G)`` (see ``na.offline_transitions``).

    The Monte-Carlo return of a terminated episode becomes ``G − Φ(s)`` (the shaping telescopes);
    an unknown one (NaN) stays unknown.
    """
    out = []
    for obs, action, reward, discount, terminal, next_obs, mc in rows:
        r = shaped_reward(potential, obs, reward, discount, bool(terminal), next_obs)
        out.append((obs, action, r, discount, terminal, next_obs, float(mc) - float(potential(obs))))
    return out
