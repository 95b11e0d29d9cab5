"""Register activation interventions on a policy's named modules — one API for every kind.

Kinds (``Intervention.kind``) and what the coefficient ``c`` means:

==========  ======================================================================================
``clamp``   overwrite the selected MLP neurons with ``c`` — at the **input of the MLP
            down-projection** (a ``forward_pre_hook`` on ``down_proj``), i.e. the neuron
            activations whose value vectors (columns of ``down_proj.weight``) the MLP writes.
``scale``   multiply the selected neurons (same place) by ``c``.
``add``     add ``c · vector`` to the module's output (the residual-stream write of a layer, an
            MLP's output, …).
``ablate``  remove ``c`` times the output's component along ``direction`` (``c = 1``: project it
            out completely; the direction is normalised).
``rotate``  rotate the output's component in the plane spanned by two directions ``(u, v)`` by
            the angle ``c`` (radians), towards ``v``. ``u, v`` are orthonormalised; the rotation
            changes no component outside the plane, so the norm of every activation is preserved.
==========  ======================================================================================

Addressing (see :mod:`~embodied_steer.steering.addressing`): module names or globs from
``policy.modules()``, optionally restricted to a ``tower`` and ``layers``; neuron indices (one list
for all matched modules, or a ``{module: indices}`` mapping); token ``positions``; and, for
flow / diffusion experts, a denoising ``steps`` range read from
:func:`~embodied_steer.core.steps.current_denoise_step`.

Two ways to apply interventions::

    with steer(policy, [clamp("llm.layers.*.mlp", [3, 17], 8.0)]) as handle:
        chunk = policy.act(obs)          # hooks removed on exit, also after an exception

    handle = attach(policy, [add("vlm.layers.1", vector, coefficient=2.0)])
    ...                                  # persistent until
    handle.remove()

Coefficients may be numbers or :class:`~embodied_steer.steering.coefficients.Coefficient` sources;
call :meth:`SteeringHandle.begin_call` with the observation before each policy call so that
schedules and PID controllers advance (the evaluation act function does this).

Errors: bad names, neuron indices, widths and NaN coefficients raise
:class:`~embodied_steer.steering.addressing.AddressError` /
:class:`~embodied_steer.core.errors.ConfigError` **before** any hook is registered. A width that can
only be checked when the activation is seen raises inside the forward pass; the handle then removes
all its hooks before the error propagates, so a failing intervention never lingers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from embodied_steer.core.errors import ConfigError
from embodied_steer.core.policy import SteerablePolicy
from embodied_steer.core.steps import current_denoise_step
from embodied_steer.core.types import Observation
from embodied_steer.steering.addressing import (
    AddressError,
    Positions,
    StepRange,
    check_neurons,
    check_positions,
    check_vector,
    down_projection,
    feature_axis,
    input_width,
    module_schedule,
    output_width,
    policy_modules,
    position_index,
    resolve_modules,
)
from embodied_steer.steering.coefficients import Coefficient, Fixed, as_coefficient

KINDS = ("clamp", "scale", "add", "ablate", "rotate")
NEURON_KINDS = ("clamp", "scale")


@dataclass
class Intervention:
    """One intervention: a kind, where it acts and how strongly.

    Attributes:
        kind: ``clamp`` / ``scale`` / ``add`` / ``ablate`` / ``rotate`` (see the module docstring).
        modules: module name(s) or glob(s) from ``policy.modules()``. Neuron kinds accept an MLP
            (``….mlp``), its down-projection or a decoder layer that has one. If ``neurons`` is a
            mapping, its keys are used and ``modules`` may be omitted.
        neurons: neuron indices (neuron kinds): one list for every matched module, or
            ``{module: [indices]}``.
        vector: ``add``: the vector added; ``ablate``: the direction removed. One ``(d,)`` vector
            or ``{module: vector}``.
        plane: ``rotate``: the two directions ``(u, v)`` spanning the rotation plane, or
            ``{module: (u, v)}``.
        coefficient: number or :class:`Coefficient` (clamp value, scale factor, add scale, ablated
            fraction, rotation angle in radians).
        positions: token positions (``"all"``, ``"last"``, ``"prefix"``, n, slice, list).
        steps: denoising-step range ``(start, stop)`` (half-open), for modules that fire once per
            flow / diffusion step; ``None`` = every call.
        tower, layers: filters on the matched module names.
        name: a label for reports.
    """

    kind: str
    modules: str | Sequence[str] | None = None
    neurons: Sequence[int] | Mapping[str, Sequence[int]] | None = None
    vector: Any = None
    plane: Any = None
    coefficient: Any = 1.0
    positions: Positions = "all"
    steps: Any = None
    tower: str | None = None
    layers: Sequence[int] | None = None
    name: str | None = None

    def with_coefficient(self, coefficient: Any) -> "Intervention":
        return replace(self, coefficient=coefficient)


def clamp(modules, neurons, value: Any = 1.0, **where) -> Intervention:
    """Overwrite ``neurons`` of the MLP(s) ``modules`` with ``value`` (at the down-projection input)."""
    return Intervention("clamp", modules, neurons=neurons, coefficient=value, **where)


def scale(modules, neurons, factor: Any = 1.0, **where) -> Intervention:
    """Multiply ``neurons`` of the MLP(s) ``modules`` by ``factor`` (at the down-projection input)."""
    return Intervention("scale", modules, neurons=neurons, coefficient=factor, **where)


def add(modules, vector, coefficient: Any = 1.0, **where) -> Intervention:
    """Add ``coefficient · vector`` to the output of ``modules``."""
    return Intervention("add", modules, vector=vector, coefficient=coefficient, **where)


def ablate(modules, direction, coefficient: Any = 1.0, **where) -> Intervention:
    """Remove ``coefficient`` × the component of the output of ``modules`` along ``direction``."""
    return Intervention("ablate", modules, vector=direction, coefficient=coefficient, **where)


def rotate(modules, u, v, angle: Any = 0.0, **where) -> Intervention:
    """Rotate the output of ``modules`` by ``angle`` radians in the plane of ``(u, v)``, towards ``v``."""
    return Intervention("rotate", modules, plane=(u, v), coefficient=angle, **where)


# ============================================================================ compiled sites
class _Tensors:
    """A tensor cached per (device, dtype) so that hooks do not convert it on every call."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value
        self._cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def on(self, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        key = (like.device, dtype or like.dtype)
        out = self._cache.get(key)
        if out is None:
            out = self._cache[key] = self.value.to(device=key[0], dtype=key[1])
        return out


@dataclass
class _Site:
    """One hook: an intervention compiled for one module."""

    intervention: Intervention
    index: int  # position of the intervention in the handle's list
    module_name: str
    module: nn.Module
    pre: bool  # forward_pre_hook (neuron kinds) or forward_hook
    coefficient: Coefficient
    positions: Positions
    steps: StepRange | None
    axis: int = -1
    width: int | None = None
    neurons: _Tensors | None = None
    vector: _Tensors | None = None
    plane: tuple[_Tensors, _Tensors] | None = None
    fired: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kind_is_clamp = self.intervention.kind == "clamp"
        # resolved once here so that the hook reads plain attributes: the step range as two ints
        # (stop -1 = open-ended), and whether any position filter applies
        self.step_start = -1 if self.steps is None else self.steps.start
        self.step_stop = -1 if self.steps is None or self.steps.stop is None else self.steps.stop
        self.all_positions = self.positions == "all"
        self.idx: torch.Tensor | None = None  # neuron indices on the module's device (set at attach)
        self.idx_cpu = False
        self.every_neuron = self.neurons is not None and self.neurons.value.numel() == self.width


def _per_module(value: Any, name: str, requested: str, what: str) -> Any:
    """Pick ``value[name]`` (or the entry under the user's name ``requested``) from a mapping."""
    if isinstance(value, Mapping):
        for key in (name, requested):
            if key in value:
                return value[key]
        raise AddressError(f"{what} mapping has no entry for module '{name}' (keys: {list(value)[:6]})")
    return value


def _unit(vec: torch.Tensor, name: str, what: str) -> torch.Tensor:
    norm = vec.norm()
    if norm <= 1e-12:
        raise AddressError(f"{what} for module '{name}' is the zero vector")
    return vec / norm


def _compile(policy: SteerablePolicy, intervention: Intervention, index: int) -> list[_Site]:
    kind = intervention.kind
    if kind not in KINDS:
        raise ConfigError(f"unknown intervention kind '{kind}'; kinds: {', '.join(KINDS)}")
    coefficient = as_coefficient(intervention.coefficient)
    positions = check_positions(intervention.positions)
    steps = StepRange.parse(intervention.steps)
    patterns = intervention.modules
    if patterns is None:
        mapping = intervention.neurons if kind in NEURON_KINDS else (
            intervention.vector if kind in ("add", "ablate") else intervention.plane)
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"{kind} intervention needs 'modules' (or a {{module: …}} mapping)")
        patterns = list(mapping)
    names = resolve_modules(policy, patterns, tower=intervention.tower, layers=intervention.layers)
    requested = {n: n for n in names}
    if isinstance(patterns, str):
        patterns = [patterns]
    for pattern in patterns:  # remember the user's spelling for per-module mappings
        if pattern in requested:
            requested[pattern] = pattern
    schedule = module_schedule(policy)
    modules = policy_modules(policy)
    sites: list[_Site] = []
    for name in names:
        if steps is not None and schedule.get(name) in ("chunk", "never"):
            raise AddressError(
                f"module '{name}' fires {'once per chunk' if schedule[name] == 'chunk' else 'never'}, not once "
                f"per denoising step: a step range ({steps.start}..{steps.stop}) applies only to 'step' modules"
            )
        if kind in NEURON_KINDS:
            target_name, target = down_projection(policy, name)
            if any(site.module is target for site in sites):
                continue  # "x.mlp" and "x.mlp.down_proj" are one place: edit it once (scale twice would square)
            neurons = _per_module(intervention.neurons, name, requested[name], "neurons")
            if neurons is None:
                raise ConfigError(f"{kind} intervention on '{name}' needs neuron indices")
            width = input_width(target)
            idx = check_neurons(neurons, width, target_name)
            sites.append(_Site(intervention, index, target_name, target, True, coefficient, positions, steps,
                               axis=-1, width=width, neurons=_Tensors(idx)))
            continue
        module = modules[name]
        if any(site.module is module for site in sites):
            continue  # two names for one module (an adapter alias): one hook
        width = output_width(module)
        axis = feature_axis(module)
        site = _Site(intervention, index, name, module, False, coefficient, positions, steps, axis=axis, width=width)
        if kind in ("add", "ablate"):
            what = "vector" if kind == "add" else "direction"
            raw = _per_module(intervention.vector, name, requested[name], what)
            if raw is None:
                raise ConfigError(f"{kind} intervention on '{name}' needs a {what}")
            vec = check_vector(raw, width, name, what)
            site.vector = _Tensors(_unit(vec, name, what) if kind == "ablate" else vec)
        else:  # rotate
            raw = _per_module(intervention.plane, name, requested[name], "plane")
            if raw is None or len(raw) != 2:
                raise ConfigError(f"rotate intervention on '{name}' needs plane=(u, v)")
            u = _unit(check_vector(raw[0], width, name, "plane direction u"), name, "plane direction u")
            v_raw = check_vector(raw[1], width, name, "plane direction v")
            v = v_raw - (v_raw @ u) * u
            if v.norm() <= 1e-6 * v_raw.norm():
                raise AddressError(f"rotation plane for module '{name}': u and v are parallel")
            site.plane = (_Tensors(u), _Tensors(_unit(v, name, "plane direction v")))
        sites.append(site)
    return sites


