"""DSRL-NA (noise-aliased DSRL), in plain torch.

Why not SB3: NA has two critics over *different* spaces — an action-space critic ``Q_A(s, a)``
trained by TD on executed action chunks, and a noise-space critic ``Q_W(s, w)`` distilled from
``Q_A`` through the frozen sampler ``a = π_dp(s, w)`` — and its targets need the base policy run on
minibatches. SB3's ``SAC.train`` is one fixed actor/critic update with no hook for a second critic
or for a non-learned decoder between actor and critic, so it cannot express this.

One update (all networks are LayerNorm MLPs; the ``Q`` ensembles use a min over members):

1. ``Q_A`` TD on executed chunks ``a`` (so offline ``(s, a, r, s')`` data with unknown noise
   trains it as well), ``R`` and ``γ^n`` being the chunk's discounted return and discount
   (:class:`~embodied_steer.dsrl.wrapper.LatentNoiseEnv`), with one of two backups:

   * ``backup="action"`` (the paper's): ``y = R + γ^n (1 − terminal) · min_i Q̄_A,i(s', π_dp(s', w'))``,
     ``w' ~ π_W(·|s')`` — decodes the next noise through the base policy, so the TD minibatch is
     limited to ``decode_batch``;
   * ``backup="noise"``: ``y = R + γ^n (1 − terminal) · min_i Q̄_W,i(s', w')`` — the distilled
     noise critic stands in for ``Q_A ∘ π_dp``, which it is trained to equal; no decode, so the TD
     minibatch can be the full ``batch_size`` on a CPU.
2. ``Q_W`` distillation on ``decode_batch`` states of the minibatch: ``w ~ N(0, I)`` clipped to the
   box (a ``distill_actor_share`` of them drawn from ``π_W`` instead, so that ``Q_W`` is also fitted
   where the actor acts — with ``N(0, I)`` alone a 112-dim actor can drift to the box's corners,
   where ``Q_W`` only extrapolates), ``Σ_i (Q_W,i(s, w) − min_j Q_A,j(s, π_dp(s, w)))²``.
3. actor: ``α log π_W(w|s) − min_i Q_W,i(s, w)``, ``w ~ π_W`` (reparameterised, ``b · tanh``);
   with ``prior="base"`` the entropy term becomes ``α (log π_W(w|s) − log N(w; 0, I))``, i.e. a
   KL penalty towards the base policy's own noise, at a fixed ``α``.
4. temperature (``prior="none"`` only): ``−log α · (log π + H̄)``, ``H̄ = −latent_dim`` unless set.
5. Polyak updates of ``Q̄_A`` and ``Q̄_W``.

The decodes through the base policy (step 2, and step 1 with the action backup) are the expensive
part on CPU.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from embodied_steer.core.errors import ConfigError
from embodied_steer.core.policy import SteerablePolicy
from embodied_steer.core.types import Observation
from embodied_steer.dsrl.features import ObsFeatures
from embodied_steer.dsrl.latent import LatentNoiseMap
from embodied_steer.dsrl.networks import CriticEnsemble, NoiseActor, choose_latent
from embodied_steer.dsrl.shaping import shape_rows

log = logging.getLogger("embodied_steer.dsrl")

Decoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(obs (B, D_obs), noise (B, *noise_shape)) → executed chunk (B, k·D_action)``, no gradient."""


