"""Interventions described in a config (the ``steer`` group of ``embodied-steer eval``).

A steer config (``steering/<name>.yaml``, selected with ``steer=<name>``)::

    name: up_clamp_pid
    interventions:
      - kind: clamp                    # clamp | scale | add | ablate | rotate
        modules: "llm.layers.*.mlp"    # name / glob / list (optional with cluster_file)
        tower: null                    # vision | llm | vlm | expert | unet | prefix
        layers: null                   # [0, 1, ...]
        neurons: [12, 301]             # clamp / scale; or:
        cluster_file: clusters.yaml    #   a cluster file (discovery.save_clusters) ...
        cluster: up                    #   ... and the cluster's name
        vector_file: null              # add / ablate: safetensors / .pt / .npz keyed by module name
        vector: null                   #   or an inline list (one vector for every module)
        u_file: null                   # rotate: the plane's two directions (files like vector_file)
        v_file: null
        positions: all                 # all | last | prefix | n | [i, j, ...] | {start:, stop:}
        steps: null                    # denoising-step range [start, stop) or "a:b" (step modules)
        coefficient: 8.0               # number, {kind: schedule, ...} or {kind: pid, ...}

See :func:`~embodied_steer.steering.coefficients.as_coefficient` for coefficient mappings, e.g.
``{kind: pid, measure: "state[2]", target: 1.0, kp: 20, ki: 5, limits: [0, 20]}``.
Relative file paths are resolved against ``base_dir`` (default: the working directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from embodied_steer.core.errors import ConfigError
from embodied_steer.core.policy import InterventionPoint, SteerablePolicy
from embodied_steer.steering.interventions import KINDS, Intervention, SteeringHandle, attach

KEYS = {"kind", "modules", "tower", "layers", "neurons", "cluster_file", "cluster", "vector", "vector_file",
        "u_file", "v_file", "positions", "steps", "coefficient", "name"}


def _path(value: str, base_dir: Path | None) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() or base_dir is None else base_dir / p


def _vectors(file: str, base_dir: Path | None, what: str) -> dict[str, torch.Tensor] | torch.Tensor:
    from embodied_steer.steering.directions import load_directions

    data = load_directions(_path(file, base_dir))
    if len(data) == 1 and next(iter(data)) in ("vector", "direction", "u", "v"):
        return next(iter(data.values()))  # one vector for every module
    return data


def intervention_from_spec(spec: Mapping[str, Any], *, base_dir: str | Path | None = None, index: int = 0) -> Intervention:
    """One :class:`Intervention` from a config mapping (see the module docstring)."""
    spec = dict(spec)
    unknown = set(spec) - KEYS
    if unknown:
        raise ConfigError(f"steer intervention #{index}: unknown keys {sorted(unknown)}; known: {sorted(KEYS)}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"steer intervention #{index}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    base = None if base_dir is None else Path(base_dir)
    where = {k: spec[k] for k in ("tower", "layers", "steps", "name") if spec.get(k) is not None}
    positions = spec.get("positions", "all")
    if isinstance(positions, Sequence) and not isinstance(positions, str):
        positions = [int(p) for p in positions]
    where["positions"] = positions
    coefficient = spec.get("coefficient", 1.0)
    if kind in ("clamp", "scale"):
        if spec.get("cluster_file"):
            from embodied_steer.steering.discovery import cluster_intervention

            if not spec.get("cluster"):
                raise ConfigError(f"steer intervention #{index}: cluster_file needs 'cluster' (the cluster's name)")
            inter = cluster_intervention(_path(spec["cluster_file"], base), spec["cluster"], kind=kind,
                                         coefficient=coefficient, **where)
            if spec.get("modules"):  # restrict the cluster to some modules
                inter.modules = spec["modules"]
            return inter
        if spec.get("neurons") is None:
            raise ConfigError(f"steer intervention #{index} ({kind}): give 'neurons' or 'cluster_file' + 'cluster'")
        if not spec.get("modules") and not isinstance(spec["neurons"], Mapping):
            raise ConfigError(f"steer intervention #{index} ({kind}): give 'modules'")
        return Intervention(kind, spec.get("modules"), neurons=spec["neurons"], coefficient=coefficient, **where)
    if not spec.get("modules"):
        raise ConfigError(f"steer intervention #{index} ({kind}): give 'modules'")
    if kind in ("add", "ablate"):
        if spec.get("vector_file"):
            vector = _vectors(spec["vector_file"], base, "vector")
        elif spec.get("vector") is not None:
            vector = torch.as_tensor(list(spec["vector"]), dtype=torch.float32)
        else:
            raise ConfigError(f"steer intervention #{index} ({kind}): give 'vector_file' or 'vector'")
        return Intervention(kind, spec["modules"], vector=vector, coefficient=coefficient, **where)
    if not (spec.get("u_file") and spec.get("v_file")):
        raise ConfigError(f"steer intervention #{index} (rotate): give 'u_file' and 'v_file'")
    u, v = _vectors(spec["u_file"], base, "u"), _vectors(spec["v_file"], base, "v")
    if isinstance(u, dict) != isinstance(v, dict):
        raise ConfigError(f"steer intervention #{index} (rotate): u_file and v_file must both be per-module or both single")
    plane = {m: (u[m], v[m]) for m in u} if isinstance(u, dict) else (u, v)
    return Intervention("rotate", spec["modules"], plane=plane, coefficient=coefficient, **where)


def interventions_from_config(config: Mapping[str, Any] | None, *, base_dir: str | Path | None = None) -> list[Intervention]:
    """All interventions of a steer config (``[]`` for none)."""
    if not config:
        return []
    items = config.get("interventions") or []
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise ConfigError("steer.interventions must be a list of intervention mappings")
    return [intervention_from_spec(item, base_dir=base_dir, index=i) for i, item in enumerate(items)]


def attach_from_config(policy: SteerablePolicy, config: Mapping[str, Any] | None, *,
                       base_dir: str | Path | None = None) -> SteeringHandle | None:
    """Validate and attach a steer config's interventions; ``None`` when it has none.

    Raises :class:`~embodied_steer.core.errors.UnsupportedIntervention` up front when the policy
    lacks the ``ACTIVATIONS`` point.
    """
    interventions = interventions_from_config(config, base_dir=base_dir)
    if not interventions:
        return None
    name = (config or {}).get("name") or "steer"
    policy.require(InterventionPoint.ACTIVATIONS, f"steer={name}")
    return attach(policy, interventions)