# ============================================================================ the edits
def _fail(site: _Site, message: str) -> None:
    raise AddressError(f"{site.intervention.kind} on module '{site.module_name}': {message}")


def _positions_axis(x: torch.Tensor, axis: int) -> int | None:
    """The position axis of an activation whose features are on ``axis``, or ``None``."""
    if axis == -1:
        return x.ndim - 2 if x.ndim >= 3 else None
    return 2 if x.ndim >= 3 else None


def _edit_neurons(site: _Site, x: torch.Tensor) -> torch.Tensor | None:
    """clamp / scale the selected neurons of a down-projection input; in place unless autograd
    needs the original. Returns the edited tensor, or ``None`` when no position is selected.

    The common case — every position, no autograd — is one in-place kernel on the last axis with
    the index tensor built at attach time: ``index_fill_`` (clamp) or ``index_select`` / ``mul_`` /
    ``index_copy_`` (scale); ``fill_`` / ``mul_`` when every neuron is selected."""
    if x.shape[-1] != site.width:
        _fail(site, f"input has {x.shape[-1]} features, expected {site.width}")
    value = site.coefficient.value
    idx = site.idx
    if not (site.idx_cpu and x.is_cpu) and (idx is None or idx.device != x.device):
        idx = site.neurons.on(x, torch.long)  # input on another device than the module's weight
    if x.requires_grad and torch.is_grad_enabled():
        x = x.clone()
    if site.all_positions:
        view = x
    elif x.ndim < 3:
        _fail(site, f"activation of shape {tuple(x.shape)} has no position axis; use positions='all'")
    else:
        pos = position_index(site.positions, x.shape[-2])
        if pos is None:
            return None
        if isinstance(pos, list):  # scattered positions: advanced indexing
            sel = (Ellipsis, torch.as_tensor(pos, device=x.device)[:, None], idx[None, :])
            if site.kind_is_clamp:
                x[sel] = value
            else:
                x[sel] *= value
            return x
        view = x[..., pos, :]  # a view: edits land in x
    if site.every_neuron:
        view.fill_(value) if site.kind_is_clamp else view.mul_(value)
    elif site.kind_is_clamp:
        view.index_fill_(-1, idx, value)
    else:
        view.index_copy_(-1, idx, view.index_select(-1, idx).mul_(value))
    return x


