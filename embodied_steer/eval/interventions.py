"""Intervention settings of ``embodied-steer eval`` turned into the runner's act function.

Capability packages add their own settings here as they arrive; each one goes through one of the
policy's declared intervention points, and asking for one the policy lacks is an error up front.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from embodied_steer.core.policy import InterventionPoint, SteerablePolicy
from embodied_steer.core.types import ActionChunk, Observation
from embodied_steer.eval.runner import ActFn, default_act


def make_act_fn(settings: Mapping[str, Any], policy: SteerablePolicy) -> ActFn:
    """Build the act function for the ``intervention`` config block.

    ``noise_scale`` (float, default 1.0): multiply the sampler's standard-normal initial noise by
    this factor (< 1 concentrates samples on the mode, 0 is the deterministic mean path of DDIM /
    the flow ODE). Uses the ``NOISE`` intervention point, seeded by ``noise_seed``.
    """
    known = {"noise_scale", "noise_seed"}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"unknown intervention settings {sorted(unknown)}; known: {sorted(known)}")
    scale = float(settings.get("noise_scale", 1.0))
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


def steered_act(handle: Any, act: ActFn = default_act, log_path: str | Path | None = None) -> ActFn:
    """Wrap ``act`` so that every policy call first feeds the observation to the steering handle's
    coefficient sources (:meth:`SteeringHandle.begin_call`: one value per call, fixed for all hooks
    of that call; a new episode is recognised by its timestamp restarting).

    With ``log_path``, one JSON line per call is appended: observation time, each intervention's
    coefficient and, for PID sources, the measurement it saw.
    """
    sink = open(log_path, "a") if log_path is not None else None  # noqa: SIM115 - lives as long as the act fn

    def act_steered(policy: SteerablePolicy, obs: Observation) -> ActionChunk:
        values = handle.begin_call(obs)
        if sink is not None:
            measured = {
                label: c.last_measurement
                for label, c in handle.sources().items() if getattr(c, "last_measurement", None) is not None
            }
            sink.write(json.dumps({"time": round(float(obs.timestamp), 4), "coefficients": values,
                                   "measurements": measured}) + "\n")
            sink.flush()
        return act(policy, obs)

    act_steered.close = sink.close if sink is not None else (lambda: None)  # type: ignore[attr-defined]
    return act_steered
