"""What reward-guided sampling needs at the policy server: the arm's description and the scene's keypoints.

Guidance (:mod:`embodied_steer.vls`) maps action chunks to end-effector trajectories with the arm's
controller description and scores them against 3-D keypoints. In simulation both come from the
simulator object; through ROS 2 they arrive as messages, so the policy server never needs the
simulator:

=====================  ===============================  ===============================================
topic                  type                             meaning / units
=====================  ===============================  ===============================================
``arm_description``    ``std_msgs/String`` (JSON,       ``{"task", "state_names", "control_hz",
                       transient-local)                 "spec_extra": {"controller_config", "sim_timestep"},
                                                        "keypoint_names", "variant"}`` — published once by the arm
                                                        driver (the simulated arm publishes its env's);
                                                        a real arm can use the policy server's
                                                        ``arm_description_file`` parameter instead
``keypoints``          ``geometry_msgs/PoseArray``      keypoint positions (m, ``header.frame_id`` =
                                                        the command frame; orientations unused), one
                                                        row of the task's legend per pose, stamped with
                                                        the observation they describe (simulation: the
                                                        ground truth; a robot: a perception node)
=====================  ===============================  ===============================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml
from geometry_msgs.msg import Pose, PoseArray

from embodied_steer.ros.safety import UnsafeInput

MAX_KEYPOINTS = 64
MAX_COORDINATE_M = 100.0
REQUIRED_KEYS = ("task", "state_names", "control_hz", "spec_extra")


class ArmDescriptionError(ValueError):
    """An arm description that lacks what guidance needs, or is not JSON/YAML."""


def describe_env(env: Any) -> dict[str, Any]:
    """The arm description of a simulated environment (see the module docstring); JSON-serialisable."""
    spec = env.spec_info
    extra = spec.extra
    description: dict[str, Any] = {
        "task": str(extra.get("task", spec.name)),
        "state_names": [str(n) for n in spec.state_names],
        "control_hz": float(spec.control_hz) if spec.control_hz else None,
        "spec_extra": {k: extra[k] for k in ("controller_config", "sim_timestep") if k in extra},
    }
    try:
        from embodied_steer.vls.defaults import env_variant
        from embodied_steer.vls.keypoints import keypoint_legend

        variant, extra_bodies = env_variant(env)
        description["variant"] = variant
        description["keypoint_names"] = [k.name for k in keypoint_legend(description["task"], extra_bodies)]
    except Exception:  # noqa: BLE001 - a task without a legend: guidance is simply unavailable
        description["keypoint_names"] = []
    return json.loads(json.dumps(description, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def parse_arm_description(source: str | Mapping[str, Any]) -> dict[str, Any]:
    """Validate an arm description given as JSON/YAML text or a mapping.

    Raises:
        ArmDescriptionError: not a mapping, a required key missing, or a value of the wrong kind.
    """
    data: Any = source
    if isinstance(source, str):
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise ArmDescriptionError(f"arm description is not JSON/YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ArmDescriptionError(f"arm description must be a mapping, got {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ArmDescriptionError(f"arm description lacks {missing} (needs {list(REQUIRED_KEYS)})")
    names = data["state_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ArmDescriptionError("arm description: state_names must be a list of strings")
    hz = data["control_hz"]
    if not isinstance(hz, (int, float)) or not np.isfinite(hz) or hz <= 0:
        raise ArmDescriptionError(f"arm description: control_hz must be a positive number, got {hz!r}")
    if not isinstance(data["spec_extra"], Mapping):
        raise ArmDescriptionError("arm description: spec_extra must be a mapping (controller_config, sim_timestep)")
    if not isinstance(data["task"], str) or not data["task"]:
        raise ArmDescriptionError("arm description: task must be a non-empty string")
    return dict(data)


def load_arm_description(path: str | Path) -> dict[str, Any]:
    """:func:`parse_arm_description` of a JSON/YAML file; errors name the file."""
    try:
        return parse_arm_description(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise ArmDescriptionError(f"cannot read arm description {path}: {exc}") from None
    except ArmDescriptionError as exc:
        raise ArmDescriptionError(f"{path}: {exc}") from None


def keypoints_message(points: np.ndarray, stamp: Any, frame_id: str) -> PoseArray:
    """``(K, 3)`` positions (m) → ``PoseArray`` (identity orientations)."""
    msg = PoseArray()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    for p in np.asarray(points, dtype=np.float64).reshape(-1, 3):
        pose = Pose()
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in p)
        pose.orientation.w = 1.0
        msg.poses.append(pose)
    return msg


def keypoints_from_message(msg: PoseArray, expected: int | None = None) -> np.ndarray:
    """``PoseArray`` → ``(K, 3)`` float32 (m), validated.

    Raises:
        UnsafeInput: no or too many poses, a wrong count for the task's legend, NaN/inf, or a
            position farther than 100 m.
    """
    k = len(msg.poses)
    if not 1 <= k <= MAX_KEYPOINTS:
        raise UnsafeInput(f"keypoints: {k} poses (expected 1..{MAX_KEYPOINTS})")
    if expected is not None and expected and k != expected:
        raise UnsafeInput(f"keypoints: {k} poses, the task's legend has {expected}")
    arr = np.array([[p.position.x, p.position.y, p.position.z] for p in msg.poses], dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise UnsafeInput("keypoints: NaN or inf position")
    if np.abs(arr).max() > MAX_COORDINATE_M:
        raise UnsafeInput(f"keypoints: position beyond {MAX_COORDINATE_M} m")
    return arr.astype(np.float32)


class KeypointStore:
    """The latest keypoints and their stamp; hands guidance the ones that belong to an observation.

    Args:
        max_age_s: keypoints stamped more than this before the observation are stale.
        max_future_s: keypoints stamped more than this after the observation are refused too.
    """

    def __init__(self, max_age_s: float, max_future_s: float = 0.05) -> None:
        self.max_age_s, self.max_future_s = float(max_age_s), float(max_future_s)
        self.stamp_ns: int | None = None
        self.points: np.ndarray | None = None

    def update(self, stamp_ns: int, points: np.ndarray) -> None:
        if self.stamp_ns is not None and stamp_ns < self.stamp_ns:
            raise UnsafeInput("keypoints: stamp went backwards")
        self.stamp_ns, self.points = int(stamp_ns), np.asarray(points, dtype=np.float32)

    def clear(self) -> None:
        self.stamp_ns = self.points = None

    def for_observation(self, obs_time_s: float) -> torch.Tensor:
        """``(K, 3)`` float32 tensor for the observation stamped ``obs_time_s`` (seconds).

        Raises:
            RewardFailure: none received yet, or stale / from the future — the guided sampler then
                samples this chunk unguided and counts a fallback.
        """
        from embodied_steer.vls.guidance import RewardFailure

        if self.points is None or self.stamp_ns is None:
            raise RewardFailure("no keypoints received on 'keypoints'")
        dt = obs_time_s - self.stamp_ns / 1e9
        if dt > self.max_age_s:
            raise RewardFailure(f"keypoints are {dt:.3f} s older than the observation (> {self.max_age_s} s)")
        if dt < -self.max_future_s:
            raise RewardFailure(f"keypoints are {-dt:.3f} s newer than the observation")
        return torch.from_numpy(self.points.copy())


def guide_context(description: Mapping[str, Any], store: KeypointStore) -> Any:
    """A :class:`~embodied_steer.vls.configure.GuideContext` from an arm description and a keypoint store."""
    from embodied_steer.vls.configure import GuideContext

    return GuideContext(task=str(description["task"]), state_names=tuple(description["state_names"]),
                        spec_extra=dict(description["spec_extra"]), control_hz=float(description["control_hz"]),
                        keypoints=lambda obs: store.for_observation(float(obs.timestamp)),
                        variant=description.get("variant"))
