"""The always-on safety layer, pure Python (no ROS): validation, clamping, watchdog, e-stop.

Every command a node sends passes through :class:`SafetyFilter` *after* the policy and all
interventions, so steering can never push a command past these limits. Two command kinds:

* **End-effector deltas** (robosuite OSC_POSE-style actions, ``(7,)``: normalised delta position
  ``[-1, 1]`` (``× max_linear_step_m`` metres per control step), delta axis-angle ``[-1, 1]``
  (``× max_angular_step_rad`` radians per step) and a gripper command in ``[-1, 1]``, -1 = open).
  Clamped to the action box, to linear / angular speed limits (m/s, rad/s at ``control_hz``), and
  so that the commanded end-effector position stays inside the workspace box (metres, base frame).
* **Joint positions** ``(n_joints,)`` (radians or metres): clamped to the joint limits and to the
  joint speed limit (units/s) relative to the last commanded (or measured) position.

:class:`Watchdog` decides when to stop commanding (hold position): observations older than
``obs_timeout_s`` or an inference call longer than ``max_inference_s``. :class:`EStop` latches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


class UnsafeInput(ValueError):
    """A message or command was malformed (wrong size, NaN / inf, wrong names); it was rejected."""


def require_finite(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` as float64; raise :class:`UnsafeInput` naming ``what`` on NaN / inf."""
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise UnsafeInput(f"{what} contains NaN or inf at indices {np.flatnonzero(~np.isfinite(arr.ravel())).tolist()}")
    return arr


