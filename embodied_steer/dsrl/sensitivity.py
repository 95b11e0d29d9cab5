"""A projected latent along the noise directions that move the executed actions most.

A random projection (``latent_basis=random``) spends the latent on arbitrary noise directions:
on the shipped Lift policy a random 16-dim subspace of the 112-dim noise carries 7–31 % of the
executed chunk's sensitivity to the noise (the trace of its Jacobian Gram matrix), the best 16
directions 88 % (``benchmarks/bench_dsrl_latent_basis.py``), and which share a run gets depends on
its seed. ``latent_basis=sensitivity`` takes the top eigenvectors of the frozen
sampler's averaged Jacobian Gram matrix instead::

    M = Σ_p  E_s[ J_p(s)ᵀ J_p(s) ] / tr(E_s[ J_p(s)ᵀ J_p(s) ]),   J_p(s) = ∂ a_exec(s, ε) / ∂ε  at ε = p

over agent observations ``s`` and two noise points ``p``: the zero noise (the base policy's mean
path, where an untrained actor starts) and one clipped ``N(0, I)`` draw per state (typical noise).
Each point's Gram matrix is normalised by its trace because the sampler is more sensitive at the
zero noise (about 5× on Lift's demonstration states) and would otherwise decide alone. The rows are
then scaled (:func:`whitening_scales`) so that no latent entry moves the actions further than an
average random row. ``J`` is taken by forward differences through the same batched decoder DSRL-NA
uses, so it works for every policy that decoder supports (no gradients through the sampler needed).

Measured on Lift (benchmarks/RESULTS.md, sixteenth session): the whitened basis learned worse than a
random one, and the unscaled one broke training; ``latent_basis=random`` stays the default.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch

from embodied_steer.core.errors import ConfigError

log = logging.getLogger("embodied_steer.dsrl")

Decoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(obs (B, D_obs), noise (B, *noise_shape)) → executed chunk (B, k·D_action)``."""


@torch.no_grad()
def jacobian_gram(decode: Decoder, obs: torch.Tensor, noise: torch.Tensor, eps: float = 0.05) -> torch.Tensor:
    """``mean_s J(s)ᵀ J(s)`` ``(F, F)`` of the executed chunk with respect to the flattened noise
    ``F = prod(noise_shape)``, by forward differences of size ``eps`` around ``noise`` ``(N, *noise_shape)``
    at the observations ``obs`` ``(N, D_obs)`` (one decode of ``F + 1`` samples per state)."""
    n, shape = obs.shape[0], tuple(noise.shape[1:])
    full = int(np.prod(shape))
    gram = torch.zeros(full, full, dtype=torch.float64)
    steps = torch.cat([torch.zeros(1, full), eps * torch.eye(full)])  # (F + 1, F)
    for i in range(n):
        batch = (noise[i].reshape(1, full) + steps).reshape(full + 1, *shape)
        chunk = decode(obs[i : i + 1].expand(full + 1, -1), batch).double()
        jac = ((chunk[1:] - chunk[0]) / eps).T  # (k·D_action, F)
        if not torch.isfinite(jac).all():
            raise ConfigError(f"the policy's executed actions are not finite around the noise at state {i}; "
                              "cannot compute a sensitivity basis")
        gram += jac.T @ jac / n
    return gram