def _edit_features(site: _Site, h: torch.Tensor) -> torch.Tensor:
    """add / ablate / rotate on an output ``h``; returns a new tensor (never in place)."""
    axis = site.axis if site.axis == -1 else 1
    width = h.shape[axis]
    given = (site.vector if site.vector is not None else site.plane[0]).value.shape[0]
    if width != given:
        what = {"add": "vector", "ablate": "direction", "rotate": "plane"}[site.intervention.kind]
        _fail(site, f"the {what} has shape ({given},) but the output has {width} features "
                    f"(shape {tuple(h.shape)}): expected shape ({width},)")
    pos_axis = _positions_axis(h, site.axis)
    if site.positions != "all":
        if pos_axis is None:
            _fail(site, f"activation of shape {tuple(h.shape)} has no position axis; use positions='all'")
        pos = position_index(site.positions, h.shape[pos_axis])
        if pos is None:
            return None
        if isinstance(pos, list):
            pos = torch.as_tensor(pos, device=h.device)
        out = h.clone()
        part = h.index_select(pos_axis, pos) if isinstance(pos, torch.Tensor) else h[(slice(None),) * pos_axis + (pos,)]
        edited = _apply(site, part, axis)
        if isinstance(pos, torch.Tensor):
            out.index_copy_(pos_axis, pos, edited)
        else:
            out[(slice(None),) * pos_axis + (pos,)] = edited
        return out
    return _apply(site, h, axis)


