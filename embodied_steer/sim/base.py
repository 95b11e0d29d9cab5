"""The one observation format every simulator wrapper produces.

Every environment in :mod:`embodied_steer.sim` is a ``gymnasium.Env`` whose observation is a
``Dict`` space with these keys (absent keys are simply not in the space):

``"state"``      ``Box((D_state,), float32)`` robot proprioception; layout in ``env.state_names``.
``"env_state"``  ``Box((D_env,), float32)`` privileged object state (poses), for state-based policies.
``"pixels"``     ``Dict({camera: Box((H, W, 3), uint8)})`` RGB images, row 0 = top.

The language instruction is ``env.instruction`` and ``info["instruction"]``; success is
``info["is_success"]`` (bool) at every step. ``info["render_settings"]`` records the rendering
settings in force, so results always say how their images were made (tests use cheaper settings;
the evaluation writes them next to every success rate).

:func:`to_observation` turns such a dict into the toolkit's :class:`~embodied_steer.core.Observation`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from embodied_steer.core.types import ActionBounds, Observation


@dataclass(frozen=True)
class RenderSettings:
    """How camera images are rendered. Recorded with every evaluation result.

    Attributes:
        cameras: camera names to render (empty: no images, fastest).
        height, width: image size in pixels.
        shadow_size: MuJoCo shadow-map resolution (MuJoCo default 4096 dominates CPU render time).
        offscreen_samples: multisample anti-aliasing samples (MuJoCo ``vis.quality.offsamples``).
    """

    cameras: tuple[str, ...] = ()
    height: int = 128
    width: int = 128
    shadow_size: int = 4096
    offscreen_samples: int = 4

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cameras"] = list(self.cameras)
        return d


FAST_RENDER = dict(shadow_size=512, offscreen_samples=0)
"""Overrides for tests and quick runs: much faster on CPU, slightly different pictures."""


@dataclass
class EnvSpec:
    """What a runner needs to know about an environment besides its gymnasium spaces."""

    name: str
    max_episode_steps: int
    action_bounds: ActionBounds
    state_names: tuple[str, ...] = ()
    control_hz: float = 20.0
    extra: dict[str, Any] = field(default_factory=dict)


def to_observation(obs: Mapping[str, Any], instruction: str = "", timestamp: float = 0.0) -> Observation:
    """Convert a wrapper's observation dict into an :class:`Observation` (arrays are not copied)."""
    pixels = obs.get("pixels", {}) or {}
    state = obs.get("state")
    env_state = obs.get("env_state")
    return Observation(
        images={str(k): np.asarray(v) for k, v in pixels.items()},
        state=None if state is None else np.asarray(state, dtype=np.float32),
        instruction=instruction,
        env_state=None if env_state is None else np.asarray(env_state, dtype=np.float32),
        timestamp=timestamp,
    )


def upright_images(raw: Mapping[str, Any], cameras: tuple[str, ...]) -> dict[str, np.ndarray]:
    """robosuite/LIBERO ``<camera>_image`` observables (rendered bottom-up, OpenGL) with row 0 on top."""
    return {c: np.ascontiguousarray(raw[f"{c}_image"][::-1]) for c in cameras}


def step_info(success: bool, instruction: str, render: RenderSettings, **extra: Any) -> dict[str, Any]:
    """The ``info`` dict every wrapper returns from ``reset`` and ``step``."""
    return {"is_success": bool(success), "instruction": instruction, "render_settings": render.as_dict(), **extra}