def sensitivity_basis(decode: Decoder, obs: torch.Tensor, noise_shape: Sequence[int], latent_dim: int, bound: float,
                      eps: float = 0.05, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The ``(latent_dim, F)`` orthonormal rows along which the noise moves the executed actions most
    (see the module docstring); ``(latent_dim,)`` :func:`whitening_scales` for them; and a summary:
    the share of the Gram matrix's trace the rows carry, at each noise point, and what a random
    basis of the same size carries on average (``d / F``).

    Args:
        decode: batched decoder through the frozen sampler (:func:`~embodied_steer.dsrl.na.make_decoder`).
        obs: ``(N, D_obs)`` agent observations to average over (N ≥ 1).
        noise_shape: the policy's noise shape ``(H, D)``.
        latent_dim: rows to keep (``d``).
        bound: the latent box; the random noise point is ``N(0, I)`` clipped to it, as the
            actor's warm-up noise.
        eps: finite-difference step in noise units.
        seed: seed of the random noise point.

    Raises:
        ConfigError: no observations, ``latent_dim`` out of range, or non-finite actions.
    """
    full = int(np.prod(noise_shape))
    if obs.ndim != 2 or obs.shape[0] < 1:
        raise ConfigError(f"a sensitivity basis needs at least one agent observation (N, D_obs), got {tuple(obs.shape)}")
    if not 1 <= int(latent_dim) <= full:
        raise ConfigError(f"latent_dim must be in [1, {full}] for a sensitivity basis, got {latent_dim}")
    obs = obs.float()
    grams = {}
    for name, noise in noise_points(obs.shape[0], noise_shape, bound, seed).items():
        grams[name] = jacobian_gram(decode, obs, noise, eps)
        log.info("sensitivity basis: Jacobians at the %s noise over %d states done", name, obs.shape[0])
    return basis_from_grams(grams, latent_dim)


def noise_points(n: int, noise_shape: Sequence[int], bound: float, seed: int) -> dict[str, torch.Tensor]:
    """The two noise points a basis's Jacobians are taken at, ``(n, *noise_shape)`` each: ``"zero"``
    and ``"random"`` (``N(0, I)`` drawn with ``seed``, clipped to ``±bound``)."""
    g = torch.Generator().manual_seed(int(seed))
    return {"zero": torch.zeros(n, *noise_shape),
            "random": torch.randn(n, *noise_shape, generator=g).clamp(-bound, bound)}


def trace_share(rows: torch.Tensor, gram: torch.Tensor) -> float:
    """``tr(R M Rᵀ) / tr(M)``: the share of the sensitivity ``M`` that the rows ``R`` carry."""
    r = rows.to(gram.dtype)
    return float(torch.trace(r @ gram @ r.T) / gram.trace().clamp_min(1e-12))


def basis_from_grams(grams: dict[str, torch.Tensor], latent_dim: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """:func:`sensitivity_basis` from Gram matrices already computed (``{point name: (F, F)}``): the
    top ``latent_dim`` eigenvectors of their trace-normalised sum, with signs fixed, their whitening
    scales and the summary."""
    full = int(next(iter(grams.values())).shape[0])
    total = sum(m / m.trace().clamp_min(1e-12) for m in grams.values())
    values, vectors = torch.linalg.eigh(total)
    keep = torch.argsort(values, descending=True)[: int(latent_dim)]
    rows = vectors[:, keep].T.contiguous()
    scales = whitening_scales(values[keep], float(total.trace()), full)
    # eigh's signs are arbitrary: make each row's largest entry positive so the basis is reproducible
    signs = torch.sign(rows.gather(1, rows.abs().argmax(1, keepdim=True)))
    rows = rows * signs
    summary = {f"trace_share_{name}": trace_share(rows, m) for name, m in grams.items()}
    summary["trace_share_random_basis"] = int(latent_dim) / full
    rows = rows.float()
    # re-orthonormalise in float32 so LatentNoiseMap's check holds to its tolerance
    q, r = torch.linalg.qr(rows.T)
    rows = (q * torch.sign(torch.diagonal(r))).T.contiguous()
    summary["scale_min"], summary["scale_max"] = float(scales.min()), float(scales.max())
    return rows, scales, summary


def whitening_scales(values: torch.Tensor, trace: float, full: int) -> torch.Tensor:
    """Per-row scales ``s_i = min(1, sqrt(tr M / (F · λ_i)))`` for basis rows with sensitivities
    ``values`` ``λ_i`` (eigenvalues of ``M``, trace ``trace``, noise size ``F``).

    A projected latent adds ``s_i · sqrt(F/d) · r_i`` to the noise per unit of entry ``i``, which moves
    the executed actions by ``(F/d) s_i² λ_i`` (squared); a random basis row moves them by ``tr M / d``
    on average. With these scales every latent entry moves the actions like an average random row
    (so an untrained actor perturbs the base policy no more than with a random basis, where the
    unscaled top rows moved them up to ~7× further on Lift), and the cap at 1 keeps a nearly inert
    direction from being given more noise than a random basis would give it.
    """
    lam = values.double().clamp_min(1e-12)
    return torch.sqrt(trace / (full * lam)).clamp(max=1.0).float()


def basis_states(obs: np.ndarray, count: int) -> torch.Tensor:
    """``count`` observations spread evenly over ``obs`` ``(N, D_obs)`` (all of them if ``N ≤ count``)."""
    if count < 1:
        raise ConfigError(f"latent_basis_states must be >= 1, got {count}")
    idx = np.unique(np.linspace(0, len(obs) - 1, min(count, len(obs))).round().astype(int))
    return torch.as_tensor(np.asarray(obs, np.float32)[idx])


def describe(summary: dict[str, float]) -> str:
    """One log line for a basis summary."""
    parts = [f"{k[len('trace_share_'):]} {v:.2f}" for k, v in summary.items() if k.startswith("trace_share_")]
    return ("share of the executed-action sensitivity the basis carries: " + ", ".join(parts)
            + f"; whitening scales {summary['scale_min']:.2f}–{summary['scale_max']:.2f}")


SCALES = ("whiten", "unit")
"""How a sensitivity basis's rows are scaled (``adapt``'s ``latent_basis_scale``): ``whiten`` by
:func:`whitening_scales`, ``unit`` not at all (the random basis's ``sqrt(F/d)`` for every row)."""


def check_scale(scale: str) -> None:
    """Raise :class:`ConfigError` unless ``scale`` is one of :data:`SCALES`."""
    if scale not in SCALES:
        raise ConfigError(f"latent_basis_scale must be one of {SCALES}, got {scale!r}")


def compute_latent_map(env, obs: np.ndarray, count: int, seed: int, scale: str = "whiten"):
    """A copy of ``env``'s projected :class:`~embodied_steer.dsrl.latent.LatentNoiseMap` with the
    sensitivity basis of its frozen policy, averaged over ``count`` of the agent observations ``obs``
    (``env``: a :class:`~embodied_steer.dsrl.wrapper.LatentNoiseEnv`), its rows scaled as ``scale``
    says (:data:`SCALES`); and the basis's summary.

    Raises:
        ConfigError: the latent is not projected, ``scale`` is unknown, or the policy reads cameras
            (the agent observations hold no images to re-run it on).
    """
    from embodied_steer.dsrl.latent import LatentNoiseMap
    from embodied_steer.dsrl.na import make_decoder

    latent = env.latent
    check_scale(scale)
    if latent.mode != "project":
        raise ConfigError(f"latent_basis=sensitivity needs latent_mode=project, got {latent.mode!r}")
    if env.policy.info.cameras:
        raise ConfigError(f"latent_basis=sensitivity re-runs the base policy on agent observations, which hold no "
                          f"images; policy '{env.policy.info.name}' reads cameras {list(env.policy.info.cameras)} "
                          "(use latent_basis=random)")
    decode = make_decoder(env.policy, env.features, env.execute_steps, env.instruction)
    states = basis_states(obs, count)
    rows, scales, summary = sensitivity_basis(decode, states, latent.spec.shape, int(latent.latent_dim), latent.bound,
                                              seed=seed)
    log.info("sensitivity basis from %d states: %s", len(states), describe(summary))
    return LatentNoiseMap(latent.spec, "project", latent.bound, latent.latent_dim, latent.seed, basis="sensitivity",
                          rows=rows, scales=scales if scale == "whiten" else None), summary
