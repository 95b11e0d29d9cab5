"""Interactions between the K particles of a guided sampler: repulsion and Feynman–Kac resampling.

* :func:`repulsion` — the gradient that *decreases* the mean pairwise RBF kernel between particles
  (SVGD-style bandwidth from the median pairwise distance), so that early denoising steps spread
  the particles over several modes instead of letting guidance collapse them onto one.
* :class:`FeynmanKac` — sequential Monte Carlo over denoising steps. Each step, every particle gets
  a potential ``G_t`` from its reward history and the log-weights accumulate ``log G_t``; when the
  effective sample size ``ESS = (Σw)² / Σw²`` falls below ``ess_threshold · K`` the particles are
  resampled in proportion to their weights and the weights reset. Potentials (Singhal et al., FK
  steering, 2025), with ``τ`` the temperature and ``r_s`` the reward of the predicted sample at step s:

  ================  =======================================
  ``instantaneous``  ``log G_t = τ · r_t``
  ``max``            ``log G_t = τ · max_{s≤t} r_s``
  ``additive``       ``log G_t = τ · Σ_{s≤t} r_s``
  ``difference``     ``log G_t = τ · (r_t − r_{t−1})`` (0 at the first step)
  ================  =======================================

Shapes: particles ``x`` are ``(K, ...)``; rewards ``(K,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from embodied_steer.core.errors import ConfigError

Potential = Literal["instantaneous", "max", "additive", "difference"]
POTENTIALS: tuple[str, ...] = ("instantaneous", "max", "additive", "difference")


def mean_pairwise_kernel(x: torch.Tensor, bandwidth: torch.Tensor | float | None = None) -> torch.Tensor:
    """Mean RBF kernel ``exp(-|x_i - x_j|² / h)`` over ordered pairs ``i != j`` (scalar).

    ``h`` defaults to ``median(|x_i - x_j|²) / log(K + 1)`` (detached).
    """
    k = x.shape[0]
    if k < 2:
        return x.new_zeros(())
    flat = x.reshape(k, -1)
    d2 = torch.cdist(flat, flat).pow(2)
    off = ~torch.eye(k, dtype=torch.bool, device=x.device)
    if bandwidth is None:
        bandwidth = (d2[off].median() / torch.log(torch.tensor(k + 1.0))).detach().clamp_min(1e-8)
    return torch.exp(-d2[off] / bandwidth).mean()


def repulsion(x: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """``-∇_x`` mean pairwise kernel: the direction that spreads the particles, shape of ``x``.

    Zero for a single particle.
    """
    if x.shape[0] < 2:
        return torch.zeros_like(x)
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(mean_pairwise_kernel(leaf, bandwidth), leaf)
    return -grad


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """``(Σw)² / Σw²`` of normalised weights ``w ∝ exp(log_weights)``; in [1, K]."""
    w = torch.softmax(log_weights.double(), dim=0)
    return float(1.0 / (w * w).sum())


@dataclass
class FeynmanKac:
    """Feynman–Kac resampling state for one chunk's particle batch.

    Args:
        potential: one of :data:`POTENTIALS`.
        num_particles: K.
        temperature: τ, multiplies rewards in the potentials.
        ess_threshold: resample when ESS < ``ess_threshold · K`` (1.0: at every step; 0: never).
        generator: source of the resampling draws (seeded by the caller for reproducibility).
    """

    potential: Potential
    num_particles: int
    temperature: float = 10.0
    ess_threshold: float = 0.5
    generator: torch.Generator | None = None
    log_weights: torch.Tensor = field(init=False)
    best: torch.Tensor | None = field(init=False, default=None)
    total: torch.Tensor | None = field(init=False, default=None)
    previous: torch.Tensor | None = field(init=False, default=None)
    resample_steps: list[int] = field(init=False, default_factory=list)
    ess_history: list[float] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.potential not in POTENTIALS:
            raise ConfigError(f"unknown FK potential '{self.potential}'; choose one of {list(POTENTIALS)}")
        if not 0.0 <= self.ess_threshold <= 1.0:
            raise ConfigError(f"ess_threshold must be in [0, 1], got {self.ess_threshold}")
        if self.temperature < 0:
            raise ConfigError(f"FK temperature must be >= 0, got {self.temperature}")
        self.log_weights = torch.zeros(self.num_particles, dtype=torch.float64)

    def log_potential(self, rewards: torch.Tensor) -> torch.Tensor:
        """Update the reward history with this step's ``(K,)`` rewards and return ``log G_t (K,)``."""
        r = rewards.detach().double().flatten()
        if r.shape[0] != self.num_particles:
            raise ValueError(f"expected {self.num_particles} rewards, got {r.shape[0]}")
        previous = r if self.previous is None else self.previous
        self.best = r if self.best is None else torch.maximum(self.best, r)
        self.total = r if self.total is None else self.total + r
        self.previous = r
        if self.potential == "instantaneous":
            value = r
        elif self.potential == "max":
            value = self.best
        elif self.potential == "additive":
            value = self.total
        else:
            value = r - previous
        return self.temperature * value

    def step(self, index: int, rewards: torch.Tensor) -> torch.Tensor | None:
        """Account for step ``index``'s rewards; return ``(K,)`` resampling indices or ``None``.

        After a resampling, the reward history follows the particles and the weights are uniform.
        """
        self.log_weights = self.log_weights + self.log_potential(rewards)
        return self.maybe_resample(index)

    def maybe_resample(self, index: int) -> torch.Tensor | None:
        """Resample if the current weights' ESS is below the threshold; return indices or ``None``."""
        ess = effective_sample_size(self.log_weights)
        self.ess_history.append(ess)
        if ess >= self.ess_threshold * self.num_particles or self.num_particles < 2:
            return None
        probs = torch.softmax(self.log_weights, dim=0).float()
        indices = torch.multinomial(probs, self.num_particles, replacement=True, generator=self.generator)
        for name in ("best", "total", "previous"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[indices])
        self.log_weights = torch.zeros_like(self.log_weights)
        self.resample_steps.append(index)
        return indices
