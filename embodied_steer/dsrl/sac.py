"""DSRL-SAC: Stable-Baselines3's SAC over the latent-noise MDP (and the raw-action SAC baseline).

SB3's SAC does what DSRL-SAC needs as it is: a tanh-squashed Gaussian actor rescaled to the box
``[-b, b]`` (the paper's ``tanh × b``), twin critics with a min backup, Polyak targets, automatic
entropy temperature, and a gradient-steps-per-rollout-step knob that is the update-to-data ratio.
Only checkpointing is ours: networks go to safetensors, optimiser states and counters beside them,
and the replay buffer with SB3's own ``save_replay_buffer``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


@dataclass
class SACSettings:
    """Hyper-parameters (published DSRL values in comments; defaults scaled for a 2-core CPU).

    Attributes:
        hidden: MLP widths of actor and critics (published: wide, e.g. 2048×3; here 256×2).
        lr: Adam learning rate (3e-4).
        batch_size: minibatch (256).
        tau: Polyak rate (0.005).
        gamma: discount per *agent* step (for DSRL: ``γ^k`` of the chunk).
        n_critics: critics with min backup (2).
        utd: gradient steps per agent step (published ~20; here 1–4).
        learning_starts: agent steps of uniform-random actions before learning.
        buffer_size: replay capacity in agent steps.
        target_entropy: ``"auto"`` (−dim) or a number.
        init_temperature: the entropy coefficient α at the start (SB3's default is 1.0; with a
            112-dim latent and a sparse 0/1 reward that entropy bonus dominates for thousands of
            updates, so smaller values learn sooner).
    """

    hidden: list[int] = field(default_factory=lambda: [256, 256])
    lr: float = 3e-4
    batch_size: int = 256
    tau: float = 0.005
    gamma: float = 0.99
    n_critics: int = 2
    utd: int = 2
    learning_starts: int = 100
    buffer_size: int = 200_000
    target_entropy: Any = "auto"
    init_temperature: float = 1.0


def build_sac(env, settings: SACSettings, seed: int, tensorboard_dir: str | None = None):
    """An SB3 ``SAC`` on a gymnasium env (wrapped in SB3's DummyVecEnv)."""
    from stable_baselines3 import SAC

    return SAC(
        "MlpPolicy", env, learning_rate=settings.lr, buffer_size=settings.buffer_size,
        learning_starts=settings.learning_starts, batch_size=settings.batch_size, tau=settings.tau,
        gamma=settings.gamma, train_freq=1, gradient_steps=settings.utd, ent_coef=f"auto_{settings.init_temperature}",
        target_entropy=settings.target_entropy,
        policy_kwargs={"net_arch": list(settings.hidden), "n_critics": settings.n_critics},
        tensorboard_log=tensorboard_dir, seed=seed, device="cpu", verbose=0,
    )


def save_sac(model, folder: Path, counters: dict[str, Any]) -> None:
    """Write ``networks.safetensors``, ``optim.pt``, ``replay_buffer.pkl`` and ``counters.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"policy.{k}": v.detach().contiguous() for k, v in model.policy.state_dict().items()}
    tensors["log_ent_coef"] = model.log_ent_coef.detach().clone()
    save_file(tensors, str(folder / "networks.safetensors"))
    torch.save({"actor": model.actor.optimizer.state_dict(), "critic": model.critic.optimizer.state_dict(),
                "ent_coef": model.ent_coef_optimizer.state_dict()}, folder / "optim.pt")
    model.save_replay_buffer(folder / "replay_buffer.pkl")
    counters = dict(counters, num_timesteps=int(model.num_timesteps), n_updates=int(model._n_updates))
    (folder / "counters.json").write_text(json.dumps(counters, indent=2))


def load_sac(model, folder: Path) -> dict[str, Any]:
    """Restore what :func:`save_sac` wrote into a freshly built ``model``; return the counters."""
    tensors = load_file(str(folder / "networks.safetensors"))
    model.policy.load_state_dict({k.removeprefix("policy."): v for k, v in tensors.items() if k.startswith("policy.")})
    with torch.no_grad():
        model.log_ent_coef.copy_(tensors["log_ent_coef"])
    optim = torch.load(folder / "optim.pt", weights_only=False)
    model.actor.optimizer.load_state_dict(optim["actor"])
    model.critic.optimizer.load_state_dict(optim["critic"])
    model.ent_coef_optimizer.load_state_dict(optim["ent_coef"])
    model.load_replay_buffer(folder / "replay_buffer.pkl")
    counters = json.loads((folder / "counters.json").read_text())
    model.num_timesteps = int(counters["num_timesteps"])
    model._n_updates = int(counters["n_updates"])
    return counters


def sac_actor_state(model) -> dict[str, torch.Tensor]:
    """The deterministic actor's weights (``latent_pi`` + ``mu``), for the adapted policy."""
    return {k: v.detach().clone() for k, v in model.actor.state_dict().items()}


def sac_deterministic(model):
    """``obs (D,) → action (A,)`` with the actor's mean (tanh-squashed, rescaled to the box)."""

    def act(obs: np.ndarray) -> np.ndarray:
        action, _ = model.predict(np.asarray(obs, np.float32), deterministic=True)
        return action

    return act