def require_size(values: np.ndarray, size: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.shape[0] != size:
        raise UnsafeInput(f"{what} must have {size} values, got {arr.shape[0]}")
    return arr


@dataclass(frozen=True)
class EefLimits:
    """Limits of end-effector delta commands.

    Attributes:
        action_low, action_high: box of the normalised action ``(7,)``.
        workspace_low, workspace_high: allowed end-effector positions (metres, base/world frame).
        max_linear_speed: metres per second.
        max_angular_speed: radians per second.
        max_linear_step_m: metres per control step for a normalised delta of 1 (robosuite: 0.05).
        max_angular_step_rad: radians per control step for a normalised delta of 1 (robosuite: 0.5).
        control_hz: control rate (Hz) that turns steps into speeds.
    """

    action_low: Sequence[float] = (-1, -1, -1, -1, -1, -1, -1)
    action_high: Sequence[float] = (1, 1, 1, 1, 1, 1, 1)
    workspace_low: Sequence[float] = (-0.5, -0.5, 0.80)
    workspace_high: Sequence[float] = (0.5, 0.5, 1.40)
    max_linear_speed: float = 1.0
    max_angular_speed: float = 10.0
    max_linear_step_m: float = 0.05
    max_angular_step_rad: float = 0.5
    control_hz: float = 20.0

    def __post_init__(self) -> None:
        for name in ("action_low", "action_high", "workspace_low", "workspace_high"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"EefLimits.{name} must be finite")
            object.__setattr__(self, name, arr)
        if self.action_low.shape != (7,) or self.action_high.shape != (7,):
            raise ValueError("EefLimits.action_low/high must have 7 values")
        if self.workspace_low.shape != (3,) or self.workspace_high.shape != (3,):
            raise ValueError("EefLimits.workspace_low/high must have 3 values")
        if np.any(self.action_low > self.action_high) or np.any(self.workspace_low > self.workspace_high):
            raise ValueError("EefLimits: a low bound is above its high bound")
        for name in ("max_linear_speed", "max_angular_speed", "max_linear_step_m", "max_angular_step_rad",
                     "control_hz"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"EefLimits.{name} must be a positive finite number, got {value}")


@dataclass(frozen=True)
class JointLimits:
    """Limits of joint-position commands: names, position box and speed (units per second)."""

    names: Sequence[str]
    lower: Sequence[float]
    upper: Sequence[float]
    max_velocity: Sequence[float]
    control_hz: float = 20.0

    def __post_init__(self) -> None:
        n = len(self.names)
        for name in ("lower", "upper", "max_velocity"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != (n,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"JointLimits.{name} must have {n} finite values")
            object.__setattr__(self, name, arr)
        if np.any(self.lower > self.upper) or np.any(self.max_velocity <= 0):
            raise ValueError("JointLimits: lower > upper or a non-positive max_velocity")
        object.__setattr__(self, "names", tuple(self.names))


@dataclass
class SafetyReport:
    """What :class:`SafetyFilter` changed: ``clamped`` dimensions and human-readable reasons."""

    clamped: bool = False
    reasons: list[str] = field(default_factory=list)


class SafetyFilter:
    """Clamp commands into the configured limits (stateless for eef, remembers last joint command)."""

    def __init__(self, eef: EefLimits | None = None, joints: JointLimits | None = None) -> None:
        self.eef = eef or EefLimits()
        self.joints = joints
        self._last_joint_cmd: np.ndarray | None = None

    # ------------------------------------------------------------------ end-effector deltas
    def filter_eef(self, action: np.ndarray, eef_pos: np.ndarray | None) -> tuple[np.ndarray, SafetyReport]:
        """Return a safe ``(7,)`` action and what was clamped.

        Args:
            action: normalised OSC delta action ``(7,)``.
            eef_pos: current end-effector position (metres) for the workspace limit; ``None``
                means unknown, and then the translation is zeroed (never move blind).
        Raises:
            UnsafeInput: wrong size or NaN / inf (the caller holds position instead).
        """
        lim = self.eef
        a = require_finite(require_size(action, 7, "eef action"), "eef action")
        report = SafetyReport()
        safe = np.clip(a, lim.action_low, lim.action_high)
        if not np.array_equal(safe, a):
            report.reasons.append("action box")
        # speed limits: scale the translation / rotation parts as a whole (keeps the direction)
        lin_speed = np.linalg.norm(safe[:3]) * lim.max_linear_step_m * lim.control_hz
        if lin_speed > lim.max_linear_speed:
            safe[:3] *= lim.max_linear_speed / lin_speed
            report.reasons.append("linear speed")
        ang_speed = np.linalg.norm(safe[3:6]) * lim.max_angular_step_rad * lim.control_hz
        if ang_speed > lim.max_angular_speed:
            safe[3:6] *= lim.max_angular_speed / ang_speed
            report.reasons.append("angular speed")
        if eef_pos is None:
            if np.any(safe[:3] != 0):
                report.reasons.append("unknown end-effector position: translation zeroed")
            safe[:3] = 0.0
        else:
            pos = require_finite(require_size(eef_pos, 3, "eef position"), "eef position")
            lo, hi = self._workspace_step(pos)
            delta = safe[:3] * lim.max_linear_step_m
            bounded = np.clip(delta, lo, hi)
            if not np.array_equal(bounded, delta):
                safe[:3] = bounded / lim.max_linear_step_m
                report.reasons.append("workspace")
        safe = np.clip(safe, lim.action_low, lim.action_high)
        report.clamped = bool(report.reasons)
        return safe.astype(np.float32), report

    def _workspace_step(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Allowed translation (metres) per axis from ``pos``: up to the workspace boundary, and
        never further out when ``pos`` is already outside."""
        lo = np.minimum(0.0, self.eef.workspace_low - pos)
        hi = np.maximum(0.0, self.eef.workspace_high - pos)
        return lo, hi

    def is_safe_eef(self, action: np.ndarray, eef_pos: np.ndarray | None, atol: float = 1e-5) -> bool:
        """Check (without changing) that ``action`` satisfies every eef limit; used by monitors."""
        try:
            a = require_finite(require_size(action, 7, "eef action"), "eef action")
        except UnsafeInput:
            return False
        lim = self.eef
        if np.any(a < lim.action_low - atol) or np.any(a > lim.action_high + atol):
            return False
        if np.linalg.norm(a[:3]) * lim.max_linear_step_m * lim.control_hz > lim.max_linear_speed * (1 + 1e-4) + atol:
            return False
        if np.linalg.norm(a[3:6]) * lim.max_angular_step_rad * lim.control_hz > lim.max_angular_speed * (1 + 1e-4) + atol:
            return False
        if eef_pos is not None:
            pos = np.asarray(eef_pos, np.float64)
            lo, hi = self._workspace_step(pos)
            delta = a[:3] * lim.max_linear_step_m
            if np.any(delta < lo - atol) or np.any(delta > hi + atol):
                return False
        return True

    # ------------------------------------------------------------------ joint positions
    def filter_joints(self, positions: np.ndarray, current: np.ndarray | None) -> tuple[np.ndarray, SafetyReport]:
        """Return safe joint positions ``(n,)``: inside the limits and within one step of speed.

        ``current`` is the measured position (used when no command was sent yet)."""
        if self.joints is None:
            raise UnsafeInput("joint commands need JointLimits")
        lim = self.joints
        q = require_finite(require_size(positions, len(lim.names), "joint command"), "joint command")
        report = SafetyReport()
        safe = np.clip(q, lim.lower, lim.upper)
        if not np.array_equal(safe, q):
            report.reasons.append("joint limits")
        ref = self._last_joint_cmd if self._last_joint_cmd is not None else current
        if ref is not None:
            ref = require_finite(require_size(ref, len(lim.names), "joint reference"), "joint reference")
            max_step = lim.max_velocity / lim.control_hz
            stepped = np.clip(safe, ref - max_step, ref + max_step)
            if not np.array_equal(stepped, safe):
                report.reasons.append("joint velocity")
            safe = np.clip(stepped, lim.lower, lim.upper)
        self._last_joint_cmd = safe.copy()
        report.clamped = bool(report.reasons)
        return safe, report

    def reset_joint_reference(self) -> None:
        """Forget the last joint command (after a hold or a new episode)."""
        self._last_joint_cmd = None


@dataclass
class WatchdogStatus:
    ok: bool
    reason: str = ""


class Watchdog:
    """Decide whether commanding is allowed. Times are seconds of a monotonic clock.

    Args:
        obs_timeout_s: observations older than this stop commanding.
        max_inference_s: an inference call longer than this is an overrun: its chunk is dropped and
            commanding stops until the next observation arrives after the overrun.
    """

    def __init__(self, obs_timeout_s: float = 0.5, max_inference_s: float = 0.5) -> None:
        if not (obs_timeout_s > 0 and max_inference_s > 0):
            raise ValueError("watchdog timeouts must be positive")
        self.obs_timeout_s = float(obs_timeout_s)
        self.max_inference_s = float(max_inference_s)
        self._last_obs: float | None = None
        self._overrun_at: float | None = None

    def observation(self, now: float) -> None:
        """A valid observation arrived at ``now``."""
        self._last_obs = now
        if self._overrun_at is not None and now > self._overrun_at:
            self._overrun_at = None

    def inference(self, started: float, finished: float) -> bool:
        """Record an inference call; return ``False`` (overrun) when it took too long."""
        if finished - started > self.max_inference_s:
            self._overrun_at = finished
            return False
        return True

    def status(self, now: float) -> WatchdogStatus:
        if self._last_obs is None:
            return WatchdogStatus(False, "no observation yet")
        age = now - self._last_obs
        if age > self.obs_timeout_s:
            return WatchdogStatus(False, f"observations stale ({age:.3f} s > {self.obs_timeout_s:.3f} s)")
        if self._overrun_at is not None:
            return WatchdogStatus(False, "inference overrun; waiting for a fresh observation")
        return WatchdogStatus(True)

    def reset(self) -> None:
        self._last_obs = None
        self._overrun_at = None


class EStop:
    """A latching emergency stop: :meth:`engage` from anywhere; only :meth:`release` clears it."""

    def __init__(self) -> None:
        self.engaged = False
        self.reason = ""

    def engage(self, reason: str = "e-stop") -> None:
        self.engaged = True
        self.reason = reason

    def release(self) -> None:
        self.engaged = False
        self.reason = ""


class StampOrder:
    """Reject stamps that go backwards (per source). Stamps are integer nanoseconds."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def check(self, source: str, stamp_ns: int) -> None:
        if stamp_ns <= 0:
            raise UnsafeInput(f"{source}: header stamp is zero or negative")
        last = self._last.get(source)
        if last is not None and stamp_ns < last:
            raise UnsafeInput(f"{source}: stamp {stamp_ns} ns is older than the previous {last} ns")
        self._last[source] = stamp_ns

    def reset(self) -> None:
        self._last.clear()
