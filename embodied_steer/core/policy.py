"""The one policy interface every capability is written against.

A :class:`SteerablePolicy` turns observations into action chunks and declares which of the four
*intervention points* it supports:

=====================  ==========================================================================
``ACTIVATIONS``        :meth:`SteerablePolicy.modules` names the network's modules (vision tower,
                       language-model layers and their MLPs, action expert) for forward hooks.
``NOISE``              the sampler's initial noise can be passed in (:attr:`noise_spec` gives its
                       shape per sample); with the same noise the same actions come out.
``DENOISING_STEP``     a :data:`DenoiseCallback` sees every denoising step of a particle batch and
                       may change the model output (ε or velocity) or resample the particles.
``SAMPLES``            :meth:`sample` draws ``N`` action chunks for one observation.
=====================  ==========================================================================

Capabilities check the declaration up front (:meth:`require`) and raise
:class:`~embodied_steer.core.errors.UnsupportedIntervention` with the policy's name otherwise.

Data flows one way: :class:`Observation` → policy (+ interventions) → :class:`ActionChunk`.
"""

from __future__ import annotations

import abc
import collections
import enum
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from embodied_steer.core.errors import ActionError, UnsupportedIntervention
from embodied_steer.core.types import ActionBounds, ActionChunk, ActionSamples, Observation


class InterventionPoint(str, enum.Enum):
    """The four places where a capability can reach into a policy."""

    ACTIVATIONS = "activations"
    NOISE = "noise"
    DENOISING_STEP = "denoising_step"
    SAMPLES = "samples"


@dataclass(frozen=True)
class NoiseSpec:
    """Shape of the initial noise of one sample, e.g. ``(horizon, noise_dim)``.

    Attributes:
        shape: per-sample noise shape (no batch dimension).
        action_dims: how many leading entries of the last axis map to real action dimensions
            (Pi0 pads actions to 32 dims; the rest of the noise is ignored by the decoder).
        distribution: the prior the sampler was trained with.
    """

    shape: tuple[int, ...]
    action_dims: int
    distribution: Literal["standard_normal"] = "standard_normal"

    def check(self, noise: torch.Tensor) -> torch.Tensor:
        """Validate a ``(N, *shape)`` noise batch; raise ``ValueError`` naming the mismatch."""
        if not isinstance(noise, torch.Tensor):
            noise = torch.as_tensor(np.asarray(noise), dtype=torch.float32)
        if noise.ndim != len(self.shape) + 1 or tuple(noise.shape[1:]) != tuple(self.shape):
            raise ValueError(f"noise must have shape (N, {', '.join(map(str, self.shape))}), got {tuple(noise.shape)}")
        if not torch.isfinite(noise).all():
            raise ValueError("noise contains NaN or inf")
        return noise


@dataclass
class DenoiseStep:
    """What a :data:`DenoiseCallback` sees at one denoising step of a batch of ``K`` particles.

    All tensors are ``(K, T, D)`` in the policy's *normalised* action space (the space the
    sampler works in). Use :attr:`to_actions` — differentiable — to map a sample into environment
    units ``(K, T, D_action)`` when a reward speaks about real actions.

    Attributes:
        index: step number, 0 for the first (noisiest) step.
        num_steps: total number of denoising steps.
        t: the sampler's time: a diffusion timestep (``num_train_timesteps``-1 … 0) or flow time
            (1 = noise … 0 = data, LeRobot's Pi0 convention).
        x: the current noisy sample.
        model_output: the network's prediction at this step (ε for diffusion, velocity for flow).
        prediction: what ``model_output`` is: ``"epsilon"``, ``"velocity"`` or ``"sample"``.
        x0: the predicted clean sample implied by ``x`` and ``model_output``.
        alpha_bar: diffusion only: cumulative ᾱ at ``t`` (``None`` for flow).
        to_actions: differentiable map from a normalised chunk to environment units.
    """

    index: int
    num_steps: int
    t: float
    x: torch.Tensor
    model_output: torch.Tensor
    prediction: Literal["epsilon", "velocity", "sample"]
    x0: torch.Tensor
    alpha_bar: float | None
    to_actions: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StepEdit:
    """A callback's answer: a replaced model output and/or particle indices to resample.

    Attributes:
        model_output: ``(K, T, D)`` to use instead of the network's output, or ``None``.
        resample: ``(K,)`` long indices; particle ``i`` continues from particle ``resample[i]``
            (applied after the step), or ``None``.
    """

    model_output: torch.Tensor | None = None
    resample: torch.Tensor | None = None

    def checked_model_output(self, like: torch.Tensor) -> torch.Tensor:
        """``model_output`` detached, on ``like``'s device and dtype.

        Raises ``ValueError`` on a shape mismatch and :class:`ActionError` on NaN / inf."""
        value = torch.as_tensor(self.model_output).detach().to(device=like.device, dtype=like.dtype)
        if value.shape != like.shape:
            raise ValueError(f"StepEdit.model_output must have shape {tuple(like.shape)}, got {tuple(value.shape)}")
        if not torch.isfinite(value).all():
            raise ActionError("denoise callback returned a StepEdit.model_output with NaN or inf")
        return value

    def checked_resample(self, n: int) -> torch.Tensor:
        """``resample`` as ``(n,)`` long indices in ``[0, n)``; ``ValueError`` otherwise."""
        indices = torch.as_tensor(self.resample, dtype=torch.long).flatten()
        if indices.shape[0] != n or bool(((indices < 0) | (indices >= n)).any()):
            raise ValueError(f"StepEdit.resample must hold {n} indices in [0, {n}), got {indices.tolist()}")
        return indices