def _apply(site: _Site, h: torch.Tensor, axis: int) -> torch.Tensor:
    c = site.coefficient.value
    kind = site.intervention.kind
    moved = axis != -1 and axis != h.ndim - 1
    if moved:
        h = h.movedim(axis, -1)
    if kind == "add":
        out = h + c * site.vector.on(h)
    elif kind == "ablate":
        d = site.vector.on(h)
        out = h - c * (h @ d).unsqueeze(-1) * d
    else:
        u, v = site.plane[0].on(h), site.plane[1].on(h)
        a, b = h @ u, h @ v
        cos, sin = math.cos(c), math.sin(c)
        da = a * (cos - 1.0) - b * sin
        db = a * sin + b * (cos - 1.0)
        out = h + da.unsqueeze(-1) * u + db.unsqueeze(-1) * v
    return out.movedim(-1, axis) if moved else out


# ============================================================================ hooks
def _site_live(site: _Site) -> bool:
    """Whether ``site`` edits in this forward: its coefficient is active (not a closed phase gate) and,
    with a denoising-step range, a sampler step inside that range is running."""
    if not site.coefficient.active:
        return False
    if site.step_start >= 0:
        ctx = current_denoise_step()
        if ctx is None or ctx.index < site.step_start or 0 <= site.step_stop <= ctx.index:
            return False
    return True


