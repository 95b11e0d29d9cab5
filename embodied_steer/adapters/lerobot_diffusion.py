"""LeRobot ``DiffusionPolicy`` as a :class:`SteerablePolicy` with all four intervention points.

The sampler loop is run here rather than inside LeRobot so that a denoising-step callback can see
and edit every step; without a callback it computes exactly what LeRobot's
``DiffusionPolicy.predict_action_chunk`` computes (tested). Use a DDIM scheduler (deterministic):
with DDPM the scheduler re-adds random noise at every step, so the same initial noise does not give
the same actions (the adapter then draws that noise from a seeded generator).

Shapes: the sampler works on ``(K, horizon, action_dim)`` in normalised action space ([-1, 1] with
LeRobot's MIN_MAX normalisation); the adapter returns the ``n_action_steps`` actions starting at the
current step, un-normalised to environment units.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from embodied_steer.adapters.checkpoints import resolve_checkpoint
from embodied_steer.adapters.lerobot_batch import observation_to_frame
from embodied_steer.core.policy import (
    DenoiseCallback,
    DenoiseStep,
    InterventionPoint,
    NoiseSpec,
    PolicyInfo,
    SteerablePolicy,
    StepEdit,
)
from embodied_steer.core.types import ActionBounds, Observation
from embodied_steer.core.steps import denoise_step_context

OBS_IMAGES = "observation.images"


class LeRobotDiffusionPolicy(SteerablePolicy):
    """Adapter around ``lerobot.policies.diffusion.DiffusionPolicy``.

    Args:
        policy: the LeRobot policy (in eval mode).
        preprocessor, postprocessor: its processor pipelines (normalisation, batching).
        name: a name for results and error messages.
        camera_map: policy image key → observation camera name.
        execute_steps: actions executed per chunk (default: the config's ``n_action_steps``).
        action_bounds: the action space's bounds, if known.
        seed: seed of the generator used for noise that is not passed in.
    """

    interventions = frozenset(InterventionPoint)

    def __init__(
        self,
        policy: Any,
        preprocessor: Any,
        postprocessor: Any,
        *,
        name: str = "diffusion",
        camera_map: Mapping[str, str] | None = None,
        execute_steps: int | None = None,
        action_bounds: ActionBounds | None = None,
        seed: int = 0,
    ) -> None:
        cfg = policy.config
        self.history_length = int(cfg.n_obs_steps)
        state = cfg.input_features.get("observation.state")
        env_state = cfg.input_features.get("observation.environment_state")
        super().__init__(
            PolicyInfo(
                name=name,
                chunk_size=int(cfg.n_action_steps),
                execute_steps=int(execute_steps or cfg.n_action_steps),
                action_bounds=action_bounds,
                state_dim=None if state is None else int(state.shape[0]),
                env_state_dim=None if env_state is None else int(env_state.shape[0]),
                cameras=tuple(cfg.image_features),
                extra={"type": "diffusion", "scheduler": cfg.noise_scheduler_type,
                       "num_inference_steps": int(policy.diffusion.num_inference_steps)},
            ),
            seed=seed,
        )
        if self.info.execute_steps > self.info.chunk_size:
            raise ValueError(f"execute_steps={execute_steps} exceeds the chunk size {self.info.chunk_size}")
        self.policy = policy.eval()
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.camera_map = dict(camera_map or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        device: str = "cpu",
        num_inference_steps: int | None = None,
        action_low: Sequence[float] | None = None,
        action_high: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> "LeRobotDiffusionPolicy":
        """Load a LeRobot-format checkpoint (``config.json``, ``model.safetensors``, processor files)
        from a local folder, or from the hub when a connection exists."""
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
        from lerobot.policies.factory import make_pre_post_processors

        source = resolve_checkpoint(path_or_hub_id)
        policy = DiffusionPolicy.from_pretrained(str(source))
        if num_inference_steps is not None:
            policy.diffusion.num_inference_steps = int(num_inference_steps)
        policy.to(device)
        pre, post = make_pre_post_processors(
            policy.config, pretrained_path=str(source), preprocessor_overrides={"device_processor": {"device": device}}
        )
        bounds = None
        if action_low is not None and action_high is not None:
            bounds = ActionBounds(np.asarray(action_low), np.asarray(action_high))
        kwargs.setdefault("name", Path(str(path_or_hub_id)).name)
        return cls(policy, pre, post, action_bounds=bounds, **kwargs)

    @classmethod
    def from_config(cls, config: Any, dataset_stats: Mapping[str, Mapping[str, Any]], **kwargs: Any) -> "LeRobotDiffusionPolicy":
        """Build a randomly initialised policy from a LeRobot ``DiffusionConfig`` and dataset statistics
        (feature name → ``{"min", "max", "mean", "std"}``), e.g. for tests or before training."""
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
        from lerobot.policies.factory import make_pre_post_processors

        policy = DiffusionPolicy(config)
        pre, post = make_pre_post_processors(config, dataset_stats=dataset_stats)
        return cls(policy, pre, post, **kwargs)

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write config, safetensors weights and processor pipelines in LeRobot's format."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(folder)
        self.preprocessor.save_pretrained(folder)
        self.postprocessor.save_pretrained(folder)
        return folder

    # ------------------------------------------------------------------ intervention points
    @property
    def noise_spec(self) -> NoiseSpec:
        cfg = self.policy.config
        dim = int(cfg.action_feature.shape[0])
        return NoiseSpec(shape=(int(cfg.horizon), dim), action_dims=dim)

    def modules(self) -> dict[str, nn.Module]:
        """Named modules: the observation encoders and the denoising U-Net's blocks.

        Every module here fires once per denoising step (the U-Net) or once per chunk
        (``rgb_encoder*``) — encoders run on the observation, the U-Net on each step's sample.
        """
        model = self.policy.diffusion
        names: dict[str, nn.Module] = {}
        if hasattr(model, "rgb_encoder"):
            names["rgb_encoder"] = model.rgb_encoder
        unet = model.unet
        names["unet"] = unet
        names["unet.diffusion_step_encoder"] = unet.diffusion_step_encoder
        for group in ("down_modules", "up_modules"):
            for i, stage in enumerate(getattr(unet, group)):
                for j, block in enumerate(stage):
                    names[f"unet.{group}.{i}.{j}"] = block
        for i, block in enumerate(unet.mid_modules):
            names[f"unet.mid_modules.{i}"] = block
        names["unet.final_conv"] = unet.final_conv
        return names

    def module_schedule(self) -> dict[str, str]:
        """Name → ``"chunk"`` (observation encoders: once per chunk) or ``"step"`` (U-Net: once per
        denoising step, inside :func:`~embodied_steer.core.steps.denoise_step_context`)."""
        return {name: "chunk" if name.startswith("rgb_encoder") else "step" for name in self.modules()}

    # ------------------------------------------------------------------ sampling
    def _batch(self, history: Sequence[Observation], n: int) -> dict[str, torch.Tensor]:
        cfg = self.policy.config
        frames = [self.preprocessor(observation_to_frame(o, cfg.input_features, self.camera_map)) for o in history]
        batch = {k: torch.stack([f[k] for f in frames], dim=1) for k in cfg.input_features}
        if cfg.image_features:
            batch[OBS_IMAGES] = torch.stack([batch[k] for k in cfg.image_features], dim=-4)
        return {k: v.expand(n, *v.shape[1:]) for k, v in batch.items()}

    @torch.no_grad()
    def _generate(
        self,
        history: Sequence[Observation],
        n: int,
        noise: torch.Tensor | None,
        denoise_callback: DenoiseCallback | None,
    ) -> np.ndarray:
        model = self.policy.diffusion
        cfg = self.policy.config
        device = next(model.parameters()).device
        global_cond = model._prepare_global_conditioning(self._batch(history, n))
        if noise is None:
            noise = torch.randn((n, *self.noise_spec.shape), generator=self.generator)
        sample = noise.to(device=device, dtype=torch.float32)
        sample = self._denoise(sample, global_cond, denoise_callback)
        start = int(cfg.n_obs_steps) - 1
        chunk = sample[:, start : start + int(cfg.n_action_steps)]
        return self.postprocessor(chunk).detach().cpu().numpy()

    def _denoise(
        self, sample: torch.Tensor, global_cond: torch.Tensor, callback: DenoiseCallback | None
    ) -> torch.Tensor:
        model = self.policy.diffusion
        scheduler = model.noise_scheduler
        scheduler.set_timesteps(model.num_inference_steps)
        timesteps = scheduler.timesteps
        for i, t in enumerate(timesteps):
            t_batch = torch.full(sample.shape[:1], int(t), dtype=torch.long, device=sample.device)
            with denoise_step_context(i, len(timesteps), float(t)):  # hooks read the step (activation steering)
                eps = model.unet(sample, t_batch, global_cond=global_cond)
            resample = None
            if callback is not None:
                alpha_bar = float(scheduler.alphas_cumprod[int(t)])
                x0 = self._predict_x0(sample, eps, alpha_bar)
                step = DenoiseStep(
                    index=i, num_steps=len(timesteps), t=float(t), x=sample, model_output=eps,
                    prediction=self.policy.config.prediction_type, x0=x0, alpha_bar=alpha_bar,
                    to_actions=self._unnormalize,
                )
                with torch.enable_grad():  # guidance differentiates rewards through to_actions
                    edit = callback(step)
                if edit is not None and not isinstance(edit, StepEdit):
                    raise TypeError(f"denoise callback must return StepEdit or None, got {type(edit).__name__}")
                if edit is not None:
                    if edit.model_output is not None:
                        eps = edit.checked_model_output(eps)
                    if edit.resample is not None:
                        resample = edit.checked_resample(sample.shape[0])
            sample = scheduler.step(eps, t, sample, generator=self.generator).prev_sample
            if resample is not None:
                sample = sample[resample.to(sample.device)]
        return sample

    def _predict_x0(self, x: torch.Tensor, output: torch.Tensor, alpha_bar: float) -> torch.Tensor:
        kind = self.policy.config.prediction_type
        if kind == "epsilon":
            x0 = (x - (1 - alpha_bar) ** 0.5 * output) / alpha_bar**0.5
        else:  # "sample"
            x0 = output
        if self.policy.config.clip_sample:
            r = self.policy.config.clip_sample_range
            x0 = x0.clamp(-r, r)
        return x0

    def _unnormalize(self, normalized: torch.Tensor) -> torch.Tensor:
        """Differentiable: normalised ``(K, T, D)`` → environment units.

        Uses the post-processor's own un-normalisation step (pure torch ops), so the mapping is
        exactly the one applied to the returned actions.
        """
        step = next(s for s in self.postprocessor.steps if hasattr(s, "_normalize_action"))
        return step._normalize_action(normalized, inverse=True)
