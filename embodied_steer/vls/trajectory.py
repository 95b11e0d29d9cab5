"""Differentiable maps from action chunks to end-effector trajectories, so rewards can speak 3-D.

A reward program sees ``trajectory (B, T, 3)``: where the end effector will be after each action of
a chunk, in the world frame (metres). How that follows from the actions depends on the controller:

* delta-pose controllers (robosuite ``OSC_POSE`` / ``OSC_POSITION`` with ``control_delta``): each
  action commands a position offset ``clip(a, input_min, input_max)`` mapped linearly onto
  ``[output_min, output_max]`` (robosuite's ``Controller.scale_action``), relative to the current
  end-effector position, so the trajectory is the current position plus the cumulative sum of the
  scaled offsets (:class:`DeltaPositionMap`);
* absolute controllers: the action's position entries *are* the target (:class:`AbsolutePositionMap`).

The controller's scale is read from the environment's controller configuration
(``env.spec_info.extra["controller_config"]``, see :func:`trajectory_map_for`), never a constant.

How far the end effector gets in one control step is a property of the controller's gains, not of
the scale: robosuite's OSC re-targets ``current position + offset`` at every control step and its
critically damped PD loop (``kp = 150``, 20 Hz) covers only a fraction of the offset before the next
target arrives. :func:`osc_tracking` computes that fraction from ``kp``, ``damping_ratio``, the
control rate and the physics timestep (a unit-mass PD model in steady motion: 0.27 for robosuite's
defaults); on a real Lift rollout the end effector covered ~0.17–0.2 of the commanded offset per
step, and the predicted 8-step trajectory is within ~1 cm on average (tested with a stated
tolerance). A pure cumulative sum (tracking 1) overshoots by ~7 cm per chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import torch

from embodied_steer.core.errors import ConfigError

EEF_POSITION_NAMES = ("eef_pos_x", "eef_pos_y", "eef_pos_z")


class TrajectoryMap(Protocol):
    """``(actions (B, T, D_action) in env units, ee_position (3,)) -> trajectory (B, T, 3)``."""

    def __call__(self, actions: torch.Tensor, ee_position: torch.Tensor) -> torch.Tensor: ...


def _check(actions: torch.Tensor, ee_position: torch.Tensor, dims: Sequence[int]) -> None:
    if actions.ndim != 3:
        raise ValueError(f"actions must have shape (B, T, D_action), got {tuple(actions.shape)}")
    if max(dims) >= actions.shape[-1]:
        raise ValueError(f"position dims {list(dims)} do not fit actions with {actions.shape[-1]} dimensions")
    if tuple(ee_position.shape) != (3,):
        raise ValueError(f"ee_position must have shape (3,), got {tuple(ee_position.shape)}")


@dataclass(frozen=True)
class DeltaPositionMap:
    """Delta-position controller: ``p_k = p_0 + tracking * sum_{j<=k} scale(a_j)``.

    Attributes:
        dims: action entries that hold the position offset (x, y, z).
        input_min, input_max: the controller's input range (actions are clipped to it).
        output_min, output_max: metres commanded at ``input_min`` / ``input_max`` per axis.
        tracking: fraction of the commanded offset the end effector covers per step.
    """

    dims: tuple[int, int, int] = (0, 1, 2)
    input_min: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    input_max: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output_min: tuple[float, float, float] = (-0.05, -0.05, -0.05)
    output_max: tuple[float, float, float] = (0.05, 0.05, 0.05)
    tracking: float = 1.0

    def __post_init__(self) -> None:
        for name in ("input_min", "input_max", "output_min", "output_max"):
            if len(getattr(self, name)) != 3:
                raise ConfigError(f"DeltaPositionMap.{name} needs 3 values, got {getattr(self, name)}")
        if any(hi <= lo for lo, hi in zip(self.input_min, self.input_max)):
            raise ConfigError(f"controller input range is empty: {self.input_min} .. {self.input_max}")
        if not 0.0 < self.tracking <= 2.0:
            raise ConfigError(f"tracking must be in (0, 2], got {self.tracking}")

    def offsets(self, actions: torch.Tensor) -> torch.Tensor:
        """Per-step commanded position offsets ``(B, T, 3)`` in metres (robosuite's ``scale_action``)."""
        a = actions[..., list(self.dims)]
        lo = a.new_tensor(self.input_min)
        hi = a.new_tensor(self.input_max)
        out_lo = a.new_tensor(self.output_min)
        out_hi = a.new_tensor(self.output_max)
        scale = (out_hi - out_lo).abs() / (hi - lo).abs()
        a = torch.maximum(torch.minimum(a, hi), lo)
        return (a - (hi + lo) / 2) * scale + (out_hi + out_lo) / 2

    def __call__(self, actions: torch.Tensor, ee_position: torch.Tensor) -> torch.Tensor:
        ee_position = torch.as_tensor(ee_position, dtype=actions.dtype, device=actions.device)
        _check(actions, ee_position, self.dims)
        return ee_position + self.tracking * torch.cumsum(self.offsets(actions), dim=1)


@dataclass(frozen=True)
class AbsolutePositionMap:
    """Absolute-position controller: the trajectory is the actions' position entries (identity)."""

    dims: tuple[int, int, int] = (0, 1, 2)

    def __call__(self, actions: torch.Tensor, ee_position: torch.Tensor) -> torch.Tensor:
        ee_position = torch.as_tensor(ee_position, dtype=actions.dtype, device=actions.device)
        _check(actions, ee_position, self.dims)
        return actions[..., list(self.dims)]


def osc_tracking(kp: float, damping_ratio: float, control_hz: float, sim_timestep: float = 0.002) -> float:
    """Fraction of a commanded per-step offset that a PD-tracked unit mass covers in steady motion.

    Models robosuite's OSC position loop (force ``kp·(goal − x) − 2ζ√kp·ẋ``, goal reset to
    ``x + offset`` every control step, physics integrated at ``sim_timestep``).
    """
    if kp <= 0 or control_hz <= 0 or sim_timestep <= 0:
        raise ConfigError(f"osc_tracking needs kp, control_hz, sim_timestep > 0, got {kp}, {control_hz}, {sim_timestep}")
    kd = 2.0 * damping_ratio * math.sqrt(kp)
    substeps = max(1, round(1.0 / (control_hz * sim_timestep)))
    x = v = covered = 0.0
    for _ in range(60):
        goal, start = x + 1.0, x
        for _ in range(substeps):
            v += (kp * (goal - x) - kd * v) * sim_timestep
            x += v * sim_timestep
        covered = x - start
    return float(min(max(covered, 1e-3), 2.0))


def trajectory_map_for(
    spec_extra: Mapping[str, Any], *, control_hz: float | None = None, tracking: float | None = None
) -> DeltaPositionMap | AbsolutePositionMap:
    """The trajectory map of an environment, from its ``spec_info.extra`` (and ``control_hz``).

    Needs ``controller_config`` (robosuite's controller dict: ``control_delta``, ``input_min/max``,
    ``output_min/max``, ``kp``, ``damping_ratio``) as
    :class:`~embodied_steer.sim.robosuite_env.RobosuiteEnv` records it. ``tracking=None`` derives the
    per-step tracking factor from the gains with :func:`osc_tracking` (needs ``control_hz``; the
    physics timestep is ``spec_extra["sim_timestep"]``, default 0.002 s); pass a number to override.

    Raises:
        ConfigError: the environment does not describe its controller.
    """
    cfg = spec_extra.get("controller_config")
    if not isinstance(cfg, Mapping):
        raise ConfigError(
            "cannot map actions to end-effector positions: the environment records no controller_config "
            f"(spec_info.extra has {sorted(spec_extra)})"
        )
    if not bool(cfg.get("control_delta", True)):
        return AbsolutePositionMap()

    def three(key: str) -> tuple[float, float, float]:
        value = cfg[key]
        values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value][:3]
        return (values[0], values[1], values[2])

    if tracking is None:
        if control_hz is None:
            raise ConfigError("trajectory_map_for needs control_hz (or an explicit tracking factor)")
        kp = cfg.get("kp", 150)
        kp = float(kp if isinstance(kp, (int, float)) else list(kp)[0])
        damping = cfg.get("damping_ratio", 1.0)
        damping = float(damping if isinstance(damping, (int, float)) else list(damping)[0])
        tracking = osc_tracking(kp, damping, float(control_hz), float(spec_extra.get("sim_timestep", 0.002)))
    try:
        return DeltaPositionMap(
            input_min=three("input_min"), input_max=three("input_max"),
            output_min=three("output_min"), output_max=three("output_max"), tracking=tracking,
        )
    except KeyError as exc:
        raise ConfigError(f"controller_config lacks {exc.args[0]}: cannot scale delta actions") from None


def ee_position_index(state_names: Sequence[str]) -> list[int]:
    """Indices of the end-effector position in an environment's state vector (``eef_pos_x/y/z``)."""
    names = list(state_names)
    missing = [n for n in EEF_POSITION_NAMES if n not in names]
    if missing:
        raise ConfigError(f"state has no end-effector position ({missing} not in {names})")
    return [names.index(n) for n in EEF_POSITION_NAMES]
