"""Intervention settings of ``embodied-steer eval`` turned into the runner's act function.

Capability packages add their own settings here as they arrive; each one goes through one of the
policy's declared intervention points, and asking for one the policy lacks is an error up front.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from embodied_steer.core.policy import InterventionPoint, SteerablePolicy
from embodied_steer.core.types import ActionChunk, Observation
from embodied_steer.eval.runner import ActFn, default_act, reset_act


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
    the flow ODE). Uses the ``NOISE`` intervention point; the noise of an episode is seeded by
    ``(noise_seed, episode seed)`` (see :class:`ScaledNoiseAct`).

    ``dsrl`` (path of a DSRL adapter folder, default none): a trained noise actor picks the initial
    noise (:class:`~embodied_steer.dsrl.policy.NoiseActorAct`) — the same policy as
    ``policy=<adapter config>``, switched on over an already loaded base policy.
    """
    known = {"noise_scale", "noise_seed", "dsrl"}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"unknown intervention settings {sorted(unknown)}; known: {sorted(known)}")
    scale = float(settings.get("noise_scale", 1.0))
    adapter = settings.get("dsrl")
    if adapter is not None:
        if not isinstance(adapter, str) or not adapter.strip():
            raise ValueError(f"intervention.dsrl must be the path of a DSRL adapter folder, got {adapter!r}")
        if scale != 1.0 or guide is not None:
            raise ValueError("intervention.dsrl chooses the sampler's noise itself: it cannot be combined with "
                             "intervention.noise_scale or guide=...")
        from embodied_steer.dsrl.policy import NoiseActorAct, load_noise_adapter

        path = Path(adapter).expanduser()
        if not path.exists() and not path.is_absolute():  # a shipped adapter, e.g. checkpoints/lift_dsrl
            from embodied_steer.catalog import find_asset

            path = Path(find_asset(adapter))
        return NoiseActorAct(load_noise_adapter(path), policy)
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
    return ScaledNoiseAct(scale, int(settings.get("noise_seed", 0)), policy.noise_spec.shape)


def steered_act(handle: Any, act: ActFn = default_act, log_path: str | Path | None = None) -> ActFn:
    """Wrap ``act`` so that every policy call first feeds the observation to the steering handle's
    coefficient sources (:meth:`SteeringHandle.begin_call`: one value per call, fixed for all hooks
    of that call; a new episode is recognised by its timestamp restarting).

    With ``log_path``, one JSON line per call is appended: observation time, each intervention's
    coefficient, for PID sources the measurement it saw, and the interventions switched off for
    that call (``inactive``: a closed phase gate).
    """
    sink = open(log_path, "a") if log_path is not None else None  # noqa: SIM115 - lives as long as the act fn

    def act_steered(policy: SteerablePolicy, obs: Observation) -> ActionChunk:
        values = handle.begin_call(obs)
        if sink is not None:
            measured = {
                label: c.last_measurement
                for label, c in handle.sources().items() if getattr(c, "last_measurement", None) is not None
            }
            off = [label for label, c in handle.sources().items() if not c.active]  # closed phase gates
            sink.write(json.dumps({"time": round(float(obs.timestamp), 4), "coefficients": values,
                                   "measurements": measured, "inactive": off}) + "\n")
            sink.flush()
        return act(policy, obs)

    act_steered.close = sink.close if sink is not None else (lambda: None)  # type: ignore[attr-defined]
    act_steered.reset = lambda seed: reset_act(act, seed)  # type: ignore[attr-defined]
    if callable(getattr(act, "episode_info", None)):
        act_steered.episode_info = act.episode_info  # type: ignore[attr-defined]
    return act_steered


class ScaledNoiseAct:
    """Act with ``scale`` × standard-normal initial noise drawn from the act function's own generator.

    The runner calls :meth:`reset` with each episode's seed, which re-seeds the generator from
    ``(noise_seed, episode seed)``: an episode's noise then depends on nothing run before it, so a
    resumed or distributed evaluation gives the same episodes as one uninterrupted run.
    """

    def __init__(self, scale: float, noise_seed: int, shape: tuple[int, ...]) -> None:
        self.scale, self.noise_seed, self.shape = scale, noise_seed, tuple(shape)
        self.generator = torch.Generator().manual_seed(noise_seed)

    def reset(self, seed: int) -> None:
        mixed = np.random.SeedSequence([self.noise_seed, int(seed)]).generate_state(1, np.uint64)[0]
        self.generator.manual_seed(int(mixed))

    def __call__(self, p: SteerablePolicy, obs: Observation) -> ActionChunk:
        return p.act(obs, noise=self.scale * torch.randn((1, *self.shape), generator=self.generator))
