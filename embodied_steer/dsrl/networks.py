"""Small torch networks of DSRL: MLPs (optionally LayerNorm), the noise actor, critic ensembles."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None, layernorm: bool = False,
        dropout: float = 0.0) -> nn.Sequential:
    """``Linear → [LayerNorm] → ReLU [→ Dropout]`` per hidden width, then an optional output ``Linear``.

    The ReLU and its dropout are one parameter-free module, so the state-dict keys are the same with
    and without dropout (weights load across the two).
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers.append(nn.Linear(d, h))
        if layernorm:
            layers.append(nn.LayerNorm(h))
        layers.append(nn.Sequential(nn.ReLU(), nn.Dropout(dropout)) if dropout > 0 else nn.ReLU())
        d = h
    if out_dim is not None:
        layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class NoiseActor(nn.Module):
    """Gaussian actor over the latent noise, squashed as ``b · tanh(u)`` into the box ``[-b, b]^d``.

    ``forward(obs (B, D_obs))`` → ``(action (B, d), log_prob (B,))`` sampled with the
    reparameterisation trick; :meth:`deterministic` gives ``b · tanh(mean)``.
    """

    def __init__(self, obs_dim: int, latent_dim: int, hidden: Sequence[int], bound: float, layernorm: bool = False):
        super().__init__()
        self.trunk = mlp(obs_dim, hidden, None, layernorm)
        last = hidden[-1] if hidden else obs_dim
        self.mu = nn.Linear(last, latent_dim)
        self.log_std = nn.Linear(last, latent_dim)
        self.bound = float(bound)

    def _dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        return self.mu(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self._dist(obs)
        std = log_std.exp()
        u = mean + std * torch.randn_like(mean)
        log_prob = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        squashed = torch.tanh(u)
        log_prob = log_prob - torch.log(self.bound * (1 - squashed.pow(2)) + 1e-6).sum(-1)
        return self.bound * squashed, log_prob

    @torch.no_grad()
    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        mean, _ = self._dist(obs)
        return self.bound * torch.tanh(mean)


class CriticEnsemble(nn.Module):
    """``n`` independent Q-networks ``Q_i(obs, action)``; ``forward`` → ``(n, B)``.

    ``dropout > 0`` drops hidden units in training mode (DroQ's regulariser against a critic that
    memorises its replay); ``.eval()`` turns it off.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int], n: int = 2, layernorm: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.nets = nn.ModuleList(mlp(obs_dim + action_dim, hidden, 1, layernorm, dropout) for _ in range(n))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([net(x).squeeze(-1) for net in self.nets])


def sb3_actor_to_noise_actor(state: dict[str, torch.Tensor], obs_dim: int, latent_dim: int, hidden: Sequence[int],
                             bound: float) -> NoiseActor:
    """Rebuild SB3's SAC actor (``latent_pi`` Linear/ReLU stack, ``mu``, ``log_std``) as a :class:`NoiseActor`.

    SB3's squashing is ``tanh`` then a linear rescale from ``[-1, 1]`` to the symmetric box, i.e.
    ``b · tanh`` — the same map.
    """
    actor = NoiseActor(obs_dim, latent_dim, hidden, bound, layernorm=False)
    mapped = {k.replace("latent_pi.", "trunk."): v for k, v in state.items() if not k.startswith("features_extractor")}
    actor.load_state_dict(mapped)
    return actor


@torch.no_grad()
def choose_latent(actor: NoiseActor, obs: torch.Tensor, critic: CriticEnsemble | None = None,
                  select: int = 1, explore: bool = False) -> torch.Tensor:
    """The latent ``(B, d)`` to act with for observations ``(B, D_obs)``.

    ``b · tanh(mean)`` of the actor (``explore``: one sample of it), or — given a noise-space critic
    ``Q_W`` and ``select > 1`` — the best by ``min_i Q_W,i(s, w)`` among that mean and ``select − 1``
    samples of the actor (``explore``: among ``select`` samples). Scoring a candidate costs one
    small MLP pass and no run of the base policy, which is what makes this cheap for DSRL-NA, whose
    ``Q_W`` is over noise.
    """
    if critic is None or select <= 1:
        return actor(obs)[0] if explore else actor.deterministic(obs)
    b = obs.shape[0]
    n_samples = select if explore else select - 1
    samples = actor(obs.repeat_interleave(n_samples, dim=0))[0].reshape(b, n_samples, -1)
    d = samples.shape[-1]
    candidates = samples if explore else torch.cat([actor.deterministic(obs)[:, None], samples], dim=1)  # (B, select, d)
    scores = critic(obs.repeat_interleave(select, dim=0), candidates.reshape(b * select, d)).min(0).values
    best = scores.reshape(b, select).argmax(1)
    return candidates[torch.arange(b), best]
