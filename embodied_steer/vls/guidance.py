"""Reward-guided sampling (VLS) through the ``DENOISING_STEP`` intervention point.

A :class:`GuidedSampler` is an act function (``(policy, obs) -> ActionChunk``) for the evaluation
runner. For every chunk it runs the policy's sampler on ``K`` particles and, at each denoising step:

1. evaluates the reward on the predicted clean sample ``x̂0`` (or on the noisy sample ``x_t``, a
   setting), after mapping the normalised chunk to environment units (``DenoiseStep.to_actions``)
   and to an end-effector trajectory (:mod:`embodied_steer.vls.trajectory`);
2. takes the reward's gradient ``g`` with respect to that sample (optionally restricted to chosen
   action dimensions and unit-normalised per particle), adds a repulsion between particles during
   the early steps (:func:`~embodied_steer.vls.particles.repulsion`), and bends the update:

   * diffusion (ε-prediction): ``ε̂ = ε − λ·√(1−ᾱ_t)·g``. With DDIM and ``clip_sample=True``
     (LeRobot's default) diffusers clips ``x̂0`` but keeps the raw ``ε`` for the direction term, so a
     large guided ε drives the sample the *wrong* way once ``x̂0`` saturates (measured in this
     project). The guided ``ε`` is therefore re-derived from the clipped, guided ``x̂0``
     (``clip_aware``): ``ε̂ = ε − √ᾱ/√(1−ᾱ)·(clip(x̂0 + λ(1−ᾱ)/√ᾱ·g) − clip(x̂0))``, which equals the
     formula above while nothing clips and always moves the sample along ``g``;
   * flow matching: LeRobot integrates from noise at ``t = 1`` to data at ``t = 0`` (``x ← x + dt·v``
     with ``dt < 0``), so ascending the reward is ``v̂ = v − λ·g`` (``v̂ = v + λ·g`` in the
     convention where time runs from noise at 0 to data at 1);
3. with a Feynman–Kac potential, weights the particles and resamples them when the effective
   sample size drops (:class:`~embodied_steer.vls.particles.FeynmanKac`).

At the end the particle with the highest reward is executed. λ follows reward progress per chunk
and multi-stage programs switch stages (:mod:`embodied_steer.vls.schedule`).

A reward that raises, returns NaN/inf or the wrong shape (or has a non-finite gradient) makes the
sampler fall back to plain unguided sampling for that chunk; the failure is logged, counted and
reported in :meth:`GuidedSampler.episode_info` (which the runner stores with each episode).

Reward: any callable ``reward(stage, keypoints (P, 3), trajectory (B, T, 3)) -> (B,)``, e.g. a
compiled ``RewardProgram`` (stages are numbered from 0 here; ``num_stages()`` is used when present).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import torch

from embodied_steer.core.errors import ConfigError, SteerError
from embodied_steer.core.policy import DenoiseStep, InterventionPoint, SteerablePolicy, StepEdit
from embodied_steer.core.types import ActionChunk, ActionSamples, Observation
from embodied_steer.vls.particles import POTENTIALS, FeynmanKac, repulsion
from embodied_steer.vls.schedule import GuidanceSchedule, StageTracker
from embodied_steer.vls.trajectory import TrajectoryMap

log = logging.getLogger(__name__)

Reward = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
KeypointFn = Callable[[Observation], torch.Tensor]


class RewardFailure(SteerError, RuntimeError):
    """The reward raised, returned a wrong shape or non-finite values: the chunk is sampled unguided."""


@dataclass(frozen=True)
class GuidanceConfig:
    """Settings of a :class:`GuidedSampler` (the ``guide`` config group maps onto these).

    Attributes:
        scale: λ, the guidance strength (0 disables the gradient term).
        num_particles: K, particles sampled side by side per chunk.
        normalize: unit-normalise the reward gradient per particle (λ is then a step length).
        dims: normalised-action dimensions the guidance may change (``None``: all).
        evaluate_on: ``"clean"`` — reward of the predicted clean sample x̂0 — or ``"noisy"`` — of x_t.
        diversity: weight of the (unit-normalised) repulsion between particles; 0 = off.
        diversity_until: fraction of the denoising steps (from the first) that get the repulsion.
        potential: Feynman–Kac potential (one of ``instantaneous``, ``max``, ``additive``,
            ``difference``) or ``None`` for no resampling.
        fk_temperature: τ, multiplies rewards in the potentials.
        ess_threshold: resample when the effective sample size < ``ess_threshold · K``.
        select: ``"best"`` — execute the particle with the highest final reward — or ``"first"``.
        schedule: guidance strength as a function of stage progress.
        stage_thresholds: reward at which each stage is done (one value: the same for all).
        stage_dwell: consecutive chunks a threshold must hold before the stage switches.
        clip_aware: re-derive ε from the clipped guided x̂0 for samplers that clip x̂0.
        seed: seed of the resampling generator (re-seeded per episode with the episode seed).
    """

    scale: float = 1.0
    num_particles: int = 8
    normalize: bool = True
    dims: tuple[int, ...] | None = None
    evaluate_on: Literal["clean", "noisy"] = "clean"
    diversity: float = 0.0
    diversity_until: float = 0.5
    potential: str | None = None
    fk_temperature: float = 10.0
    ess_threshold: float = 0.5
    select: Literal["best", "first"] = "best"
    schedule: GuidanceSchedule = field(default_factory=GuidanceSchedule)
    stage_thresholds: tuple[float, ...] = (0.0,)
    stage_dwell: int = 1
    clip_aware: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scale < 0 or not math.isfinite(self.scale):
            raise ConfigError(f"guide.scale (λ) must be a finite number >= 0, got {self.scale}")
        if self.num_particles < 1:
            raise ConfigError(f"guide.num_particles (K) must be >= 1, got {self.num_particles}")
        if self.evaluate_on not in ("clean", "noisy"):
            raise ConfigError(f"guide.evaluate_on must be 'clean' or 'noisy', got '{self.evaluate_on}'")
        if self.diversity < 0:
            raise ConfigError(f"guide.diversity must be >= 0, got {self.diversity}")
        if not 0.0 <= self.diversity_until <= 1.0:
            raise ConfigError(f"guide.diversity_until must be in [0, 1], got {self.diversity_until}")
        if self.potential is not None and self.potential not in POTENTIALS:
            raise ConfigError(f"guide.potential must be one of {list(POTENTIALS)} or null, got '{self.potential}'")
        if self.select not in ("best", "first"):
            raise ConfigError(f"guide.select must be 'best' or 'first', got '{self.select}'")
        if self.dims is not None and (not self.dims or min(self.dims) < 0):
            raise ConfigError(f"guide.dims must be non-negative action indices, got {self.dims}")


@dataclass(frozen=True)
class SamplerLayout:
    """Where the executed actions sit in the sampler's chunk, and whether the sampler clips x̂0.

    Attributes:
        start: index of the current step's action in the sampled horizon (a diffusion policy with
            ``n_obs_steps`` history samples ``n_obs_steps - 1`` past actions first).
        length: actions executed per chunk (the trajectory the reward sees).
        clip: the sampler clips x̂0 to ``[-clip, clip]`` (``None``: no clipping).
    """

    start: int
    length: int
    clip: float | None

    @classmethod
    def of(cls, policy: SteerablePolicy) -> "SamplerLayout":
        length = int(policy.info.execute_steps)
        inner = getattr(policy, "policy", None)
        cfg = getattr(inner, "config", None)
        if getattr(cfg, "type", None) == "diffusion":
            clip = float(cfg.clip_sample_range) if bool(cfg.clip_sample) else None
            return cls(start=int(cfg.n_obs_steps) - 1, length=length, clip=clip)
        return cls(start=int(policy.info.extra.get("action_start", 0)), length=length, clip=None)


@dataclass
class _Chunk:
    """Per-chunk context shared by the denoising-step calls."""

    stage: int
    keypoints: torch.Tensor
    ee: torch.Tensor
    strength: float
    layout: SamplerLayout
    fk: FeynmanKac | None
    rewards: list[float] = field(default_factory=list)


def _unit(g: torch.Tensor) -> torch.Tensor:
    norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    return g / norm.view(-1, *([1] * (g.ndim - 1)))


class GuidedSampler:
    """Act function that steers a policy's sampler toward a reward (see the module docstring).

    Args:
        reward: ``reward(stage, keypoints (P, 3), trajectory (B, T, 3)) -> (B,)``, differentiable.
        keypoints: ``Observation -> (P, 3)`` keypoints (e.g. :func:`~embodied_steer.vls.keypoints.keypoints_for`).
        trajectory_map: env-unit actions ``(B, T, D)`` + current end-effector position ``(3,)`` →
            trajectory ``(B, T, 3)``.
        ee_index: indices of the end-effector position in ``obs.state``.
        config: :class:`GuidanceConfig`.
        num_stages: stages of the reward (default: ``reward.num_stages()`` or 1).
    """

    def __init__(
        self,
        reward: Reward,
        keypoints: KeypointFn,
        trajectory_map: TrajectoryMap,
        ee_index: Sequence[int],
        config: GuidanceConfig | None = None,
        *,
        num_stages: int | None = None,
    ) -> None:
        self.reward = reward
        self.keypoints = keypoints
        self.trajectory_map = trajectory_map
        self.ee_index = list(ee_index)
        self.config = config or GuidanceConfig()
        if num_stages is None:
            counter = getattr(reward, "num_stages", None)
            num_stages = int(counter()) if callable(counter) else 1
        self.tracker = StageTracker(num_stages, self.config.stage_thresholds, self.config.stage_dwell)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.fallbacks = 0
        """Chunks sampled unguided because the reward failed (whole run)."""
        self._episode: dict[str, Any] = {}
        self._layouts: dict[int, SamplerLayout] = {}
        self.reset()

    # ------------------------------------------------------------------ episode state
    def reset(self, seed: int | None = None) -> None:
        """Start a new episode: stage 0, fresh counters; ``seed`` re-seeds the resampling draws."""
        self.tracker.reset()
        if seed is not None:
            self.generator.manual_seed(int(seed) + self.config.seed)
        self._episode = {"chunks": 0, "fallbacks": 0, "fallback_errors": [], "resamples": 0,
                         "stage_switches": [], "final_stage": 0}

    def attach(self, policy: SteerablePolicy) -> "GuidedSampler":
        """Check the policy has ``DENOISING_STEP`` and make ``policy.reset()`` reset this sampler too."""
        policy.require(InterventionPoint.DENOISING_STEP, "reward-guided sampling (guide=...)")
        if getattr(policy.reset, "_guided_sampler", None) is self:
            return self
        original = policy.reset

        def reset(seed: int | None = None) -> None:
            reset._unguided(seed)  # type: ignore[attr-defined]  # (detach of an inner sampler rewires it)
            self.reset(seed)

        reset._guided_sampler = self  # type: ignore[attr-defined]
        reset._unguided = original  # type: ignore[attr-defined]
        policy.reset = reset  # type: ignore[method-assign]
        return self

    def detach(self, policy: SteerablePolicy) -> None:
        """Undo :meth:`attach`: ``policy.reset()`` no longer resets this sampler (switching guidance off
        at run time). Samplers attached after this one stay attached."""
        chain, reset = [], policy.reset
        while getattr(reset, "_guided_sampler", None) is not None:
            if reset._guided_sampler is self:  # type: ignore[attr-defined]
                below = reset._unguided  # type: ignore[attr-defined]
                if not chain:
                    policy.reset = below  # type: ignore[method-assign]
                else:
                    chain[-1]._unguided = below
                return
            chain.append(reset)
            reset = reset._unguided  # type: ignore[attr-defined]

    def episode_info(self) -> dict[str, Any]:
        """What happened in the current episode: chunks, fallbacks (+ errors), resamplings, stages."""
        info = dict(self._episode)
        info["stage_switches"] = list(self.tracker.switches)
        info["final_stage"] = self.tracker.stage
        return info

    # ------------------------------------------------------------------ acting
    def __call__(self, policy: SteerablePolicy, obs: Observation) -> ActionChunk:
        return self.act(policy, obs)

    def act(self, policy: SteerablePolicy, obs: Observation) -> ActionChunk:
        """Observe ``obs`` and return the guided chunk ``(T, D_action)`` (env units)."""
        policy.require(InterventionPoint.DENOISING_STEP, "reward-guided sampling")
        policy.observe(obs)
        self._episode["chunks"] += 1
        try:
            samples, index, extra = self._guided(policy, obs)
        except RewardFailure as exc:
            self._fallback(policy, exc)
            samples, index, extra = policy.generate(1), 0, {"guided": False, "fallback": str(exc)}
        info = {"particle": index, "num_particles": len(samples), **extra}
        return ActionChunk(samples.actions[index], samples.bounds, info)

    def _fallback(self, policy: SteerablePolicy, exc: RewardFailure) -> None:
        self.fallbacks += 1
        self._episode["fallbacks"] += 1
        errors = self._episode["fallback_errors"]
        if len(errors) < 5:
            errors.append(str(exc))
        log.warning("reward failed, chunk sampled unguided (%d this episode): %s", self._episode["fallbacks"], exc)

    def _layout(self, policy: SteerablePolicy) -> SamplerLayout:
        key = id(policy)
        if key not in self._layouts:
            self._layouts[key] = SamplerLayout.of(policy)
        return self._layouts[key]

    def _guided(self, policy: SteerablePolicy, obs: Observation) -> tuple[ActionSamples, int, dict[str, Any]]:
        cfg = self.config
        if obs.state is None:
            raise ConfigError("reward-guided sampling needs observation.state (the end-effector position)")
        keypoints = torch.as_tensor(self.keypoints(obs), dtype=torch.float32)
        ee = torch.as_tensor(obs.state[self.ee_index], dtype=torch.float32)
        progress = self.tracker.update(lambda s: float(self._evaluate(s, keypoints, ee.view(1, 1, 3), 1)[0]))
        strength = cfg.scale * cfg.schedule.factor(progress)
        fk = None
        if cfg.potential is not None:
            fk = FeynmanKac(cfg.potential, cfg.num_particles, cfg.fk_temperature, cfg.ess_threshold, self.generator)
        chunk = _Chunk(self.tracker.stage, keypoints, ee, strength, self._layout(policy), fk)
        samples = policy.generate(cfg.num_particles, denoise_callback=lambda step: self._step(chunk, step))
        index = 0
        final = None
        if cfg.select == "best" and len(samples) > 1:
            actions = torch.as_tensor(samples.actions[:, : chunk.layout.length])
            final = self._evaluate(chunk.stage, keypoints, self.trajectory_map(actions, ee), len(samples))
            index = int(torch.argmax(final))
        if fk is not None:
            self._episode["resamples"] += len(fk.resample_steps)
        extra = {"guided": True, "stage": chunk.stage, "strength": strength, "progress": progress,
                 "step_rewards": chunk.rewards,
                 "final_reward": None if final is None else float(final[index])}
        return samples, index, extra

    # ------------------------------------------------------------------ the denoising-step callback
    def _evaluate(self, stage: int, keypoints: torch.Tensor, trajectory: torch.Tensor, n: int) -> torch.Tensor:
        """Run the reward and check it: ``(n,)`` finite tensor, else :class:`RewardFailure`."""
        try:
            value = self.reward(stage, keypoints, trajectory)
        except Exception as exc:  # untrusted reward code: any error means "no guidance for this chunk"
            raise RewardFailure(f"reward raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(value, torch.Tensor):
            raise RewardFailure(f"reward must return a tensor of shape ({n},), got {type(value).__name__}")
        if tuple(value.shape) != (n,):
            raise RewardFailure(f"reward must return shape ({n},), got {tuple(value.shape)}")
        if not torch.isfinite(value).all():
            raise RewardFailure("reward returned NaN or inf")
        return value

    def _step(self, chunk: _Chunk, step: DenoiseStep) -> StepEdit | None:
        cfg = self.config
        k = step.x.shape[0]
        source = step.x0 if cfg.evaluate_on == "clean" else step.x
        x = source.detach().clone().requires_grad_(True)
        start, length = chunk.layout.start, chunk.layout.length
        actions = step.to_actions(x)[:, start : start + length]
        rewards = self._evaluate(chunk.stage, chunk.keypoints, self.trajectory_map(actions, chunk.ee), k)
        chunk.rewards.append(float(rewards.detach().mean()))
        direction = torch.zeros_like(x)
        if chunk.strength > 0:
            (grad,) = torch.autograd.grad(rewards.sum(), x, allow_unused=True)
            grad = torch.zeros_like(x) if grad is None else grad
            if not torch.isfinite(grad).all():
                raise RewardFailure("reward gradient contains NaN or inf")
            grad = self._mask(grad)
            direction = chunk.strength * (_unit(grad) if cfg.normalize else grad)
        if cfg.diversity > 0 and k > 1 and step.index < cfg.diversity_until * step.num_steps:
            spread = self._mask(repulsion(source.detach()))
            direction = direction + cfg.diversity * _unit(spread)
        output = None
        if bool(direction.abs().max() > 0):
            output = self._apply(step, direction.detach(), chunk.layout.clip)
        resample = None if chunk.fk is None else chunk.fk.step(step.index, rewards)
        if output is None and resample is None:
            return None
        return StepEdit(model_output=output, resample=resample)

    def _mask(self, g: torch.Tensor) -> torch.Tensor:
        dims = self.config.dims
        if dims is None:
            return g
        if max(dims) >= g.shape[-1]:
            raise ConfigError(f"guide.dims {list(dims)} out of range for {g.shape[-1]} action dimensions")
        mask = torch.zeros(g.shape[-1], dtype=g.dtype, device=g.device)
        mask[list(dims)] = 1.0
        return g * mask

    def _apply(self, step: DenoiseStep, direction: torch.Tensor, clip: float | None) -> torch.Tensor:
        """The model output that moves the sample along ``direction`` (see the module docstring)."""
        out = step.model_output
        if step.prediction == "velocity":
            return out - direction
        ab = float(step.alpha_bar if step.alpha_bar is not None else 1.0)
        if ab >= 1.0 - 1e-12:  # x̂0 no longer depends on ε: nothing left to guide
            return out
        shift = (1.0 - ab) / math.sqrt(ab) * direction  # x̂0 shift equivalent to ε − λ√(1−ᾱ)g
        if step.prediction == "sample":
            guided = out + shift
            return guided.clamp(-clip, clip) if clip is not None else guided
        if clip is None or not self.config.clip_aware:
            return out - math.sqrt(1.0 - ab) * direction
        x0_raw = (step.x - math.sqrt(1.0 - ab) * out) / math.sqrt(ab)
        moved = (x0_raw + shift).clamp(-clip, clip) - x0_raw.clamp(-clip, clip)
        return out - math.sqrt(ab) / math.sqrt(1.0 - ab) * moved