DenoiseCallback = Callable[[DenoiseStep], "StepEdit | None"]


@dataclass
class PolicyInfo:
    """Static facts about a policy that runners and capabilities need."""

    name: str
    chunk_size: int
    """Actions produced per inference call (the model's horizon, after trimming)."""
    execute_steps: int
    """How many actions of a chunk a runner executes before asking again (receding horizon)."""
    action_bounds: ActionBounds | None
    state_dim: int | None = None
    env_state_dim: int | None = None
    """Size of the privileged object state the policy reads (None: it reads none)."""
    cameras: tuple[str, ...] = ()
    uses_instruction: bool = False
    extra: dict[str, object] = field(default_factory=dict)


class SteerablePolicy(abc.ABC):
    """Base class of every policy adapter.

    Subclasses implement :meth:`_generate` (and :meth:`modules` / :attr:`noise_spec` when they
    declare those points) and set :attr:`interventions`. Public methods validate arguments against
    the declaration so that every adapter fails the same way.

    Policies that condition on several past observations keep them in a history of length
    :attr:`history_length`: runners call :meth:`observe` at every environment step and :meth:`act`
    when they need a new chunk (which observes too).
    """

    interventions: frozenset[InterventionPoint] = frozenset()
    history_length: int = 1

    def __init__(self, info: PolicyInfo, seed: int = 0) -> None:
        self.info = info
        self._history: collections.deque[Observation] = collections.deque(maxlen=self.history_length)
        self.generator = torch.Generator().manual_seed(seed)
        """Source of the sampler noise that is not passed in (re-seeded by ``reset(seed=...)``)."""

    # ------------------------------------------------------------------ declaration
    def supports(self, point: InterventionPoint) -> bool:
        return point in self.interventions

    def require(self, point: InterventionPoint, by: str = "this capability") -> None:
        """Raise :class:`UnsupportedIntervention` unless ``point`` is declared."""
        if point not in self.interventions:
            have = ", ".join(sorted(p.value for p in self.interventions)) or "none"
            raise UnsupportedIntervention(
                f"{by} needs the '{point.value}' intervention point, but policy '{self.info.name}' "
                f"({type(self).__name__}) supports only: {have}"
            )

    # ------------------------------------------------------------------ episode state
    def reset(self, seed: int | None = None) -> None:
        """Forget the observation history (call at the start of every episode).

        With ``seed``, also re-seed :attr:`generator`, so that an episode's sampled actions depend
        only on its own seed, not on the episodes run before it (a resumed evaluation then gives
        the same results as an uninterrupted one).
        """
        self._history.clear()
        if seed is not None:
            self.generator.manual_seed(int(seed))

    def observe(self, obs: Observation) -> None:
        """Record an observation without acting (for policies that look at several past steps)."""
        self._history.append(obs.validate())

    def history(self) -> list[Observation]:
        """The last :attr:`history_length` observations, oldest first, padded with the oldest."""
        if not self._history:
            raise RuntimeError(f"policy '{self.info.name}' has no observation yet: call act(obs) or observe(obs)")
        items = list(self._history)
        return [items[0]] * (self.history_length - len(items)) + items

    # ------------------------------------------------------------------ acting
    def act(
        self,
        obs: Observation,
        *,
        noise: torch.Tensor | None = None,
        denoise_callback: DenoiseCallback | None = None,
        num_particles: int = 1,
        select: Callable[[torch.Tensor], int] | None = None,
    ) -> ActionChunk:
        """Observe ``obs`` and return one action chunk ``(T, D_action)`` in environment units.

        Args:
            obs: the current observation.
            noise: initial noise ``(num_particles, *noise_spec.shape)`` (needs ``NOISE``).
            denoise_callback: called at every denoising step (needs ``DENOISING_STEP``).
            num_particles: how many particles the sampler runs side by side.
            select: picks the particle to return from the final ``(K, T, D_action)`` batch
                (default: particle 0).
        """
        self.observe(obs)
        samples = self.generate(num_particles, noise=noise, denoise_callback=denoise_callback)
        index = 0 if select is None else int(select(torch.as_tensor(samples.actions)))
        if not 0 <= index < len(samples):
            raise ValueError(f"select returned particle {index}, but there are {len(samples)}")
        return ActionChunk(samples.actions[index], samples.bounds, {"particle": index, "num_particles": len(samples)})

    def sample(self, obs: Observation, n: int, *, noise: torch.Tensor | None = None) -> ActionSamples:
        """Draw ``n`` action chunks ``(n, T, D_action)`` for the same observation (needs ``SAMPLES``)."""
        self.require(InterventionPoint.SAMPLES, "sample()")
        self.observe(obs)
        return self.generate(n, noise=noise)

    def generate(
        self,
        n: int,
        *,
        noise: torch.Tensor | None = None,
        denoise_callback: DenoiseCallback | None = None,
    ) -> ActionSamples:
        """Run the model on the current history for ``n`` particles; see :meth:`act`."""
        if n < 1:
            raise ValueError(f"number of samples/particles must be >= 1, got {n}")
        if n > 1 and not (self.supports(InterventionPoint.SAMPLES) or self.supports(InterventionPoint.DENOISING_STEP)):
            self.require(InterventionPoint.SAMPLES, f"drawing {n} samples")
        if noise is not None:
            self.require(InterventionPoint.NOISE, "passing initial noise")
            noise = self.noise_spec.check(noise)
            if noise.shape[0] != n:
                raise ValueError(f"noise batch has {noise.shape[0]} samples but {n} were requested")
        if denoise_callback is not None:
            self.require(InterventionPoint.DENOISING_STEP, "a denoising-step callback")
        actions = self._generate(self.history(), n, noise, denoise_callback)
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[0] != n:
            raise ActionError(f"policy '{self.info.name}' returned actions of shape {actions.shape}, expected ({n}, T, D)")
        if not np.all(np.isfinite(actions)):
            raise ActionError(f"policy '{self.info.name}' produced NaN or inf actions")
        return ActionSamples(actions, self.info.action_bounds)

    @abc.abstractmethod
    def _generate(
        self,
        history: Sequence[Observation],
        n: int,
        noise: torch.Tensor | None,
        denoise_callback: DenoiseCallback | None,
    ) -> np.ndarray:
        """Return ``(n, T, D_action)`` actions in environment units for the given history."""

    # ------------------------------------------------------------------ intervention points
    def modules(self) -> dict[str, nn.Module]:
        """Named modules for forward hooks (``ACTIVATIONS``)."""
        self.require(InterventionPoint.ACTIVATIONS, "modules()")
        raise NotImplementedError  # pragma: no cover - adapters that declare it override

    @property
    def noise_spec(self) -> NoiseSpec:
        """Per-sample shape of the sampler's initial noise (``NOISE``)."""
        self.require(InterventionPoint.NOISE, "noise_spec")
        raise NotImplementedError  # pragma: no cover

    def __repr__(self) -> str:
        points = ",".join(sorted(p.value for p in self.interventions))
        return f"{type(self).__name__}(name={self.info.name!r}, interventions=[{points}])"
