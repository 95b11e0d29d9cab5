"""The adapted policy: a frozen base policy whose initial noise is chosen by a trained noise actor.

:class:`DSRLPolicy` is itself a :class:`~embodied_steer.core.policy.SteerablePolicy`, so it runs
wherever a policy does (``embodied-steer eval``, the ROS 2 policy server, the REALM monitor…).
It keeps every intervention point of the base policy except ``NOISE`` (the noise is what the actor
decides). A saved adapter is a folder::

    adapter.json              algo, latent map, agent features, actor widths, the base policy's config,
                              ``act`` (``mean`` or ``sample``), ``select`` (and the noise critic's
                              layout when one is saved)
    actor.safetensors         the noise actor's weights (deterministic use: b · tanh(mean))
    noise_critic.safetensors  optional (DSRL-NA with ``na_select > 1``): the noise critic ``Q_W`` that
                              picks the best of ``select`` actor latents at each chunk
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from embodied_steer.core.errors import CheckpointError
from embodied_steer.core.policy import DenoiseCallback, InterventionPoint, PolicyInfo, SteerablePolicy
from embodied_steer.core.types import ActionChunk, Observation
from embodied_steer.dsrl.features import ObsFeatures
from embodied_steer.dsrl.latent import LatentNoiseMap
from embodied_steer.dsrl.networks import CriticEnsemble, NoiseActor, choose_latent
from torch import nn

ACT_MODES = ("mean", "sample")
"""How an adapter turns its actor into a latent (``adapter.json``'s ``act``, ``adapt``'s ``na_act``)."""


def _actor_latent(actor: NoiseActor, features: ObsFeatures, history: Sequence[Observation],
                  critic: CriticEnsemble | None = None, select: int = 1, sample: bool = False) -> torch.Tensor:
    vec = torch.as_tensor(features.from_history(list(history)))[None]
    return choose_latent(actor, vec, critic, select, explore=sample)


@torch.no_grad()
def actor_noise(actor: NoiseActor, latent: LatentNoiseMap, features: ObsFeatures,
                history: Sequence[Observation], critic: CriticEnsemble | None = None, select: int = 1,
                sample: bool = False) -> torch.Tensor:
    """Sampler noise ``(1, *noise_shape)`` a noise actor picks for an observation history — its
    ``b·tanh(mean)`` (``sample``: one sample of it), or with a noise critic and ``select > 1`` the
    best by the critic of the mean and ``select − 1`` actor samples (``sample``: of ``select``
    samples; :func:`~embodied_steer.dsrl.networks.choose_latent`) — through the latent map. What
    :class:`DSRLPolicy` and :class:`NoiseActorAct` both sample from."""
    return latent.to_noise(_actor_latent(actor, features, history, critic, select, sample))


class DSRLPolicy(SteerablePolicy):
    """``base`` + noise actor: ``act(obs)`` = base sampler run on ``b·tanh(actor_mean(features))``.

    Args:
        base: the frozen base policy (declares ``NOISE``).
        actor: the trained :class:`NoiseActor`.
        latent: the latent → noise map used in training.
        features: the agent observation layout used in training.
        name: display name.
        noise_critic: DSRL-NA's noise critic ``Q_W``; with ``select > 1`` it picks the best of the
            actor's mean and ``select − 1`` actor samples at each chunk.
        select: candidates per chunk (1: the actor's mean alone).
        sample: act with samples of the actor instead of its mean (with a 112-dim latent the mean is
            not a typical sample; see ``benchmarks/RESULTS.md``).
    """

    def __init__(self, base: SteerablePolicy, actor: NoiseActor, latent: LatentNoiseMap, features: ObsFeatures,
                 *, name: str | None = None, execute_steps: int | None = None,
                 noise_critic: CriticEnsemble | None = None, select: int = 1, sample: bool = False) -> None:
        if select > 1 and noise_critic is None:
            raise CheckpointError(f"select={select} needs a noise critic to score the candidates (a DSRL-NA adapter "
                                  "saved with na_select > 1)")
        base.require(InterventionPoint.NOISE, "a DSRL adapter")
        self.history_length = base.history_length
        self.interventions = frozenset(base.interventions - {InterventionPoint.NOISE})
        info = base.info
        super().__init__(PolicyInfo(
            name=name or f"{info.name}+dsrl", chunk_size=info.chunk_size,
            execute_steps=int(execute_steps or info.execute_steps), action_bounds=info.action_bounds,
            state_dim=info.state_dim, env_state_dim=features.env_state_dim or info.env_state_dim,
            cameras=info.cameras, uses_instruction=info.uses_instruction,
            extra={**info.extra, "dsrl": {"latent": latent.describe(), "features": features.to_dict()}},
        ))
        self.base = base
        self.actor = actor.eval()
        self.latent = latent
        self.features = features
        self.noise_critic = noise_critic.eval() if noise_critic is not None else None
        self.select = int(select)
        self.sample = bool(sample)

    def latent_for(self, history: Sequence[Observation]) -> torch.Tensor:
        """The latent ``(1, latent_dim)`` the adapter acts with for an observation history."""
        return _actor_latent(self.actor, self.features, history, self.noise_critic, self.select, self.sample)

    def _generate(self, history: Sequence[Observation], n: int, noise: torch.Tensor | None,
                  denoise_callback: DenoiseCallback | None) -> np.ndarray:
        chosen = self.latent.to_noise(self.latent_for(history)).expand(n, *self.latent.spec.shape)
        return self.base._generate(history, n, chosen.contiguous(), denoise_callback)

    def modules(self) -> dict[str, nn.Module]:
        return self.base.modules()

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path, *, hidden: Sequence[int], base_config: Mapping[str, Any] | None,
             algo: str) -> Path:
        return save_adapter(folder, self.actor, self.latent, self.features, hidden=hidden, base_config=base_config,
                            algo=algo, execute_steps=self.info.execute_steps, noise_critic=self.noise_critic,
                            select=self.select, sample=self.sample)

    @classmethod
    def from_adapter(cls, adapter_path: str | Path, base: Mapping[str, Any] | None = None,
                     name: str | None = None, env_spec: Any = None) -> "DSRLPolicy":
        """Load a saved adapter; the base policy is built from ``base`` (a policy config) or, by
        default, from the config stored in ``adapter.json``."""
        adapter = load_noise_adapter(adapter_path)
        base_cfg = base if base is not None else adapter.base_config
        if base_cfg is None:
            raise CheckpointError(f"{adapter.folder / 'adapter.json'} names no base policy; pass base=<policy config>")
        from omegaconf import OmegaConf

        from embodied_steer import catalog
        from embodied_steer.cli import instantiate_policy

        catalog.register()
        base_policy = instantiate_policy(OmegaConf.create(dict(base_cfg)))
        return cls(base_policy, adapter.actor, adapter.latent, adapter.features, name=name or adapter.meta.get("name"),
                   execute_steps=adapter.meta.get("execute_steps"), noise_critic=adapter.noise_critic,
                   select=adapter.select, sample=adapter.sample)


@dataclass
class NoiseAdapter:
    """A saved DSRL adapter without its base policy: the noise actor and how it sees and acts.

    Attributes:
        folder: where it was loaded from.
        actor: the noise actor (eval mode).
        latent: latent → sampler-noise map (carries the base policy's noise shape).
        features: the agent's observation layout.
        meta: the parsed ``adapter.json``.
        noise_critic: the saved noise critic ``Q_W`` (``None`` if the adapter has none).
        select: candidates per chunk scored by ``noise_critic`` (1: the actor's mean alone).
        sample: act with actor samples instead of the mean (``adapter.json``'s ``act``).
    """

    folder: Path
    actor: NoiseActor
    latent: LatentNoiseMap
    features: ObsFeatures
    meta: dict[str, Any]
    noise_critic: CriticEnsemble | None = None
    select: int = 1
    sample: bool = False

    @property
    def base_config(self) -> dict[str, Any] | None:
        """The config of the base policy the actor was trained on (``None`` if not recorded)."""
        cfg = self.meta.get("base_policy")
        return dict(cfg) if cfg is not None else None


def load_noise_adapter(adapter_path: str | Path) -> NoiseAdapter:
    """Read ``adapter.json`` + ``actor.safetensors`` (see the module docstring).

    Raises:
        CheckpointError: a file is missing or does not match the recorded layout.
    """
    folder = Path(adapter_path)
    meta_path, weights = folder / "adapter.json", folder / "actor.safetensors"
    for path in (meta_path, weights):
        if not path.is_file():
            raise CheckpointError(f"DSRL adapter incomplete: {path} is missing")
    try:
        meta = json.loads(meta_path.read_text())
        latent = LatentNoiseMap.from_dict(meta["latent"])
        features = ObsFeatures(**meta["features"])
        actor = NoiseActor(features.dim, int(latent.latent_dim), meta["hidden"], latent.bound,
                           layernorm=bool(meta.get("layernorm", False)))
        actor.load_state_dict(load_file(str(weights)))
        select = int(meta.get("select", 1))
        act = meta.get("act", "mean")
        if act not in ACT_MODES:
            raise CheckpointError(f"DSRL adapter {folder}: act must be one of {ACT_MODES}, got {act!r}")
        critic = None
        if "noise_critic" in meta:
            critic_path = folder / "noise_critic.safetensors"
            if not critic_path.is_file():
                raise CheckpointError(f"DSRL adapter incomplete: {critic_path} is missing")
            layout = meta["noise_critic"]
            critic = CriticEnsemble(features.dim, int(latent.latent_dim), layout["hidden"], int(layout["n_critics"]),
                                    bool(layout["layernorm"]))
            critic.load_state_dict(load_file(str(critic_path)))
            critic.eval()
        elif select > 1:
            raise CheckpointError(f"DSRL adapter {folder} asks for select={select} but holds no noise critic")
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"DSRL adapter {folder} is malformed: {type(exc).__name__}: {exc}") from None
    return NoiseAdapter(folder, actor.eval(), latent, features, meta, critic, select, act == "sample")


class NoiseActorAct:
    """Act function that lets a DSRL noise actor pick the initial noise of an already loaded base policy.

    The same computation as :class:`DSRLPolicy` (``b·tanh(actor_mean(features))`` through the latent
    map), but applied to a policy object that is already running — how the ROS 2 policy server and
    ``embodied-steer eval intervention.dsrl=<adapter>`` switch an adapter on without reloading the base.

    Raises (at construction):
        UnsupportedIntervention: the policy has no ``NOISE`` point.
        CheckpointError: the adapter was trained for another noise shape or observation layout.
    """

    def __init__(self, adapter: NoiseAdapter, policy: SteerablePolicy) -> None:
        policy.require(InterventionPoint.NOISE, "a DSRL adapter")
        have, want = tuple(policy.noise_spec.shape), tuple(adapter.latent.spec.shape)
        if have != want:
            raise CheckpointError(f"DSRL adapter {adapter.folder} was trained for noise of shape {want}, "
                                  f"policy '{policy.info.name}' samples noise of shape {have}")
        f = adapter.features
        if f.state_dim and policy.info.state_dim is not None and f.state_dim != policy.info.state_dim:
            raise CheckpointError(f"DSRL adapter {adapter.folder} reads a state of {f.state_dim} values, policy "
                                  f"'{policy.info.name}' has {policy.info.state_dim}")
        self.adapter = adapter

    def noise_for(self, history: Sequence[Observation]) -> torch.Tensor:
        """Sampler noise ``(1, *noise_shape)`` the actor picks for an observation history."""
        a = self.adapter
        return actor_noise(a.actor, a.latent, a.features, history, a.noise_critic, a.select, a.sample)

    def __call__(self, policy: SteerablePolicy, obs: Observation) -> ActionChunk:
        policy.observe(obs)
        samples = policy.generate(1, noise=self.noise_for(policy.history()))
        return ActionChunk(samples.actions[0], samples.bounds, {"dsrl": str(self.adapter.folder)})


def save_adapter(folder: str | Path, actor: NoiseActor, latent: LatentNoiseMap, features: ObsFeatures, *,
                 hidden: Sequence[int], base_config: Mapping[str, Any] | None, algo: str,
                 execute_steps: int | None = None, name: str | None = None,
                 noise_critic: CriticEnsemble | None = None, select: int = 1, sample: bool = False) -> Path:
    """Write ``adapter.json`` + ``actor.safetensors`` (+ ``noise_critic.safetensors``; see the module docstring)."""
    if select > 1 and noise_critic is None:
        raise CheckpointError(f"select={select} needs a noise critic to save with the actor")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in actor.state_dict().items()}, str(folder / "actor.safetensors"))
    layernorm = any(isinstance(m, nn.LayerNorm) for m in actor.trunk)
    meta = {"algo": algo, "latent": latent.to_dict(), "features": features.to_dict(), "hidden": list(hidden),
            "layernorm": layernorm, "base_policy": dict(base_config) if base_config is not None else None,
            "execute_steps": execute_steps, "name": name, "act": "sample" if sample else "mean", "select": int(select)}
    if noise_critic is not None:
        save_file({k: v.detach().contiguous() for k, v in noise_critic.state_dict().items()},
                  str(folder / "noise_critic.safetensors"))
        linears = [m for m in noise_critic.nets[0] if isinstance(m, nn.Linear)]
        meta["noise_critic"] = {"hidden": [m.out_features for m in linears[:-1]], "n_critics": len(noise_critic.nets),
                                "layernorm": any(isinstance(m, nn.LayerNorm) for m in noise_critic.nets[0])}
    elif (folder / "noise_critic.safetensors").exists():
        (folder / "noise_critic.safetensors").unlink()  # an older save's critic must not outlive this one
    (folder / "adapter.json").write_text(json.dumps(meta, indent=2))
    return folder