def _pre_hook(handle: "SteeringHandle", sites: list[_Site]):
    """The forward-pre hook of one module: clamp / scale its input for each of its ``sites``, in
    order (a closure: calling it costs less than calling an object). A site is skipped while its
    coefficient is inactive (a closed phase gate) or outside its denoising-step range (also when
    no sampler step is running)."""

    def hook(module: nn.Module, args: tuple) -> tuple | None:
        x0 = x = args[0] if args else None
        if not isinstance(x, torch.Tensor):
            return None
        try:
            for site in sites:
                if not _site_live(site):
                    continue
                edited = _edit_neurons(site, x)
                if edited is not None:  # None: no selected position in this forward
                    x = edited
                    site.fired += 1
        except BaseException:
            handle.remove()
            raise
        return None if x is x0 else (x, *args[1:])  # edited in place: nothing to replace

    return hook


def _post_hook(handle: "SteeringHandle", sites: list[_Site]):
    """The forward hook of one module: add / ablate / rotate its output for each of its ``sites``."""

    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        new = output
        try:
            for site in sites:
                if not _site_live(site):
                    continue
                if isinstance(new, torch.Tensor):
                    edited = _edit_features(site, new)
                    if edited is not None:
                        new = edited
                elif isinstance(new, (tuple, list)) and new and isinstance(new[0], torch.Tensor):
                    edited = _edit_features(site, new[0])
                    if edited is not None:
                        new = type(new)([edited, *new[1:]])
                else:
                    _fail(site, f"cannot edit an output of type {type(new).__name__}")
                if edited is not None:  # None: no selected position in this forward
                    site.fired += 1
        except BaseException:
            handle.remove()
            raise
        return None if new is output else new

    return hook


# ============================================================================ handles
class SteeringHandle:
    """Interventions registered on a policy; remove with :meth:`remove` or by leaving ``with``.

    Attributes:
        policy: the steered policy.
        interventions: the interventions, as given.
        sites: one compiled hook per (intervention, module).
    """

    def __init__(self, policy: SteerablePolicy, interventions: Sequence[Intervention], sites: list[_Site]) -> None:
        self.policy = policy
        self.interventions = list(interventions)
        self.sites = sites
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._last_time: float | None = None

    # -------------------------------------------------------------- registration
    def _register(self) -> None:
        """One forward-pre hook and/or one forward hook per module, each applying all of this
        handle's interventions on that module in the order they were given."""
        groups: dict[tuple[int, bool], list[_Site]] = {}
        for site in self.sites:
            groups.setdefault((id(site.module), site.pre), []).append(site)
            if site.neurons is not None:  # index tensors built once, on the module's device
                weight = getattr(site.module, "weight", None)
                device = weight.device if isinstance(weight, torch.Tensor) else torch.device("cpu")
                site.idx = site.neurons.on(torch.empty(0, device=device), torch.long)
                site.idx_cpu = site.idx.device.type == "cpu"
        try:
            for (_, pre), sites in groups.items():
                module = sites[0].module
                if pre:
                    hook = module.register_forward_pre_hook(_pre_hook(self, sites))
                else:
                    hook = module.register_forward_hook(_post_hook(self, sites))
                self._hooks.append(hook)
        except BaseException:
            self.remove()
            raise

    # -------------------------------------------------------------- life cycle
    @property
    def active(self) -> bool:
        return bool(self._hooks)

    def remove(self) -> None:
        """Remove every hook this handle registered (idempotent)."""
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook.remove()

    def __enter__(self) -> "SteeringHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # -------------------------------------------------------------- coefficients
    def coefficients(self) -> list[Coefficient]:
        """The distinct coefficient sources of this handle's interventions."""
        seen: dict[int, Coefficient] = {}
        for site in self.sites:
            seen.setdefault(id(site.coefficient), site.coefficient)
        return list(seen.values())

    def reset(self) -> None:
        """Start of an episode: reset every coefficient source (call counters, PID state)."""
        for coefficient in self.coefficients():
            coefficient.reset()
        self._last_time = None

    def begin_call(self, obs: Observation | None = None) -> dict[str, float]:
        """Before each policy call: feed ``obs`` to every coefficient source and freeze its value.

        An observation whose ``timestamp`` is not later than the previous one starts a new episode
        (sources are reset first). Returns ``{intervention label: value}``.
        """
        if obs is not None:
            if self._last_time is not None and obs.timestamp <= self._last_time:
                self.reset()
            self._last_time = float(obs.timestamp)
        for coefficient in self.coefficients():
            coefficient.on_observation(obs)
        return self.values()

    def sources(self) -> dict[str, Coefficient]:
        """Coefficient source per intervention label."""
        out: dict[str, Coefficient] = {}
        for site in self.sites:
            out.setdefault(_label(site.intervention, site.index), site.coefficient)
        return out

    def values(self) -> dict[str, float]:
        """Current coefficient value per intervention (labelled by name or ``kind#index``)."""
        out: dict[str, float] = {}
        for site in self.sites:
            out.setdefault(_label(site.intervention, site.index), site.coefficient.value)
        return out

    def fired(self) -> dict[str, int]:
        """How many times each (intervention, module) hook changed an activation."""
        return {f"{_label(s.intervention, s.index)}@{s.module_name}": s.fired for s in self.sites}

    def describe(self) -> list[dict[str, Any]]:
        """One JSON-able row per hook (kind, module, neurons / width, positions, steps)."""
        rows = []
        for s in self.sites:
            rows.append({
                "intervention": _label(s.intervention, s.index), "kind": s.intervention.kind,
                "module": s.module_name, "hook": "forward_pre" if s.pre else "forward",
                "neurons": None if s.neurons is None else s.neurons.value.tolist(), "width": s.width,
                "positions": s.positions if isinstance(s.positions, (str, int)) else str(s.positions),
                "steps": None if s.steps is None else [s.steps.start, s.steps.stop],
                "coefficient": s.coefficient.to_dict(),
            })
        return rows

    def __repr__(self) -> str:
        return f"SteeringHandle({len(self.interventions)} interventions, {len(self.sites)} hooks, active={self.active})"