# =========================================================================== decoding through the frozen sampler
def make_decoder(policy: SteerablePolicy, features: ObsFeatures, execute_steps: int, instruction: str = "") -> Decoder:
    """A batched ``(obs, noise) → actions`` map through ``policy``'s deterministic sampler.

    The agent observation is turned back into the policy's observation history
    (:meth:`ObsFeatures.to_observations`), so this works for policies that read only ``state`` /
    ``env_state``; policies with cameras are refused (their images are not in the replay buffer).
    LeRobot's DiffusionPolicy gets a fully batched path (one U-Net pass per denoising step for the
    whole minibatch), so does any policy with a ``generate_batched(histories, noise) -> (B, T, D)``
    method; other adapters are decoded sample by sample.
    """
    if policy.info.cameras:
        raise ConfigError(f"DSRL-NA re-runs the base policy on replayed observations, which hold no images; "
                          f"policy '{policy.info.name}' reads cameras {list(policy.info.cameras)} (use dsrl_sac)")
    from embodied_steer.adapters.lerobot_diffusion import LeRobotDiffusionPolicy

    def histories(obs: torch.Tensor) -> list[list[Observation]]:
        return [features.to_observations(o, instruction) for o in obs.cpu().numpy()]

    if isinstance(policy, LeRobotDiffusionPolicy):

        @torch.no_grad()
        def decode(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            batches = [policy._batch(h, 1) for h in histories(obs)]
            batch = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
            model = policy.policy.diffusion
            sample = policy._denoise(noise.float(), model._prepare_global_conditioning(batch), None)
            start = int(policy.policy.config.n_obs_steps) - 1
            chunk = policy.postprocessor(sample[:, start : start + int(policy.policy.config.n_action_steps)])
            return torch.as_tensor(chunk)[:, :execute_steps].reshape(obs.shape[0], -1).float()

        return decode

    if hasattr(policy, "generate_batched"):

        @torch.no_grad()
        def decode_batched(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            chunk = torch.as_tensor(policy.generate_batched(histories(obs), noise))
            return chunk[:, :execute_steps].reshape(obs.shape[0], -1).float()

        return decode_batched

    @torch.no_grad()
    def decode_each(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = []
        for h, w in zip(histories(obs), noise):
            out.append(torch.as_tensor(policy._generate(h, 1, w[None], None))[0, :execute_steps].reshape(-1))
        return torch.stack(out).float()

    return decode_each


# =========================================================================== replay
class ChunkReplay:
    """Fixed-capacity replay of chunk transitions ``(s, a_exec, R, γ^n, terminal, s', G)``.

    ``a_exec`` is the executed chunk flattened to ``(k·D_action,)`` (zero-padded when the episode
    ended inside the chunk). ``G`` is the transition's Monte-Carlo return (the discounted return of
    the rest of its episode), known only once that episode has *terminated*; it stays NaN for an
    episode still running or one cut by a time limit (:func:`episode_returns`). Saved as one ``.npz``.
    """

    FIELDS = ("obs", "action", "reward", "discount", "terminal", "next_obs", "mc_return")

    def __init__(self, capacity: int, obs_dim: int, action_dim: int) -> None:
        self.capacity = int(capacity)
        self.data = {
            "obs": np.zeros((capacity, obs_dim), np.float32), "action": np.zeros((capacity, action_dim), np.float32),
            "reward": np.zeros(capacity, np.float32), "discount": np.zeros(capacity, np.float32),
            "terminal": np.zeros(capacity, np.float32), "next_obs": np.zeros((capacity, obs_dim), np.float32),
            "mc_return": np.full(capacity, np.nan, np.float32),
        }
        self.size = 0
        self.pos = 0

    def add(self, obs, action, reward, discount, terminal, next_obs, mc_return: float = float("nan")) -> int:
        """Store one transition; return its slot (for :meth:`set_mc_returns` once the episode ends)."""
        row = dict(obs=obs, action=action, reward=reward, discount=discount, terminal=terminal, next_obs=next_obs,
                   mc_return=mc_return)
        slot = self.pos
        for k in self.FIELDS:
            self.data[k][slot] = row[k]
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return slot

    def set_mc_returns(self, slots: Sequence[int], returns: np.ndarray) -> None:
        """Fill in the Monte-Carlo returns of an episode's transitions (``slots`` in episode order)."""
        self.data["mc_return"][np.asarray(slots, int)] = returns

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        idx = rng.integers(0, self.size, size=n)
        return {k: torch.as_tensor(v[idx]) for k, v in self.data.items()}

    def save(self, path: Path) -> None:
        np.savez(path, size=self.size, pos=self.pos, **{k: v[: self.size] for k, v in self.data.items()})

    def load(self, path: Path) -> None:
        with np.load(path) as z:
            self.size, self.pos = int(z["size"]), int(z["pos"])
            for k in self.FIELDS:
                if k in z:  # buffers saved before Monte-Carlo returns were kept have none (NaN: unknown)
                    self.data[k][: self.size] = z[k]


def episode_returns(rewards: np.ndarray, discounts: np.ndarray, terminated: bool) -> np.ndarray:
    """Monte-Carlo returns ``G_i = R_i + γ^{n_i} G_{i+1}`` of one episode's chunk transitions.

    ``rewards`` and ``discounts`` are the chunks' ``R`` and ``γ^n`` in order. Only an episode that
    *terminated* has a known return; one cut by a time limit (or still running) gets NaN, because
    what it would have earned after the cut is unknown.
    """
    out = np.full(len(rewards), np.nan, np.float32)
    if not terminated:
        return out
    g = 0.0
    for i in reversed(range(len(rewards))):
        g = float(rewards[i]) + (float(discounts[i]) * g if i < len(rewards) - 1 else 0.0)
        out[i] = g
    return out


def acts_with_deployed_latent(seed: int, episode: int, share: float) -> bool:
    """Whether training episode ``episode`` acts with the deployed latent instead of a sample.

    A fixed function of ``(seed, episode)``, so a resumed run makes the same choice for the same
    episode and ``share = 0`` draws nothing (runs without the option are unchanged).
    """
    if share <= 0.0:
        return False
    return bool(np.random.default_rng([int(seed), int(episode), 0x5EED]).random() < share)


def pad_chunk(executed: np.ndarray, k: int, action_dim: int) -> np.ndarray:
    """``(n, D)`` executed actions, ``n ≤ k`` → ``(k·D,)`` zero-padded."""
    out = np.zeros((k, action_dim), np.float32)
    out[: len(executed)] = executed
    return out.reshape(-1)


# =========================================================================== the learner
NA_BACKUPS = ("action", "noise")
NA_PRIORS = ("none", "base")
NA_ACTOR_INITS = ("default", "zero_mean")


@dataclass
class NASettings:
    """DSRL-NA hyper-parameters.

    ``batch_size`` is the minibatch of TD, actor and temperature; ``decode_batch`` (≤ ``batch_size``)
    the states decoded through the base policy per update (distillation, and the TD target with
    the ``"action"`` backup, whose TD minibatch is then ``decode_batch`` as well).
    """

    hidden: Sequence[int] = (256, 256)
    lr: float = 3e-4
    batch_size: int = 64
    decode_batch: int | None = None
    backup: str = "action"
    distill_actor_share: float = 0.0
    """Share of the distillation noise drawn from the actor instead of ``N(0, I)``."""
    tau: float = 0.005
    n_critics: int = 2
    layernorm: bool = True
    init_temperature: float = 1.0
    target_entropy: float | None = None
    """Entropy the temperature is tuned towards; ``None``: ``-latent_dim`` (SAC's default)."""
    prior: str = "none"
    """``"none"``: SAC's entropy bonus, temperature tuned automatically; ``"base"``: the actor pays
    ``α · KL(π_W(·|s) ‖ N(0, I))`` — the base policy's own noise — with ``α`` fixed at
    ``init_temperature``, so it leaves the noise the base policy was trained on only where the
    critic says it pays."""
    mc_bound: bool = False
    """Floor the TD target of ``Q_A`` at the transition's Monte-Carlo return where it is known
    (episodes that terminated): ``y = max(y_TD, G)``. With a sparse success reward TD alone carries
    the reward back one chunk per target-network time constant, far too slowly for a few thousand
    updates; ``G`` is the return of a policy that was actually run, so in expectation it is a lower
    bound on the optimal value (exactly so in a deterministic environment)."""
    mc_mix: float = 0.0
    """Mix the Monte-Carlo return into ``Q_A``'s TD target where it is known:
    ``y = (1 − λ) y_TD + λ G``. Unlike the floor (``mc_bound``), which keeps the best return ever
    seen from a chunk and so values the first chunks of failed episodes like successful ones, the
    mix averages the returns of the policy that acted, failures included (an on-policy estimate,
    not a bound)."""
    critic_utd: int = 1
    """TD steps of ``Q_A`` per update (each on its own minibatch); the extra ones are cheap with
    ``backup="noise"`` (no decode)."""
    actor_lr: float | None = None
    """Learning rate of the actor alone (``None``: ``lr``): how fast the actor follows ``∇_w Q_W``
    while the critics keep learning at ``lr``. Not proportionally slower: Adam moves each weight by
    about the rate, and the mean head sums a few hundred of them, so on Lift a 10× smaller rate still
    took the deterministic latent to norm 1.8 (2.3 at 3e-4) within 3k steps and cut its move between
    evaluations by about a quarter (benchmarks/RESULTS.md)."""
    actor_init: str = "default"
    """``"default"``: the actor's mean head keeps PyTorch's random initialisation, so before any
    update its deterministic latent is an arbitrary state-dependent noise; ``"zero_mean"``: the
    mean head starts at zero weights and bias, so the untrained actor's mean is the zero latent —
    the base policy's mean path — and its samples are centred on it."""
    critic_dropout: float = 0.0
    """Dropout rate of ``Q_A``'s hidden units (and of its target network, as in DroQ), active
    whenever ``Q_A`` is evaluated during training. ``Q_A`` takes several TD steps per chunk
    (``critic_utd``) on a replay of a few hundred episodes; on Lift, with the Monte-Carlo mix, it
    ranked its own replay's successes and failures perfectly from the first chunk (AUC 1.00) and, in
    one of two runs, unseen episodes of the deployed actor no better than chance
    (benchmarks/RESULTS.md) — it had memorised which episode each start came from. ``Q_W`` is
    distilled on fresh noise and keeps no dropout."""
    actor_ema: float = 0.0
    """Deploy a Polyak average of the actor's weights instead of the actor itself: after each actor
    step ``θ̄ ← (1 − ρ) θ̄ + ρ θ`` with ``ρ = actor_ema`` (0: off, the deployed actor is the trained
    one). The trained actor's deterministic latent swings between evaluations (benchmarks/RESULTS.md);
    the average over the last ~1/ρ updates is what evaluation, the exported adapter and the
    deployed-latent training episodes act with, while exploration keeps sampling the trained actor."""
    actor_ema_warmup: bool = False
    """With ``actor_ema``: average the actor's first updates equally, ``ρ_n = max(ρ, 1/(n+1))`` at
    the n-th averaged update (n from 0), so that the average is the plain mean of every actor so far
    until ``n = 1/ρ`` and the exponential average from there. Without it the average starts at
    the random initial actor and keeps ``(1 − ρ)^n`` of it (61 % after 250 updates at ρ = 0.002)."""


def check_mc_target(mc_bound: bool, mc_mix: float | str) -> None:
    """Check how ``Q_A``'s target uses the Monte-Carlo return (``na_mc_bound``, ``na_mc_mix``).

    Raises:
        ConfigError: ``mc_mix`` is not a number in [0, 1], or both the floor and the mix are set.
    """
    if not (isinstance(mc_mix, (int, float)) and 0.0 <= float(mc_mix) <= 1.0):
        raise ConfigError(f"na_mc_mix must be a number in [0, 1], got {mc_mix!r}")
    if mc_mix > 0 and mc_bound:
        raise ConfigError("na_mc_mix and na_mc_bound are two uses of the same Monte-Carlo return: set one "
                          "(na_mc_bound=false for the mix)")


def check_ema_warmup(warmup: object, actor_ema: float) -> None:
    """Check ``na_actor_ema_warmup``: a boolean, and true only with an average to warm up.

    Raises:
        ConfigError: ``warmup`` is not a boolean, or is true while ``actor_ema`` is 0.
    """
    if not isinstance(warmup, bool):
        raise ConfigError(f"na_actor_ema_warmup must be true or false, got {warmup!r}")
    if warmup and not actor_ema > 0:
        raise ConfigError("na_actor_ema_warmup=true needs na_actor_ema > 0 (there is no average to warm up)")


def check_rate(name: str, value: float | str, zero_means: str) -> None:
    """Check a DSRL-NA setting that must be a number in [0, 1), 0 meaning ``zero_means``
    (``na_actor_ema``, ``na_critic_dropout``).

    Raises:
        ConfigError: naming ``name``, when ``value`` is not such a number.
    """
    if not (isinstance(value, (int, float)) and 0.0 <= float(value) < 1.0):
        raise ConfigError(f"{name} must be a number in [0, 1) (0: {zero_means}), got {value!r}")


def actor_learning_rate(lr: float, actor_lr: float | str | None) -> float:
    """The DSRL-NA actor's learning rate: ``actor_lr`` (``na_actor_lr``), or ``lr`` when it is ``None``.

    Raises:
        ConfigError: ``actor_lr`` is not a positive finite number.
    """
    if actor_lr is None:
        return float(lr)
    try:
        rate = float(actor_lr)
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"na_actor_lr must be a positive number (or null for lr), got {actor_lr!r}")
    return rate


class DSRLNA:
    """Networks, optimisers and the update of DSRL-NA (see the module docstring)."""

    def __init__(self, obs_dim: int, chunk_dim: int, latent: LatentNoiseMap, decode: Decoder, settings: NASettings,
                 seed: int = 0) -> None:
        if int(settings.critic_utd) < 1:
            raise ConfigError(f"na_critic_utd must be >= 1, got {settings.critic_utd}")
        check_mc_target(settings.mc_bound, settings.mc_mix)
        check_rate("na_actor_ema", settings.actor_ema, "deploy the trained actor")
        check_ema_warmup(settings.actor_ema_warmup, settings.actor_ema)
        check_rate("na_critic_dropout", settings.critic_dropout, "no dropout")
        if not 0.0 <= settings.distill_actor_share <= 1.0:
            raise ConfigError(f"na_distill_actor_share must be in [0, 1], got {settings.distill_actor_share}")
        if settings.prior not in NA_PRIORS:
            raise ConfigError(f"na_prior must be one of {NA_PRIORS}, got {settings.prior!r}")
        if settings.backup not in NA_BACKUPS:
            raise ConfigError(f"na_backup must be one of {NA_BACKUPS}, got {settings.backup!r}")
        if settings.actor_init not in NA_ACTOR_INITS:
            raise ConfigError(f"na_actor_init must be one of {NA_ACTOR_INITS}, got {settings.actor_init!r}")
        actor_lr = actor_learning_rate(settings.lr, settings.actor_lr)
        torch.manual_seed(seed)
        self.s = settings
        self.decode_batch = int(settings.decode_batch or settings.batch_size)
        self.latent = latent
        self.decode = decode
        d = int(latent.latent_dim)
        h = list(settings.hidden)
        self.actor = NoiseActor(obs_dim, d, h, latent.bound, settings.layernorm)
        if settings.actor_init == "zero_mean":
            with torch.no_grad():  # after construction, so every other network draws the same weights
                self.actor.mu.weight.zero_()
                self.actor.mu.bias.zero_()
        # The deployed actor: the trained one, or (actor_ema > 0) a Polyak average of its weights.
        self.deployed_actor = self.actor
        if settings.actor_ema > 0:
            self.deployed_actor = NoiseActor(obs_dim, d, h, latent.bound, settings.layernorm)
            self.deployed_actor.load_state_dict(self.actor.state_dict())
            self.deployed_actor.requires_grad_(False)
        self.ema_updates = 0  # actor steps averaged into deployed_actor (the warm-up's n)
        drop = float(settings.critic_dropout)
        self.q_a = CriticEnsemble(obs_dim, chunk_dim, h, settings.n_critics, settings.layernorm, drop)
        self.q_a_target = CriticEnsemble(obs_dim, chunk_dim, h, settings.n_critics, settings.layernorm, drop)
        self.q_a_target.load_state_dict(self.q_a.state_dict())
        self.q_a_target.requires_grad_(False)
        self.q_w = CriticEnsemble(obs_dim, d, h, settings.n_critics, settings.layernorm)
        self.q_w_target = CriticEnsemble(obs_dim, d, h, settings.n_critics, settings.layernorm)
        self.q_w_target.load_state_dict(self.q_w.state_dict())
        self.q_w_target.requires_grad_(False)
        self.log_alpha = torch.full((1,), math.log(settings.init_temperature), requires_grad=True)
        self.target_entropy = -float(d) if settings.target_entropy is None else float(settings.target_entropy)
        self.opt = {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=actor_lr),
            "q_a": torch.optim.Adam(self.q_a.parameters(), lr=settings.lr),
            "q_w": torch.optim.Adam(self.q_w.parameters(), lr=settings.lr),
            "alpha": torch.optim.Adam([self.log_alpha], lr=settings.lr),
        }
        self.generator = torch.Generator().manual_seed(seed)

    def networks(self) -> dict[str, nn.Module]:
        nets = {"actor": self.actor, "q_a": self.q_a, "q_a_target": self.q_a_target, "q_w": self.q_w,
                "q_w_target": self.q_w_target}
        if self.deployed_actor is not self.actor:
            nets["actor_ema"] = self.deployed_actor
        return nets

    def _noise(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent.to_noise(latent.clamp(-self.latent.bound, self.latent.bound))

    def critic_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """TD loss of the action-space critic on executed chunks (step 1)."""
        if self.s.backup == "action":
            batch = {k: v[: self.decode_batch] for k, v in batch.items()}
        with torch.no_grad():
            w_next, _ = self.actor(batch["next_obs"])
            if self.s.backup == "action":
                a_next = self.decode(batch["next_obs"], self._noise(w_next))
                q_next = self.q_a_target(batch["next_obs"], a_next).min(0).values
            else:
                q_next = self.q_w_target(batch["next_obs"], w_next).min(0).values
            y = batch["reward"] + batch["discount"] * (1 - batch["terminal"]) * q_next
            if self.s.mc_bound and "mc_return" in batch:
                g = batch["mc_return"]
                y = torch.where(torch.isfinite(g), torch.maximum(y, g), y)
            if self.s.mc_mix > 0 and "mc_return" in batch:
                g, mix = batch["mc_return"], float(self.s.mc_mix)
                y = torch.where(torch.isfinite(g), (1 - mix) * y + mix * g, y)
        return ((self.q_a(batch["obs"], batch["action"]) - y) ** 2).mean()

    def distill_loss(self, obs: torch.Tensor) -> torch.Tensor:
        """Noise-critic distillation from the action critic on sampled noise (step 2)."""
        obs = obs[: self.decode_batch]
        w = torch.randn(obs.shape[0], int(self.latent.latent_dim), generator=self.generator)
        w = w.clamp(-self.latent.bound, self.latent.bound)
        n_actor = int(round(self.s.distill_actor_share * obs.shape[0]))
        with torch.no_grad():
            if n_actor:  # also fit Q_W where the actor acts, so that it cannot exploit Q_W's extrapolation
                w[:n_actor] = self.actor(obs[:n_actor])[0]
            target = self.q_a(obs, self.decode(obs, self._noise(w))).min(0).values
        return ((self.q_w(obs, w) - target) ** 2).mean()

    def actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Actor loss over noise (step 3) and the log-probabilities it used."""
        w, log_prob = self.actor(obs)
        alpha = self.log_alpha.exp().detach()
        regulariser = log_prob
        if self.s.prior == "base":  # KL(π_W ‖ N(0, I)) instead of −entropy: stay near the base noise
            regulariser = log_prob + 0.5 * w.pow(2).sum(-1) + 0.5 * w.shape[-1] * math.log(2 * math.pi)
        return (alpha * regulariser - self.q_w(obs, w).min(0).values).mean(), log_prob

    def critic_step(self, batch: Mapping[str, torch.Tensor]) -> float:
        """One TD step of ``Q_A`` (step 1); returns the loss."""
        loss = self.critic_loss(batch)
        self.opt["q_a"].zero_grad()
        loss.backward()
        self.opt["q_a"].step()
        return loss.item()

    def update(self, batch: Mapping[str, torch.Tensor],
               more: Callable[[], Mapping[str, torch.Tensor]] | None = None) -> dict[str, float]:
        """One update (steps 1–5) on ``batch``; ``more()`` gives the minibatches of the extra
        ``critic_utd − 1`` TD steps (``batch`` again when not given)."""
        stats = {"loss/q_a": self.critic_step(batch)}
        for _ in range(int(self.s.critic_utd) - 1):
            self.critic_step(more() if more is not None else batch)
        loss = self.distill_loss(batch["obs"])
        self.opt["q_w"].zero_grad()
        loss.backward()
        self.opt["q_w"].step()
        stats["loss/q_w"] = loss.item()
        loss, log_prob = self.actor_loss(batch["obs"])
        self.opt["actor"].zero_grad()
        loss.backward()
        self.opt["actor"].step()
        if self.s.prior == "none":  # with the base-noise prior the temperature stays fixed
            alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
            self.opt["alpha"].zero_grad()
            alpha_loss.backward()
            self.opt["alpha"].step()
        with torch.no_grad():
            pairs = [(self.q_a, self.q_a_target, self.s.tau), (self.q_w, self.q_w_target, self.s.tau)]
            if self.deployed_actor is not self.actor:
                pairs.append((self.actor, self.deployed_actor, self.ema_rate()))
                self.ema_updates += 1
            for net, target, rate in pairs:
                for p, tp in zip(net.parameters(), target.parameters()):
                    tp.mul_(1 - rate).add_(rate * p)
        stats.update({"loss/actor": loss.item(), "alpha": self.log_alpha.exp().item()})
        stats.update(self.actor_diagnostics(batch["obs"], log_prob))
        return stats

    def ema_rate(self) -> float:
        """The Polyak rate of the next actor-average step: ``actor_ema``, or with the warm-up
        ``max(actor_ema, 1/(n+1))`` after ``n`` averaged steps."""
        rate = float(self.s.actor_ema)
        return max(rate, 1.0 / (self.ema_updates + 1)) if self.s.actor_ema_warmup else rate

    @torch.no_grad()
    def actor_diagnostics(self, obs: torch.Tensor, log_prob: torch.Tensor) -> dict[str, float]:
        """What the actor is doing, for TensorBoard: its entropy estimate (nats, from the samples
        the actor loss drew), the norm of its deterministic latent ``b·tanh(mean)`` (a zero latent
        is the zero-noise policy; a typical ``N(0, I)`` draw of d dims has norm ≈ √d), its mean
        standard deviation before the squash, and ``min Q_W`` at that latent. Draws no random
        numbers, so logging it does not change a run."""
        mean, log_std = self.actor._dist(obs)
        w_det = self.actor.bound * torch.tanh(mean)
        return {"actor/entropy": float(-log_prob.detach().mean()),
                "actor/mean_latent_norm": float(w_det.norm(dim=-1).mean()),
                "actor/std": float(log_std.exp().mean()),
                "actor/q_w_at_mean": float(self.q_w(obs, w_det).min(0).values.mean())}

    def act(self, obs: np.ndarray, deterministic: bool, select: int = 1, deployed: bool = False) -> np.ndarray:
        """A latent for one observation: a sample of the actor, or (``deterministic``) its mean —
        with ``select > 1`` the best by ``Q_W`` of ``select`` samples, or of the mean and
        ``select − 1`` samples (:func:`~embodied_steer.dsrl.networks.choose_latent`). ``deployed``:
        of the deployed actor (the weight average with ``actor_ema > 0``) instead of the trained one."""
        x = torch.as_tensor(np.asarray(obs, np.float32))[None]
        actor = self.deployed_actor if deployed else self.actor
        return choose_latent(actor, x, self.q_w, select, explore=not deterministic)[0].numpy()

    # ------------------------------------------------------------------ checkpoints
    def save(self, folder: Path) -> None:
        tensors = {f"{n}.{k}": v.detach().contiguous() for n, m in self.networks().items() for k, v in m.state_dict().items()}
        tensors["log_alpha"] = self.log_alpha.detach().clone()
        save_file(tensors, str(folder / "networks.safetensors"))
        torch.save({k: o.state_dict() for k, o in self.opt.items()}
                   | {"generator": self.generator.get_state(), "actor_ema_updates": self.ema_updates},
                   folder / "optim.pt")

    def load(self, folder: Path) -> None:
        tensors = load_file(str(folder / "networks.safetensors"))
        ema_started = False
        for n, m in self.networks().items():
            state = {k[len(n) + 1 :]: v for k, v in tensors.items() if k.startswith(n + ".")}
            if not state and n == "q_w_target":  # checkpoints written before Q̄_W existed
                state = self.q_w.state_dict()
            if not state and n == "actor_ema":  # a run resumed with actor_ema turned on: start the average here
                state, ema_started = self.actor.state_dict(), True
            m.load_state_dict(state)
        with torch.no_grad():
            self.log_alpha.copy_(tensors["log_alpha"])
        state = torch.load(folder / "optim.pt", weights_only=False)
        for k, o in self.opt.items():
            o.load_state_dict(state[k])
        self.generator.set_state(state["generator"])
        # Checkpoints from before the counter kept an average that was never warmed up: carry on
        # at the plain rate. An average started just now warms up from the trained actor.
        self.ema_updates = 0 if ema_started else int(state.get("actor_ema_updates", 2**31))


# =========================================================================== offline data
def offline_transitions(root: str | Path, features: ObsFeatures, k: int, gamma: float, action_dim: int,
                        repo_id: str = "local/dataset") -> list[tuple]:
    """Chunk transitions ``(s, a_exec, R, γ^n, terminal, s', G)`` from a LeRobot dataset (``G``:
    the Monte-Carlo return from ``s``, see :class:`ChunkReplay`).

    One transition starts at every frame ``t`` (overlapping windows). The dataset's ``next.reward``
    and ``next.done`` columns are used when present; a demonstration set without them (what
    ``embodied-steer record`` writes, with only successful episodes by default) is read as reward 1
    at the last frame of each episode, which then terminates.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    if not (root / "meta" / "info.json").is_file():
        raise ConfigError(f"no LeRobot dataset at {root}")
    ds = LeRobotDataset(repo_id, root=root)
    table = ds.hf_dataset.with_format("numpy")
    ep = np.asarray(table["episode_index"]).reshape(-1)
    state = np.asarray(table["observation.state"], np.float32) if features.state_dim else None
    env_state = np.asarray(table["observation.environment_state"], np.float32) if features.env_state_dim else None
    actions = np.asarray(table["action"], np.float32)
    if actions.shape[1] != action_dim:
        raise ConfigError(f"dataset actions have {actions.shape[1]} dims, the environment {action_dim}")
    names = set(table.column_names)
    reward = np.asarray(table["next.reward"], np.float32).reshape(-1) if "next.reward" in names else None
    frames = np.concatenate([x for x in (state, env_state) if x is not None], axis=1)
    out = []
    for e in np.unique(ep):
        idx = np.flatnonzero(ep == e)
        length = len(idx)
        r = reward[idx] if reward is not None else np.eye(1, length, length - 1, dtype=np.float32)[0]
        f = frames[idx]
        returns = np.zeros(length + 1, np.float64)  # G_t = Σ_{i≥t} γ^{i−t} r_i: every episode here terminates
        for t in reversed(range(length)):
            returns[t] = r[t] + gamma * returns[t + 1]

        def feat(t: int) -> np.ndarray:
            return features.stack([f[max(0, t - j)] for j in reversed(range(features.history))])

        for t in range(length):
            n = min(k, length - t)
            ret = float(sum(gamma**i * r[t + i] for i in range(n)))
            terminal = t + n >= length
            out.append((feat(t), pad_chunk(actions[idx[t : t + n]], k, action_dim), ret, gamma**n, float(terminal),
                        feat(min(t + n, length - 1)), float(returns[t])))
    return out


# =========================================================================== the run loop
def run_na(cfg, train_env, eval_env, out: Path, resuming: bool, base_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """DSRL-NA: optional offline pre-training, then online interaction with the latent MDP."""
    from embodied_steer.dsrl.policy import save_adapter
    from embodied_steer.dsrl.progress import Counters, Progress, read_curve, truncate_logs, write_folder_atomically

    k = train_env.execute_steps
    action_dim = int(np.prod(train_env.env.action_space.shape))
    decode = make_decoder(train_env.policy, train_env.features, k, train_env.instruction)
    backup = cfg.na_backup
    settings = NASettings(hidden=list(cfg.hidden), lr=cfg.lr, tau=cfg.tau, backup=backup,
                          batch_size=cfg.na_decode_batch if backup == "action" else max(cfg.batch_size, cfg.na_decode_batch),
                          decode_batch=cfg.na_decode_batch, distill_actor_share=cfg.na_distill_actor_share, prior=cfg.na_prior,
                          n_critics=cfg.n_critics, layernorm=cfg.na_layernorm,
                          init_temperature=cfg.init_temperature,
                          target_entropy=cfg.entropy_target, mc_bound=cfg.na_mc_bound, mc_mix=cfg.na_mc_mix,
                          critic_utd=cfg.na_critic_utd,
                          actor_init=cfg.na_actor_init, actor_lr=cfg.na_actor_lr, actor_ema=cfg.na_actor_ema,
                          actor_ema_warmup=cfg.na_actor_ema_warmup,
                          critic_dropout=cfg.na_critic_dropout)
    agent = DSRLNA(train_env.features.dim, k * action_dim, train_env.latent, decode, settings, cfg.seed)
    online = ChunkReplay(cfg.buffer_size, train_env.features.dim, k * action_dim)
    offline: ChunkReplay | None = None
    ckpt = out / "checkpoint"
    rng = np.random.default_rng(cfg.seed)
    counters = None
    if cfg.offline_dataset:
        rows = offline_transitions(cfg.offline_dataset, train_env.features, k, cfg.gamma, action_dim)
        if train_env.shaping is not None:
            rows = shape_rows(train_env.shaping, rows)
        offline = ChunkReplay(len(rows), train_env.features.dim, k * action_dim)
        for row in rows:
            offline.add(*row)
        log.info("offline data: %d chunk transitions from %s", offline.size, cfg.offline_dataset)
    if resuming:
        agent.load(ckpt)
        online.load(ckpt / "replay_buffer.npz")
        saved = json.loads((ckpt / "counters.json").read_text())
        counters = Counters(**saved["progress"])
        rng = np.random.default_rng(cfg.seed + counters.agent_steps)
        truncate_logs(out, counters.env_steps)
        log.info("resumed dsrl_na at %d env steps (%d agent steps, replay buffer %d)", counters.env_steps,
                 counters.agent_steps, online.size)
    progress = Progress(out, algo="dsrl_na", eval_env=eval_env, eval_episodes=cfg.eval_episodes, eval_seed=cfg.eval_seed,
                        eval_every=cfg.eval_every, checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
                        total_env_steps=cfg.total_env_steps, counters=counters)

    def sample() -> dict[str, torch.Tensor]:
        if offline is None or online.size == 0:
            return (offline or online).sample(settings.batch_size, rng)
        half = settings.batch_size // 2  # symmetric sampling of offline and online data
        a, b = offline.sample(half, rng), online.sample(settings.batch_size - half, rng)
        return {key: torch.cat([a[key], b[key]]) for key in a}

    def checkpoint() -> None:
        progress.mark_checkpoint()

        def write(tmp: Path) -> None:
            tmp.mkdir(parents=True, exist_ok=True)
            agent.save(tmp)
            online.save(tmp / "replay_buffer.npz")
            (tmp / "counters.json").write_text(json.dumps({"progress": progress.counters_dict()}, indent=2))

        write_folder_atomically(ckpt, write)
        export(out / "adapter")

    def export(folder: Path) -> None:
        save_adapter(folder, agent.deployed_actor, train_env.latent, train_env.features, hidden=cfg.hidden,
                     base_config=base_config, algo="dsrl_na", execute_steps=k,
                     noise_critic=agent.q_w if cfg.na_select > 1 else None, select=cfg.na_select,
                     sample=cfg.na_act == "sample")

    def deployed(o: np.ndarray) -> np.ndarray:  # the latent evaluation measures and the adapter acts with
        return agent.act(o, deterministic=cfg.na_act == "mean", select=cfg.na_select, deployed=True)

    def evaluate() -> dict[str, float]:
        row = progress.run_eval(deployed)
        progress.keep_eval_adapters(row, export, cfg.keep_eval_adapters)
        return row

    if offline is not None and not resuming:
        for i in range(int(cfg.offline_updates)):
            stats = agent.update(sample(), sample)
            progress.c.updates += 1
            if i % max(1, cfg.offline_updates // 10) == 0:
                log.info("dsrl_na offline update %d/%d: %s", i, cfg.offline_updates,
                         ", ".join(f"{k}={v:.3g}" for k, v in stats.items()))
        progress.scalars(stats if cfg.offline_updates else {})
    if cfg.total_env_steps <= 0:  # offline only: evaluate the pre-trained actor once and save it
        row = evaluate()
        checkpoint()
        progress.close()
        return row

    obs, _ = train_env.reset(seed=cfg.seed * 1_000_003 + progress.c.episodes)
    greedy = acts_with_deployed_latent(cfg.seed, progress.c.episodes, cfg.na_explore_deployed_share)
    episode_return = 0.0
    episode_slots: list[int] = []  # this episode's replay slots, to fill in their Monte-Carlo returns at its end
    stats: dict[str, float] = {}
    while not progress.done:
        learning = progress.c.agent_steps >= cfg.learning_starts or offline is not None
        if learning and greedy:
            w = deployed(obs)
        elif learning:
            w = agent.act(obs, deterministic=False, select=cfg.na_select_explore)
        else:
            w = train_env.action_space.draw(rng)
        next_obs, reward, terminated, truncated, info = train_env.step(w)
        episode_slots.append(online.add(obs, pad_chunk(info["executed_actions"], k, action_dim), reward,
                                        info["discount"], float(terminated), next_obs))
        episode_return += info["task_reward"]  # logged returns are the task's, shaped or not
        end = terminated or truncated
        if end:
            online.set_mc_returns(episode_slots, episode_returns(online.data["reward"][episode_slots],
                                                                 online.data["discount"][episode_slots], terminated))
            episode_slots = []
        progress.record_step(info["env_steps"], end, bool(info.get("is_success", False)), episode_return)
        obs = next_obs
        if end:
            episode_return = 0.0
            obs, _ = train_env.reset(seed=cfg.seed * 1_000_003 + progress.c.episodes)
            greedy = acts_with_deployed_latent(cfg.seed, progress.c.episodes, cfg.na_explore_deployed_share)
        if learning and online.size >= 1:
            for _ in range(cfg.utd):
                stats = agent.update(sample(), sample)
                progress.c.updates += 1
            progress.scalars(stats)
        progress.maybe_log()
        if progress.due_eval():
            evaluate()
        if progress.due_checkpoint():
            checkpoint()
    progress.close()
    curve = read_curve(out)
    return curve[-1] if curve else {}
