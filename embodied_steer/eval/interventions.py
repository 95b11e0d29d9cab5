"""Intervention settings of ``embodied-steer eval`` turned into the runner's act function.

Capability packages add their own settings here as they arrive; each one goes through one of the
policy's declared intervention points, and asking for one the policy lacks is an error up front.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from embodied_steer.core.policy import InterventionPoint, SteerablePolicy
from embodied_steer.core.types import ActionChunk, Observation
from embodied_steer.eval.runner import ActFn, default_act


def make_act_fn(
    settings: Mapping[str, Any],
    policy: SteerablePolicy,
    *,
    guide: Mapping[str, Any] | None = None,
    env: Any = None,
) -> ActFn:
    """Build the act function for the ``intervention`` config block (and the ``guide`` group).

    ``guide`` (the ``guide=<name>`` config group, e.g. ``guide=vls``): reward-guided sampling
    (:mod:`embodied_steer.vls.configure`) through the ``DENOISING_STEP`` point, which is checked up
    front; it needs ``env`` (keypoints and the controller's action scale come from it). The returned
    act function reports per-episode guidance facts through ``episode_info()``.

    ``noise_scale`` (float, default 1.0): multiply the sampler's standard-normal initial noise by
    this factor (< 1 concentrates samples on the mode, 0 is the deterministic mean path of DDIM /
    the flow ODE). Uses the ``NOISE`` intervention point, seeded by ``noise_seed``.
    """
    known = {"noise_scale", "noise_seed"}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"unknown intervention settings {sorted(unknown)}; known: {sorted(known)}")
    scale = float(settings.get("noise_scale", 1.0))
    if guide is not None:
        policy.require(InterventionPoint.DENOISING_STEP, "reward-guided sampling (guide=...)")
        if scale != 1.0:
            raise ValueError("intervention.noise_scale and guide=... cannot be combined (the guided sampler draws its own noise)")
        if env is None:
            raise ValueError("reward-guided sampling (guide=...) needs the environment")
        from embodied_steer.vls.configure import guide_from_settings

        return guide_from_settings(guide, policy, env)
    if scale == 1.0:
        return default_act
    if scale < 0:
        raise ValueError(f"intervention.noise_scale must be >= 0, got {scale}")
    policy.require(InterventionPoint.NOISE, "intervention.noise_scale")
    generator = torch.Generator().manual_seed(int(settings.get("noise_seed", 0)))
    shape = policy.noise_spec.shape

    def act(p: SteerablePolicy, obs: Observation) -> ActionChunk:
        return p.act(obs, noise=scale * torch.randn((1, *shape), generator=generator))

    return act
