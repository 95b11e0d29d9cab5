"""What the DSRL agent sees: low-dimensional observation features over the policy's history.

The agent's observation is the concatenation, over the last ``history`` observations (oldest
first, padded with the oldest like the policies' own history), of the robot ``state`` and — when
``use_env_state`` — the privileged object state ``env_state``. Images are never given to the agent
(they still reach the frozen base policy). Object/gripper state matters: the noise that helps
depends on where the cube is.

:meth:`ObsFeatures.to_observations` inverts the map for policies that read only state/env_state, so
that DSRL-NA can re-run the base policy on observations drawn from its replay buffer.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from embodied_steer.core.errors import ConfigError
from embodied_steer.core.types import Observation


@dataclass(frozen=True)
class ObsFeatures:
    """Layout of the agent observation vector ``(history · (state_dim + env_state_dim),)``."""

    state_dim: int
    env_state_dim: int
    history: int = 1

    @property
    def frame_dim(self) -> int:
        return self.state_dim + self.env_state_dim

    @property
    def dim(self) -> int:
        return self.history * self.frame_dim

    @classmethod
    def for_env(cls, observation_space, history: int, use_env_state: bool = True) -> "ObsFeatures":
        spaces = observation_space.spaces
        state = spaces.get("state")
        env_state = spaces.get("env_state") if use_env_state else None
        sd = int(state.shape[0]) if state is not None else 0
        ed = int(env_state.shape[0]) if env_state is not None else 0
        if sd + ed == 0:
            raise ConfigError("DSRL needs an environment with a 'state' or 'env_state' observation for its agent")
        return cls(sd, ed, max(1, int(history)))

    def frame(self, obs: Observation) -> np.ndarray:
        """One observation → ``(frame_dim,)`` float32."""
        parts = []
        if self.state_dim:
            parts.append(np.asarray(obs.state, np.float32).reshape(-1))
        if self.env_state_dim:
            parts.append(np.asarray(obs.env_state, np.float32).reshape(-1))
        vec = np.concatenate(parts)
        if vec.shape[0] != self.frame_dim:
            raise ConfigError(f"observation gives {vec.shape[0]} feature values, DSRL agent expects {self.frame_dim}")
        return vec

    def stack(self, frames: "collections.deque[np.ndarray] | list[np.ndarray]") -> np.ndarray:
        items = list(frames)[-self.history :]
        items = [items[0]] * (self.history - len(items)) + items
        return np.concatenate(items).astype(np.float32)

    def from_history(self, history: list[Observation]) -> np.ndarray:
        return self.stack([self.frame(o) for o in history])

    def to_observations(self, vec: np.ndarray, instruction: str = "") -> list[Observation]:
        """``(dim,)`` agent observation → the ``history`` observations it was made of (no images)."""
        frames = np.asarray(vec, np.float32).reshape(self.history, self.frame_dim)
        return [
            Observation(state=f[: self.state_dim].copy() if self.state_dim else None,
                        env_state=f[self.state_dim :].copy() if self.env_state_dim else None, instruction=instruction)
            for f in frames
        ]

    def to_dict(self) -> dict[str, int]:
        return {"state_dim": self.state_dim, "env_state_dim": self.env_state_dim, "history": self.history}