def _label(intervention: Intervention, index: int) -> str:
    return intervention.name or f"{intervention.kind}#{index}"


def attach(policy: SteerablePolicy, interventions: Intervention | Iterable[Intervention]) -> SteeringHandle:
    """Validate ``interventions`` and register their hooks; returns a persistent handle.

    All validation happens before the first hook is registered, so a bad intervention leaves the
    policy untouched. Interventions that share a coefficient object share its value.
    """
    if isinstance(interventions, Intervention):
        interventions = [interventions]
    interventions = list(interventions)
    sites: list[_Site] = []
    for i, intervention in enumerate(interventions):
        if not isinstance(intervention, Intervention):
            raise ConfigError(f"expected Intervention objects, got {type(intervention).__name__} at index {i}")
        sites += _compile(policy, intervention, i)
    handle = SteeringHandle(policy, interventions, sites)
    handle._register()  # noqa: SLF001
    return handle


def steer(policy: SteerablePolicy, interventions: Intervention | Iterable[Intervention]) -> SteeringHandle:
    """Context manager form of :func:`attach`: hooks are removed on exit, also after an exception::

        with steer(policy, [clamp("vlm.layers.1.mlp", [4], 5.0)]):
            policy.act(obs)
    """
    return attach(policy, interventions)


def hook_counts(root: nn.Module | Iterable[nn.Module]) -> dict[int, tuple[int, int]]:
    """``{id(module): (#forward hooks, #forward pre-hooks)}`` over every submodule (tests, debugging)."""
    roots = [root] if isinstance(root, nn.Module) else list(root)
    out: dict[int, tuple[int, int]] = {}
    for r in roots:
        for m in r.modules():
            out[id(m)] = (len(m._forward_hooks), len(m._forward_pre_hooks))  # noqa: SLF001
    return out


__all__ = [
    "Intervention", "SteeringHandle", "attach", "steer", "clamp", "scale", "add", "ablate", "rotate",
    "hook_counts", "KINDS", "Fixed",
]
