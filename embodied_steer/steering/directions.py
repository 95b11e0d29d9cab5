"""Steering directions from contrasting activations: mean difference, EAST-style entropy weighting,
and the layer selection that keeps only layers where the two classes fall on opposite sides.

Inputs are pooled activations per module, ``{module: (N, d)}`` — e.g. from
:func:`~embodied_steer.steering.capture.record_activations` over observations of two kinds
(successful vs failed steps, "moving up" vs "moving down", careful vs hasty episodes).

* :func:`mean_difference` — ``μ_pos − μ_neg`` per module.
* :func:`entropy_weighted_difference` — EAST-style: each sample weighted by the entropy of the
  policy's action distribution at that step (:func:`action_entropy`; for a token policy the entropy
  of the action-token softmax), or by any per-sample weights, so that the uncertain decisions —
  where steering can change the outcome — dominate the direction.
  :func:`entropy_weighted_direction` is the single-class form of EAST (Rahn et al. 2024):
  ``Σ_i H_i (h_i − h̄) / Σ_i H_i``.
* :func:`select_layers` — keep modules where the two classes' mean projections onto the direction
  have opposite sign (the direction separates them through the origin, so adding it pushes one
  class toward the other); returns the projections too, for a report.
* :func:`save_directions` / :func:`load_directions` — ``{module: (d,)}`` in safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from embodied_steer.core.errors import ConfigError


def _as2d(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ConfigError(f"activations of '{name}' must be (N, d) with N >= 1, got {tuple(t.shape)}")
    return t


def _check_pair(pos: Mapping, neg: Mapping) -> list[str]:
    missing = set(pos) ^ set(neg)
    if missing:
        raise ConfigError(f"both classes need the same modules; only in one: {sorted(missing)}")
    return list(pos)


def _weights(w, n: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(w, dtype=torch.float32).flatten()
    if t.shape[0] != n:
        raise ConfigError(f"{what}: {t.shape[0]} weights for {n} samples")
    if not torch.isfinite(t).all() or (t < 0).any() or t.sum() <= 0:
        raise ConfigError(f"{what}: weights must be finite, >= 0 and not all 0")
    return t


def mean_difference(pos: Mapping[str, torch.Tensor], neg: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{module: mean(pos) − mean(neg)}`` (shape ``(d,)``)."""
    out = {}
    for name in _check_pair(pos, neg):
        p, q = _as2d(pos[name], name), _as2d(neg[name], name)
        if p.shape[1] != q.shape[1]:
            raise ConfigError(f"'{name}': classes have widths {p.shape[1]} and {q.shape[1]}")
        out[name] = p.mean(0) - q.mean(0)
    return out


def action_entropy(logits: torch.Tensor, *, reduce: str = "mean") -> torch.Tensor:
    """Entropy (nats) of the softmax over the last axis.

    ``logits`` ``(N, K)`` → ``(N,)``; ``(N, D, K)`` (one distribution per action dimension, e.g.
    OpenVLA's 7 action tokens over 256 bins) → reduced over ``D`` by ``"mean"`` or ``"sum"``.
    """
    logits = torch.as_tensor(logits, dtype=torch.float32)
    logp = torch.log_softmax(logits, dim=-1)
    h = -(logp.exp() * logp).sum(-1)
    if h.ndim == 2:
        h = h.mean(-1) if reduce == "mean" else h.sum(-1)
    elif h.ndim != 1:
        raise ConfigError(f"logits must be (N, K) or (N, D, K), got {tuple(logits.shape)}")
    return h


def entropy_weighted_difference(
    pos: Mapping[str, torch.Tensor],
    neg: Mapping[str, torch.Tensor],
    pos_weights,
    neg_weights,
) -> dict[str, torch.Tensor]:
    """``Σ w_i h_i / Σ w_i`` over ``pos`` minus the same over ``neg``, per module.

    Weights are per sample — entropies from :func:`action_entropy` (EAST) or any non-negative
    weights (e.g. a success-weighted variant).
    """
    out = {}
    for name in _check_pair(pos, neg):
        p, q = _as2d(pos[name], name), _as2d(neg[name], name)
        wp = _weights(pos_weights, p.shape[0], f"'{name}' positive class")
        wq = _weights(neg_weights, q.shape[0], f"'{name}' negative class")
        out[name] = (wp @ p) / wp.sum() - (wq @ q) / wq.sum()
    return out


def entropy_weighted_direction(acts: Mapping[str, torch.Tensor], weights) -> dict[str, torch.Tensor]:
    """Single-class EAST: ``Σ_i w_i (h_i − h̄) / Σ_i w_i`` with ``h̄`` the unweighted mean."""
    out = {}
    for name, a in acts.items():
        a = _as2d(a, name)
        w = _weights(weights, a.shape[0], f"'{name}'")
        out[name] = (w @ (a - a.mean(0))) / w.sum()
    return out


@dataclass
class LayerReport:
    """Mean projections of both classes onto a module's (unit) direction."""

    module: str
    pos_projection: float
    neg_projection: float
    kept: bool


def select_layers(
    directions: Mapping[str, torch.Tensor],
    pos: Mapping[str, torch.Tensor],
    neg: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[LayerReport]]:
    """Keep the modules where ``mean(pos @ d̂)`` and ``mean(neg @ d̂)`` have opposite sign.

    Returns ``(kept directions, one report per module)``.
    """
    kept, report = {}, []
    for name, d in directions.items():
        if name not in pos or name not in neg:
            raise ConfigError(f"no activations for module '{name}' to select on")
        d = torch.as_tensor(d, dtype=torch.float32)
        unit = d / d.norm().clamp_min(1e-12)
        a = float((_as2d(pos[name], name) @ unit).mean())
        b = float((_as2d(neg[name], name) @ unit).mean())
        ok = a * b < 0
        report.append(LayerReport(name, a, b, ok))
        if ok:
            kept[name] = d
    return kept, report


def save_directions(path: str | Path, directions: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``{module: (d,)}`` to a safetensors file (module names are the keys)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.as_tensor(v, dtype=torch.float32).contiguous() for k, v in directions.items()}, str(path),
              metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    return path


def load_directions(path: str | Path, modules: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Read a directions file (safetensors, ``.pt`` dict or ``.npz``); optionally only ``modules``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no directions file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        data = load_file(str(path))
    elif path.suffix == ".npz":
        import numpy as np

        with np.load(path) as z:
            data = {k: torch.as_tensor(z[k]) for k in z.files}
    else:
        data = dict(torch.load(path, map_location="cpu", weights_only=True))
    if modules is not None:
        missing = [m for m in modules if m not in data]
        if missing:
            raise ConfigError(f"directions file {path} has no entry for {missing} (has: {list(data)[:8]})")
        data = {m: data[m] for m in modules}
    return data
