"""The latent action of DSRL: a bounded vector that becomes the sampler's initial noise.

Three parameterisations, all mapping a latent ``w`` (the agent's action) to a noise batch of the
policy's declared :class:`~embodied_steer.core.policy.NoiseSpec` shape ``(H, D)``:

``full``     ``w`` has the noise shape itself, flattened to ``(H·D,)``; the map is a reshape.
``tile``     ``w`` has shape ``(D,)``; the same vector is used at every one of the ``H`` chunk steps.
             Needs a noise spec with at least 2 axes (``(horizon, dim)``).
``project``  ``w`` has shape ``(d,)`` with ``d`` chosen by the user; a fixed matrix with
             orthonormal rows lifts it to ``(H·D,)``, scaled by ``sqrt(H·D / d)`` so that
             ``w ~ N(0, I_d)`` gives noise entries of unit variance on average. The rows are a
             random basis (``basis="random"``, seeded) or given (``basis="sensitivity"``: the noise
             directions that move the executed actions most, computed from the frozen policy by
             :func:`~embodied_steer.dsrl.sensitivity.sensitivity_basis`, stored in full with the map,
             optionally with a scale per row).

Every adapter that declares the ``NOISE`` point supports all three: they only change what the
agent chooses, the sampler always receives a full ``(N, *noise_spec.shape)`` tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from embodied_steer.core.errors import ConfigError, NoiseBoundsError
from embodied_steer.core.policy import NoiseSpec

LatentMode = Literal["full", "tile", "project"]
MODES = ("full", "tile", "project")
BASES = ("random", "sensitivity")
"""Where a projected latent's rows come from (``adapt``'s ``latent_basis``)."""


def check_basis(basis: str) -> None:
    """Raise :class:`ConfigError` unless ``basis`` is one of :data:`BASES`."""
    if basis not in BASES:
        raise ConfigError(f"latent_basis must be one of {BASES}, got {basis!r}")


@dataclass
class LatentNoiseMap:
    """Turns latent actions ``(B, latent_dim)`` into sampler noise ``(B, *spec.shape)``.

    Attributes:
        spec: the policy's noise spec.
        mode: ``"full"``, ``"tile"`` or ``"project"``.
        bound: the box half-width ``b``; latents must lie in ``[-b, b]``.
        latent_dim: size of the latent (set from ``mode`` unless ``project``).
        seed: seed of the projection matrix (``project`` with ``basis="random"``).
        basis: ``"random"`` (rows drawn from ``seed``) or ``"sensitivity"`` (``rows`` given).
        rows: ``(latent_dim, H·D)`` orthonormal rows of the projection, required for
            ``basis="sensitivity"`` (unscaled; the map applies ``sqrt(H·D / d)``).
        scales: ``(latent_dim,)`` positive factors of the rows (given bases only; ``None``: all 1),
            so that latent entry ``i`` adds ``scales[i] · sqrt(H·D / d) · rows[i]`` to the noise.
    """

    spec: NoiseSpec
    mode: LatentMode = "full"
    bound: float = 1.5
    latent_dim: int | None = None
    seed: int = 0
    basis: str = "random"
    rows: torch.Tensor | np.ndarray | None = None
    scales: torch.Tensor | np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"latent mode must be one of {MODES}, got {self.mode!r}")
        if not (self.bound > 0 and math.isfinite(self.bound)):
            raise ConfigError(f"noise bound b must be a positive number, got {self.bound}")
        full = int(np.prod(self.spec.shape))
        self._projection: torch.Tensor | None = None
        if self.mode == "full":
            self.latent_dim = full
        elif self.mode == "tile":
            if len(self.spec.shape) < 2:
                raise ConfigError(f"latent mode 'tile' needs a (horizon, dim) noise shape, policy declares {self.spec.shape}")
            self.latent_dim = int(np.prod(self.spec.shape[1:]))
        else:
            if self.latent_dim is None or not 1 <= int(self.latent_dim) <= full:
                raise ConfigError(f"latent mode 'project' needs latent_dim in [1, {full}], got {self.latent_dim}")
            self.latent_dim = int(self.latent_dim)
            rows = self._project_rows(full) * math.sqrt(full / self.latent_dim)  # (d, full)
            self._projection = rows * self._row_scales()[:, None]
        if self.mode != "project" and (self.basis != "random" or self.rows is not None or self.scales is not None):
            raise ConfigError(f"latent_basis={self.basis!r} needs latent mode 'project', got {self.mode!r}")

    def _project_rows(self, full: int) -> torch.Tensor:
        """The ``(d, full)`` orthonormal rows of the projection (random from ``seed``, or ``rows`` checked)."""
        d = int(self.latent_dim)
        check_basis(self.basis)
        if self.basis == "random":
            if self.rows is not None:
                raise ConfigError("a random latent basis is drawn from its seed; rows were given as well")
            g = torch.Generator().manual_seed(int(self.seed))
            q, _ = torch.linalg.qr(torch.randn(full, d, generator=g))  # (full, d), orthonormal columns
            return q.T.contiguous()
        if self.rows is None:
            raise ConfigError(f"latent_basis={self.basis!r} needs its rows (a ({d}, {full}) matrix); none were given")
        rows = torch.as_tensor(np.asarray(self.rows, np.float32))
        if tuple(rows.shape) != (d, full):
            raise ConfigError(f"latent basis rows must have shape ({d}, {full}), got {tuple(rows.shape)}")
        if not torch.isfinite(rows).all():
            raise ConfigError("latent basis rows contain NaN or inf")
        err = float((rows @ rows.T - torch.eye(d)).abs().max())
        if err > 1e-3:
            raise ConfigError(f"latent basis rows must be orthonormal (max |R Rᵀ − I| = {err:.3g})")
        self.rows = rows.contiguous()
        return self.rows

    def _row_scales(self) -> torch.Tensor:
        d = int(self.latent_dim)
        if self.scales is None:
            return torch.ones(d)
        if self.basis == "random":
            raise ConfigError("a random latent basis has no per-row scales")
        scales = torch.as_tensor(np.asarray(self.scales, np.float32)).reshape(-1)
        if scales.shape != (d,) or not (torch.isfinite(scales).all() and (scales > 0).all()):
            raise ConfigError(f"latent basis scales must be {d} positive finite numbers, got {self.scales!r}")
        self.scales = scales
        return scales

    @property
    def projection_rows(self) -> torch.Tensor:
        """The ``(latent_dim, H·D)`` orthonormal rows of a projected latent (before any scale)."""
        if self._projection is None:
            raise ConfigError(f"latent mode {self.mode!r} has no projection")
        full = int(np.prod(self.spec.shape))
        return self._projection / math.sqrt(full / int(self.latent_dim)) / self._row_scales()[:, None]

    @property
    def shape(self) -> tuple[int]:
        return (int(self.latent_dim),)

    def check(self, latent: np.ndarray | torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
        """Validate a ``(B, latent_dim)`` or ``(latent_dim,)`` latent; return ``(B, latent_dim)`` float32."""
        w = torch.as_tensor(np.asarray(latent, dtype=np.float32) if not isinstance(latent, torch.Tensor) else latent,
                            dtype=torch.float32)
        if w.ndim == 1:
            w = w[None]
        if w.ndim != 2 or w.shape[1] != self.latent_dim:
            raise NoiseBoundsError(f"latent noise must have shape (B, {self.latent_dim}) or ({self.latent_dim},), "
                                   f"got {tuple(torch.as_tensor(latent).shape)}")
        if not torch.isfinite(w).all():
            raise NoiseBoundsError("latent noise contains NaN or inf")
        worst = float(w.abs().max())
        if worst > self.bound + tol:
            raise NoiseBoundsError(f"latent noise outside the box [-{self.bound}, {self.bound}]: max |w| = {worst:.4f}")
        return w.clamp(-self.bound, self.bound)

    def to_noise(self, latent: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` latent → ``(B, *spec.shape)`` sampler noise (checked against the box)."""
        w = self.check(latent)
        if self.mode == "full":
            flat = w
        elif self.mode == "tile":
            flat = w[:, None, :].expand(w.shape[0], self.spec.shape[0], w.shape[1]).reshape(w.shape[0], -1)
        else:
            flat = w @ self._projection
        return flat.reshape(w.shape[0], *self.spec.shape).contiguous()

    def describe(self) -> dict[str, object]:
        """The map's settings without a given basis's rows (what logs and policy info show)."""
        return {"mode": self.mode, "bound": float(self.bound), "latent_dim": int(self.latent_dim), "seed": int(self.seed),
                "basis": self.basis, "noise_shape": list(self.spec.shape), "action_dims": int(self.spec.action_dims)}

    def to_dict(self) -> dict[str, object]:
        """Everything :meth:`from_dict` needs to rebuild the map (a given basis's rows as nested lists)."""
        out = self.describe()
        if self.basis != "random":
            out["rows"] = [[float(x) for x in row] for row in self.rows.tolist()]
        if self.scales is not None:
            out["scales"] = [float(x) for x in self.scales.tolist()]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "LatentNoiseMap":
        spec = NoiseSpec(tuple(int(x) for x in d["noise_shape"]), int(d["action_dims"]))
        rows, scales = d.get("rows"), d.get("scales")
        return cls(spec, mode=d["mode"], bound=float(d["bound"]),
                   latent_dim=int(d["latent_dim"]) if d["mode"] == "project" else None, seed=int(d["seed"]),
                   basis=str(d.get("basis", "random")), rows=None if rows is None else np.asarray(rows, np.float32),
                   scales=None if scales is None else np.asarray(scales, np.float32))
