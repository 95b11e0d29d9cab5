"""Train a small LeRobot ``DiffusionPolicy`` on a local LeRobotDataset, on CPU.

This is the recipe behind the shipped base policy (``checkpoints/lift_diffusion``): state-only
inputs (proprioception + object state), a small 1-D U-Net, DDIM sampling with few steps. The whole
dataset is read once through ``LeRobotDataset`` (so LeRobot's own windowing and padding masks are
used) and kept in memory; batches are drawn from that cache with a seeded generator.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class DiffusionTrainConfig:
    """Everything that determines the trained policy (saved next to the weights)."""

    dataset_root: str
    repo_id: str = "local/demos"
    output_dir: str = "outputs/train/diffusion"
    episodes: int | None = None
    """Use only the first ``episodes`` episodes of the dataset (None: all)."""
    steps: int = 4000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-6
    seed: int = 0
    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    down_dims: tuple[int, ...] = (32, 64, 128)
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 64
    num_train_timesteps: int = 100
    num_inference_steps: int = 10
    noise_scheduler_type: str = "DDIM"
    log_every: int = 100
    extra: dict = field(default_factory=dict)


def _load_cached_dataset(cfg: DiffusionTrainConfig, policy_cfg) -> tuple[dict[str, torch.Tensor], object]:
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    meta = LeRobotDatasetMetadata(cfg.repo_id, root=cfg.dataset_root)
    episodes = None if cfg.episodes is None else list(range(min(cfg.episodes, meta.total_episodes)))
    dataset = LeRobotDataset(
        cfg.repo_id, root=cfg.dataset_root, episodes=episodes,
        delta_timestamps=resolve_delta_timestamps(policy_cfg, meta),
    )
    keys = [k for k in dataset[0] if isinstance(dataset[0][k], torch.Tensor) and (k.startswith("observation") or k.startswith("action"))]
    items = [dataset[i] for i in tqdm(range(len(dataset)), desc="caching dataset", unit="frame", mininterval=5)]
    cache = {k: torch.stack([it[k] for it in items]) for k in keys}
    return cache, dataset.meta


def train_diffusion(cfg: DiffusionTrainConfig) -> Path:
    """Train and save a LeRobot-format checkpoint to ``cfg.output_dir``; return that folder.

    The folder holds ``config.json``, ``model.safetensors``, the pre/post-processor pipelines
    (with the dataset's normalisation statistics), ``train_config.json`` and ``train_log.csv``.
    """
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.utils.feature_utils import dataset_to_policy_features

    torch.manual_seed(cfg.seed)
    meta = LeRobotDatasetMetadata(cfg.repo_id, root=cfg.dataset_root)
    features = dataset_to_policy_features(meta.features)
    policy_cfg = DiffusionConfig(
        input_features={k: f for k, f in features.items() if f.type is not FeatureType.ACTION},
        output_features={k: f for k, f in features.items() if f.type is FeatureType.ACTION},
        n_obs_steps=cfg.n_obs_steps,
        horizon=cfg.horizon,
        n_action_steps=cfg.n_action_steps,
        drop_n_last_frames=cfg.horizon - cfg.n_action_steps - cfg.n_obs_steps + 1,
        down_dims=tuple(cfg.down_dims),
        kernel_size=cfg.kernel_size,
        n_groups=cfg.n_groups,
        diffusion_step_embed_dim=cfg.diffusion_step_embed_dim,
        noise_scheduler_type=cfg.noise_scheduler_type,
        num_train_timesteps=cfg.num_train_timesteps,
        num_inference_steps=cfg.num_inference_steps,
        pretrained_backbone_weights=None,
        device="cpu",
        push_to_hub=False,
    )
    cache, ds_meta = _load_cached_dataset(cfg, policy_cfg)
    policy = DiffusionPolicy(policy_cfg)
    preprocessor, postprocessor = make_pre_post_processors(policy_cfg, dataset_stats=ds_meta.stats)
    policy.train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.95, 0.999), weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps)))
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    n_items = next(iter(cache.values())).shape[0]
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_rows = []
    start = time.time()
    running = None
    bar = tqdm(range(cfg.steps), desc="training diffusion policy", unit="step", mininterval=5)
    for step in bar:
        idx = torch.randint(0, n_items, (cfg.batch_size,), generator=generator)
        batch = preprocessor({k: v[idx] for k, v in cache.items()})
        loss, _ = policy.forward(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{running:.4f}")
            log_rows.append({"step": step, "loss": loss.item(), "loss_ema": running, "lr": schedule.get_last_lr()[0],
                             "seconds": round(time.time() - start, 2)})
    policy.eval()
    policy.save_pretrained(out)
    preprocessor.save_pretrained(out)
    postprocessor.save_pretrained(out)
    (out / "train_config.json").write_text(json.dumps(
        {**asdict(cfg), "frames": n_items, "train_seconds": round(time.time() - start, 1),
         "parameters": sum(p.numel() for p in policy.parameters())}, indent=2))
    with open(out / "train_log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(log_rows[0]))
        writer.writeheader()
        writer.writerows(log_rows)
    log.info("saved diffusion policy to %s", out)
    return out
