"""Conversion between the toolkit's :class:`Observation` and LeRobot's observation frames.

LeRobot policies take a dict keyed by feature names (``observation.state``,
``observation.environment_state``, ``observation.images.<name>``, ``task``) which their
pre-processor pipeline batches, moves and normalises. This module builds that dict from an
:class:`Observation`, checking it against the policy's declared input features so that a missing
camera or a wrong state size is reported by name instead of failing deep inside the network.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from embodied_steer.core.errors import ObservationError
from embodied_steer.core.types import Observation

OBS_STATE = "observation.state"
OBS_ENV_STATE = "observation.environment_state"
OBS_IMAGES_PREFIX = "observation.images."


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 → ``(3, H, W)`` float32 in [0, 1] (LeRobot's image convention)."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)


def observation_to_frame(
    obs: Observation,
    input_features: Mapping[str, Any],
    camera_map: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build one unbatched LeRobot frame for ``obs``.

    Args:
        obs: the observation.
        input_features: the policy config's ``input_features`` (name → feature with ``.shape``).
        camera_map: policy image key (``"observation.images.top"``) → observation camera name
            (``"agentview"``). Image keys not in the map use the suffix after
            ``observation.images.`` as the camera name.

    Returns:
        Feature name → tensor (state ``(D,)``, images ``(3, H, W)``), plus ``"task"`` (str).

    Raises:
        ObservationError: a feature the policy needs is missing or has the wrong size.
    """
    camera_map = dict(camera_map or {})
    frame: dict[str, Any] = {"task": obs.instruction}
    for key, feature in input_features.items():
        shape = tuple(getattr(feature, "shape", ()) or ())
        if key == OBS_STATE:
            frame[key] = _vector(obs.state, "state", shape)
        elif key == OBS_ENV_STATE:
            frame[key] = _vector(obs.env_state, "env_state", shape)
        elif key.startswith(OBS_IMAGES_PREFIX) or key == "observation.image":
            camera = camera_map.get(key, key.removeprefix(OBS_IMAGES_PREFIX))
            if camera not in obs.images:
                raise ObservationError(
                    f"policy input '{key}' needs camera '{camera}', but the observation has "
                    f"{sorted(obs.images) or 'no images'} (map cameras with camera_map)"
                )
            img = obs.images[camera]
            tensor = image_to_tensor(img)
            if shape and tuple(tensor.shape) != shape:
                raise ObservationError(
                    f"camera '{camera}' gives images of shape {tuple(img.shape)} (HWC), policy input "
                    f"'{key}' expects {shape} (CHW)"
                )
            frame[key] = tensor
    return frame


def _vector(value: np.ndarray | None, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if value is None:
        raise ObservationError(f"the policy needs observation.{name}, but the observation has no {name}")
    if shape and tuple(value.shape) != shape:
        raise ObservationError(f"observation {name} has shape {tuple(value.shape)}, the policy expects {shape}")
    return torch.as_tensor(value, dtype=torch.float32)
