"""Keypoints for reward programs from the simulator's ground-truth object poses.

A reward program receives ``keypoints (K, 3)`` (world frame, metres), numbered as in the picture a
VLM is shown. In simulation they come from privileged state: positions stored in the observation's
``env_state`` (robosuite's ``object-state`` observable starts each object's block with its position)
and fixed points of the scene (a PickPlace target bin). A perception module can replace this later
by any callable ``Observation -> (K, 3)`` tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from embodied_steer.core.errors import ConfigError, ObservationError
from embodied_steer.core.types import Observation


@dataclass(frozen=True)
class EnvStateKeypoints:
    """Keypoints read from ``obs.env_state`` slices, followed by fixed scene points.

    Attributes:
        names: one name per keypoint (for prompts and error messages), in order.
        state_offsets: start index of each moving keypoint's ``(x, y, z)`` in ``env_state``.
        fixed: world positions of the fixed keypoints, after the moving ones.
    """

    names: tuple[str, ...]
    state_offsets: tuple[int, ...]
    fixed: tuple[tuple[float, float, float], ...] = ()

    def __post_init__(self) -> None:
        if len(self.names) != len(self.state_offsets) + len(self.fixed):
            raise ConfigError(f"{len(self.names)} keypoint names for {len(self.state_offsets)} moving "
                              f"and {len(self.fixed)} fixed keypoints")

    def __call__(self, obs: Observation) -> torch.Tensor:
        """``(K, 3)`` float32 keypoints of ``obs``."""
        points: list[Sequence[float]] = []
        if self.state_offsets:
            if obs.env_state is None:
                raise ObservationError("keypoints need observation.env_state (privileged object poses)")
            for name, start in zip(self.names, self.state_offsets):
                if start + 3 > obs.env_state.shape[0]:
                    raise ObservationError(f"keypoint '{name}' reads env_state[{start}:{start + 3}], "
                                           f"but env_state has {obs.env_state.shape[0]} values")
                points.append(obs.env_state[start : start + 3])
        points.extend(self.fixed)
        return torch.as_tensor(np.asarray(points, dtype=np.float32))


#: robosuite task → (names, env_state offsets, fixed points from ``spec_info.extra``).
_TASKS: dict[str, tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]] = {
    "Lift": (("cube",), (0,), ()),
    "PickPlaceCan": (("can", "bin"), (0,), ("goal_pos",)),
}


def keypoints_for(spec_extra: Mapping[str, Any]) -> EnvStateKeypoints:
    """Keypoint source for a robosuite task from its ``spec_info.extra`` (``task``, ``goal_pos``)."""
    task = spec_extra.get("task")
    if task not in _TASKS:
        raise ConfigError(f"no ground-truth keypoints defined for task '{task}'; known: {sorted(_TASKS)}")
    names, offsets, fixed_keys = _TASKS[task]
    fixed = []
    for key in fixed_keys:
        if key not in spec_extra:
            raise ConfigError(f"task '{task}' needs spec_info.extra['{key}'] for its keypoints")
        x, y, z = (float(v) for v in spec_extra[key])
        fixed.append((x, y, z))
    return EnvStateKeypoints(names, offsets, tuple(fixed))
