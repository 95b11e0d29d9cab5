"""Typed containers that flow through the toolkit: observations in, action chunks out.

They are deliberately independent of where data comes from (a simulator, a LeRobot dataset, a
ROS 2 topic) and of the policy that consumes it. All arrays are NumPy; adapters convert to torch.

Conventions
-----------
* Images are ``uint8`` RGB arrays of shape ``(H, W, 3)``, keyed by camera name (``"agentview"``,
  ``"wrist"``, ...). Row 0 is the top of the picture (the usual image convention, not OpenGL's).
* ``state`` is the robot's proprioception as a flat ``float32`` vector ``(D_state,)``; its layout is
  documented by the environment that produced it (``state_names``).
* ``env_state`` is privileged simulator state (object poses) as ``(D_env,)``; ``None`` on a robot.
* Actions are ``float32`` chunks ``(T, D_action)`` in the environment's own units (for robosuite's
  OSC_POSE controller: normalised delta position / delta axis-angle in [-1, 1] and a gripper command
  in [-1, 1], -1 = open).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from embodied_steer.core.errors import ActionError, ObservationError


@dataclass(frozen=True)
class Observation:
    """One time step of what a policy may see.

    Attributes:
        images: camera name -> ``uint8`` array ``(H, W, 3)``.
        state: proprioceptive state ``(D_state,)`` float32, or ``None``.
        instruction: natural-language task instruction ("" when the task has none).
        env_state: privileged object state ``(D_env,)`` float32 (simulation only), or ``None``.
        timestamp: seconds since the start of the episode.
    """

    images: Mapping[str, np.ndarray] = field(default_factory=dict)
    state: np.ndarray | None = None
    instruction: str = ""
    env_state: np.ndarray | None = None
    timestamp: float = 0.0

    def validate(self) -> "Observation":
        """Check shapes, dtypes and finiteness; raise :class:`ObservationError` naming the field."""
        for name, img in self.images.items():
            if not isinstance(img, np.ndarray):
                raise ObservationError(f"image '{name}' must be a numpy array, got {type(img).__name__}")
            if img.ndim != 3 or img.shape[-1] != 3:
                raise ObservationError(f"image '{name}' must have shape (H, W, 3), got {img.shape}")
            if img.dtype != np.uint8:
                raise ObservationError(f"image '{name}' must be uint8 RGB, got dtype {img.dtype}")
        for key in ("state", "env_state"):
            value = getattr(self, key)
            if value is None:
                continue
            if not isinstance(value, np.ndarray) or value.ndim != 1:
                shape = getattr(value, "shape", type(value).__name__)
                raise ObservationError(f"{key} must be a 1-D array, got {shape}")
            if not np.all(np.isfinite(value)):
                bad = np.flatnonzero(~np.isfinite(value)).tolist()
                raise ObservationError(f"{key} contains NaN or inf at indices {bad}")
        if not isinstance(self.instruction, str):
            raise ObservationError(f"instruction must be a str, got {type(self.instruction).__name__}")
        return self


@dataclass(frozen=True)
class ActionBounds:
    """Per-dimension box bounds of an action space: ``low`` and ``high``, each ``(D_action,)``."""

    low: np.ndarray
    high: np.ndarray

    def __post_init__(self) -> None:
        low = np.asarray(self.low, dtype=np.float32)
        high = np.asarray(self.high, dtype=np.float32)
        if low.shape != high.shape or low.ndim != 1:
            raise ValueError(f"bounds low/high must be 1-D and equal shape, got {low.shape} and {high.shape}")
        if np.any(low > high):
            raise ValueError("bounds: low > high in dimensions " + str(np.flatnonzero(low > high).tolist()))
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def dim(self) -> int:
        return int(self.low.shape[0])

    def clip(self, actions: np.ndarray) -> np.ndarray:
        """Clip ``(..., D_action)`` actions into the box."""
        return np.clip(actions, self.low, self.high)

    @classmethod
    def symmetric(cls, dim: int, limit: float = 1.0) -> "ActionBounds":
        return cls(low=np.full(dim, -limit, np.float32), high=np.full(dim, limit, np.float32))


@dataclass(frozen=True)
class ActionChunk:
    """A sequence of actions a policy proposes from one observation.

    Attributes:
        actions: ``(T, D_action)`` float32 in environment units; row 0 is executed first.
        bounds: the action space's bounds, when known. Actions are *not* silently clipped here:
            clipping is the caller's (environment's or safety layer's) decision.
        info: free-form diagnostics from the policy (e.g. inference time in seconds).
    """

    actions: np.ndarray
    bounds: ActionBounds | None = None
    info: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        actions = np.asarray(self.actions, dtype=np.float32)
        if actions.ndim != 2:
            raise ActionError(f"action chunk must have shape (T, D_action), got {actions.shape}")
        if self.bounds is not None and actions.shape[1] != self.bounds.dim:
            raise ActionError(
                f"action chunk has {actions.shape[1]} dimensions but its bounds have {self.bounds.dim}"
            )
        if not np.all(np.isfinite(actions)):
            rows, cols = np.nonzero(~np.isfinite(actions))
            raise ActionError(
                f"action chunk contains NaN or inf (first at step {int(rows[0])}, dim {int(cols[0])})"
            )
        object.__setattr__(self, "actions", actions)

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def dim(self) -> int:
        return int(self.actions.shape[1])

    def __len__(self) -> int:
        return self.horizon


@dataclass(frozen=True)
class ActionSamples:
    """``N`` action chunks drawn for the same observation: ``actions`` is ``(N, T, D_action)``."""

    actions: np.ndarray
    bounds: ActionBounds | None = None

    def __post_init__(self) -> None:
        actions = np.asarray(self.actions, dtype=np.float32)
        if actions.ndim != 3:
            raise ActionError(f"action samples must have shape (N, T, D_action), got {actions.shape}")
        object.__setattr__(self, "actions", actions)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def chunk(self, i: int) -> ActionChunk:
        return ActionChunk(self.actions[i], self.bounds)
