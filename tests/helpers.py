"""Builders shared by several test files: a tiny random DiffusionPolicy adapter and observations."""

from __future__ import annotations

import numpy as np
import torch

from embodied_steer.core.types import ActionBounds, Observation

STATE_DIM, ENV_DIM, ACTION_DIM = 9, 10, 7


def tiny_diffusion_policy(*, scheduler: str = "DDIM", n_obs_steps: int = 2, seed: int = 0, **kwargs):
    """A randomly initialised small DiffusionPolicy for Lift-shaped inputs (state 9, env 10, action 7)."""
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

    from embodied_steer.adapters.lerobot_diffusion import LeRobotDiffusionPolicy

    torch.manual_seed(seed)
    cfg = DiffusionConfig(
        input_features={
            "observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,)),
            "observation.environment_state": PolicyFeature(FeatureType.ENV, (ENV_DIM,)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
        n_obs_steps=n_obs_steps, horizon=8, n_action_steps=4, drop_n_last_frames=3,
        down_dims=(16, 32), kernel_size=3, n_groups=4, diffusion_step_embed_dim=16,
        noise_scheduler_type=scheduler, num_train_timesteps=50, num_inference_steps=5,
        pretrained_backbone_weights=None, device="cpu", push_to_hub=False,
        normalization_mapping={"STATE": NormalizationMode.MIN_MAX, "ENV": NormalizationMode.MIN_MAX,
                               "ACTION": NormalizationMode.MIN_MAX},
    )
    def box(d, lo=-1.0, hi=1.0):
        return {"min": np.full(d, lo, np.float32), "max": np.full(d, hi, np.float32),
                "mean": np.zeros(d, np.float32), "std": np.ones(d, np.float32)}
    stats = {"observation.state": box(STATE_DIM, -2, 2), "observation.environment_state": box(ENV_DIM, -2, 2),
             "action": box(ACTION_DIM)}
    kwargs.setdefault("action_bounds", ActionBounds.symmetric(ACTION_DIM))
    return LeRobotDiffusionPolicy.from_config(cfg, stats, name="tiny_diffusion", seed=seed, **kwargs)


def lift_like_observation(rng: np.random.Generator | None = None) -> Observation:
    rng = rng or np.random.default_rng(0)
    return Observation(
        state=rng.normal(size=STATE_DIM).astype(np.float32),
        env_state=rng.normal(size=ENV_DIM).astype(np.float32),
        instruction="lift the red cube",
    )
