"""The adapted policy: a frozen base policy whose initial noise is chosen by a trained noise actor.

:class:`DSRLPolicy` is itself a :class:`~embodied_steer.core.policy.SteerablePolicy`, so it runs
wherever a policy does (``embodied-steer eval``, the ROS 2 policy server, the REALM monitor…).
It keeps every intervention point of the base policy except ``NOISE`` (the noise is what the actor
decides). A saved adapter is a folder::

    adapter.json          algo, latent map, agent features, actor widths, the base policy's config
    actor.safetensors     the noise actor's weights (deterministic use: b · tanh(mean))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from embodied_steer.core.errors import CheckpointError
from embodied_steer.core.policy import DenoiseCallback, InterventionPoint, PolicyInfo, SteerablePolicy
from embodied_steer.core.types import Observation
from embodied_steer.dsrl.features import ObsFeatures
from embodied_steer.dsrl.latent import LatentNoiseMap
from embodied_steer.dsrl.networks import NoiseActor
from torch import nn


class DSRLPolicy(SteerablePolicy):
    """``base`` + noise actor: ``act(obs)`` = base sampler run on ``b·tanh(actor_mean(features))``.

    Args:
        base: the frozen base policy (declares ``NOISE``).
        actor: the trained :class:`NoiseActor`.
        latent: the latent → noise map used in training.
        features: the agent observation layout used in training.
        name: display name.
    """

    def __init__(self, base: SteerablePolicy, actor: NoiseActor, latent: LatentNoiseMap, features: ObsFeatures,
                 *, name: str | None = None, execute_steps: int | None = None) -> None:
        base.require(InterventionPoint.NOISE, "a DSRL adapter")
        self.history_length = base.history_length
        self.interventions = frozenset(base.interventions - {InterventionPoint.NOISE})
        info = base.info
        super().__init__(PolicyInfo(
            name=name or f"{info.name}+dsrl", chunk_size=info.chunk_size,
            execute_steps=int(execute_steps or info.execute_steps), action_bounds=info.action_bounds,
            state_dim=info.state_dim, env_state_dim=features.env_state_dim or info.env_state_dim,
            cameras=info.cameras, uses_instruction=info.uses_instruction,
            extra={**info.extra, "dsrl": {"latent": latent.to_dict(), "features": features.to_dict()}},
        ))
        self.base = base
        self.actor = actor.eval()
        self.latent = latent
        self.features = features

    def latent_for(self, history: Sequence[Observation]) -> torch.Tensor:
        """The actor's deterministic latent ``(1, latent_dim)`` for an observation history."""
        vec = torch.as_tensor(self.features.from_history(list(history)))[None]
        return self.actor.deterministic(vec)

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
                            algo=algo, execute_steps=self.info.execute_steps)

    @classmethod
    def from_adapter(cls, adapter_path: str | Path, base: Mapping[str, Any] | None = None,
                     name: str | None = None, env_spec: Any = None) -> "DSRLPolicy":
        """Load a saved adapter; the base policy is built from ``base`` (a policy config) or, by
        default, from the config stored in ``adapter.json``."""
        folder = Path(adapter_path)
        meta_path, weights = folder / "adapter.json", folder / "actor.safetensors"
        for path in (meta_path, weights):
            if not path.is_file():
                raise CheckpointError(f"DSRL adapter incomplete: {path} is missing")
        meta = json.loads(meta_path.read_text())
        base_cfg = base if base is not None else meta.get("base_policy")
        if base_cfg is None:
            raise CheckpointError(f"{meta_path} names no base policy; pass base=<policy config>")
        from omegaconf import OmegaConf

        from embodied_steer import catalog
        from embodied_steer.cli import instantiate_policy

        catalog.register()
        base_policy = instantiate_policy(OmegaConf.create(dict(base_cfg)))
        latent = LatentNoiseMap.from_dict(meta["latent"])
        features = ObsFeatures(**meta["features"])
        actor = NoiseActor(features.dim, int(latent.latent_dim), meta["hidden"], latent.bound,
                           layernorm=bool(meta.get("layernorm", False)))
        actor.load_state_dict(load_file(str(weights)))
        return cls(base_policy, actor, latent, features, name=name or meta.get("name"),
                   execute_steps=meta.get("execute_steps"))


def save_adapter(folder: str | Path, actor: NoiseActor, latent: LatentNoiseMap, features: ObsFeatures, *,
                 hidden: Sequence[int], base_config: Mapping[str, Any] | None, algo: str,
                 execute_steps: int | None = None, name: str | None = None) -> Path:
    """Write ``adapter.json`` + ``actor.safetensors`` (see the module docstring)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in actor.state_dict().items()}, str(folder / "actor.safetensors"))
    layernorm = any(isinstance(m, nn.LayerNorm) for m in actor.trunk)
    meta = {"algo": algo, "latent": latent.to_dict(), "features": features.to_dict(), "hidden": list(hidden),
            "layernorm": layernorm, "base_policy": dict(base_config) if base_config is not None else None,
            "execute_steps": execute_steps, "name": name}
    (folder / "adapter.json").write_text(json.dumps(meta, indent=2))
    return folder
