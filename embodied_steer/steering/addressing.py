"""Where an intervention acts: module names, towers, layers, neurons, token positions, steps.

Everything is addressed through :meth:`SteerablePolicy.modules` — the adapter's named map — never
through the wrapped framework's own attribute paths, so one intervention spec works on every
adapter that uses the same names (``vlm.layers.3.mlp.down_proj`` in Pi0 / SmolVLA,
``llm.layers.3.mlp.down_proj`` in OpenVLA, ``unet.down_modules.0.1`` in the diffusion policy).

Module patterns
---------------
A pattern is an exact name or a glob over dotted names: ``*`` matches within one name segment (no
dot), ``**`` across segments, ``?`` one character, ``[0-3]`` a set — so ``vlm.layers.*.mlp.down_proj``
is every VLM down-projection, ``llm.layers.*`` every decoder layer (not their sub-modules) and
``expert.**`` everything in the action expert. A pattern that matches nothing is an error that lists the closest
names. ``tower`` restricts matches to one part of the network:

=========  =====================================================================================
vision     ``vision*`` (vision tower, projector), ``rgb_encoder*`` (diffusion)
llm / vlm  the language model: names starting ``llm.`` or ``vlm.``
expert     the action expert (``expert.*`` and the action/time projections of flow policies)
unet       the diffusion U-Net (``unet*``)
prefix     every module that fires once per chunk (``module_schedule() == "chunk"``; for a policy
           without a schedule: vision + llm)
=========  =====================================================================================

``layers`` restricts matches to names containing ``.layers.{i}`` for the given ``i``.

Token positions
---------------
Activations are ``(batch, positions, features)`` for transformer modules. ``positions`` selects:
``"all"``; ``"last"`` (the last position of each forward; with KV-cache decoding that is the newest
token); ``"prefix"`` (all positions of a forward over more than one token — the prompt / prefix
pass — and nothing in single-token decoding passes); ``"prefix_last"`` (only the last position of
a forward over more than one token: the position whose output predicts the first generated token,
e.g. a token VLA's first plan word; nothing in single-token decoding passes); an ``int`` ``n`` (the first ``n``); a
``slice``; or a list of indices. Modules without a position axis (2-D outputs) accept only
``"all"``.

Feature axis
------------
The last axis, except for 1-D convolution blocks (the diffusion U-Net), whose features are the
channels on axis 1 (``(batch, channels, time)``); there ``positions`` index the time axis.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import torch
from torch import nn

from embodied_steer.core.errors import ConfigError
from embodied_steer.core.policy import InterventionPoint, SteerablePolicy

Positions = Union[str, int, slice, Sequence[int]]
TOWERS = ("vision", "llm", "vlm", "expert", "unet", "prefix")
_TOWER_GLOBS = {
    "vision": ("vision", "vision.*", "rgb_encoder*"),
    "llm": ("llm.*", "vlm.*"),
    "vlm": ("llm.*", "vlm.*"),
    "expert": ("expert.*", "action_*", "time_mlp_*", "state_proj"),
    "unet": ("unet", "unet.*"),
}
_LAYER = re.compile(r"\.layers\.(\d+)(?:\.|$)")


class AddressError(ConfigError, KeyError):
    """A module name, neuron index, position or width does not fit the policy."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def policy_modules(policy: SteerablePolicy) -> dict[str, nn.Module]:
    """``policy.modules()`` after checking the policy declares ``ACTIVATIONS``."""
    policy.require(InterventionPoint.ACTIVATIONS, "activation steering")
    return policy.modules()


def module_schedule(policy: SteerablePolicy) -> dict[str, str]:
    """Name → ``"chunk"`` / ``"step"`` / ``"never"`` when the adapter says so, else ``{}``."""
    getter = getattr(policy, "module_schedule", None)
    return dict(getter()) if callable(getter) else {}


def close_matches(name: str, names: Sequence[str], n: int = 5) -> list[str]:
    """Names most like ``name`` (for error messages): difflib ratio, then shared prefix."""
    found = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if len(found) < n:
        stem = name.split("*")[0].rsplit(".", 1)[0]
        found += [c for c in names if stem and c.startswith(stem) and c not in found][: n - len(found)]
    return found


def resolve_modules(
    policy: SteerablePolicy,
    patterns: str | Sequence[str],
    *,
    tower: str | None = None,
    layers: Sequence[int] | None = None,
) -> list[str]:
    """Module names (in the policy's map order) matched by ``patterns``, filtered by tower / layers.

    Raises:
        AddressError: a pattern matches no module (lists close matches), an unknown tower, or the
            filters leave nothing.
    """
    modules = policy_modules(policy)
    names = list(modules)
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise AddressError("no module pattern given")
    chosen: list[str] = []
    for pattern in patterns:
        if pattern in modules:
            hits = [pattern]
        else:
            regex = glob_regex(pattern)
            hits = [n for n in names if regex.fullmatch(n)]
        if not hits:
            near = close_matches(pattern, names)
            hint = f"; closest: {', '.join(near)}" if near else f"; names look like: {', '.join(names[:6])}, …"
            raise AddressError(
                f"no module named '{pattern}' in policy '{policy.info.name}' ({len(names)} modules{hint})"
            )
        chosen += [h for h in hits if h not in chosen]
    if tower is not None:
        allowed = set(tower_members(policy, tower))
        kept = [n for n in chosen if n in allowed]
        if not kept:
            raise AddressError(f"none of {chosen[:5]}{'…' if len(chosen) > 5 else ''} belongs to tower '{tower}'")
        chosen = kept
    if layers is not None:
        want = {int(i) for i in layers}
        kept = [n for n in chosen if (m := _LAYER.search(n)) and int(m.group(1)) in want]
        if not kept:
            raise AddressError(f"none of the matched modules is in layers {sorted(want)}: {chosen[:5]}")
        chosen = kept
    order = {n: i for i, n in enumerate(names)}
    return sorted(chosen, key=order.__getitem__)


def glob_regex(pattern: str) -> re.Pattern:
    """Compile a dotted-name glob: ``*`` = ``[^.]*``, ``**`` = ``.*``, ``?`` = ``[^.]``, ``[…]`` a set."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append("[^.]*")
        elif ch == "?":
            out.append("[^.]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out))


def tower_members(policy: SteerablePolicy, tower: str) -> list[str]:
    """Names of the modules that belong to ``tower`` (see the module docstring)."""
    names = list(policy_modules(policy))
    if tower not in TOWERS:
        raise AddressError(f"unknown tower '{tower}'; towers: {', '.join(TOWERS)}")
    if tower == "prefix":
        schedule = module_schedule(policy)
        if schedule:
            return [n for n in names if schedule.get(n) == "chunk"]
        return tower_members(policy, "vision") + tower_members(policy, "llm")
    globs = _TOWER_GLOBS[tower]
    return [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]


def layer_index(name: str) -> int | None:
    """The ``i`` of ``….layers.{i}…`` in a module name, or ``None``."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


# ----------------------------------------------------------------------------- modules & widths
def down_projection(policy: SteerablePolicy, name: str) -> tuple[str, nn.Linear]:
    """The MLP down-projection addressed by ``name``: the module itself if it is a linear layer,
    else ``name + ".down_proj"`` / ``name + ".mlp.down_proj"`` (map entry or child attribute).

    Raises:
        AddressError: no down-projection can be found under ``name``.
    """
    modules = policy_modules(policy)
    module = modules[name]
    if _is_linear(module):
        return name, module
    for suffix in (".down_proj", ".mlp.down_proj"):
        if name + suffix in modules and _is_linear(modules[name + suffix]):
            return name + suffix, modules[name + suffix]
    for path in ("down_proj", "mlp.down_proj", "fc2", "mlp.fc2"):
        child = module
        for part in path.split("."):
            child = getattr(child, part, None)
        if child is not None and _is_linear(child):
            return f"{name}.{path}", child
    raise AddressError(
        f"module '{name}' ({type(module).__name__}) is not an MLP down-projection and has no "
        "'down_proj' / 'mlp.down_proj' inside: neuron clamps act on a down-projection's input"
    )


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (
        hasattr(module, "in_features") and hasattr(module, "weight") and getattr(module.weight, "ndim", 0) == 2
    )


def input_width(module: nn.Module) -> int:
    """Input features of a linear layer (the number of MLP neurons for a down-projection)."""
    return int(module.in_features)


def feature_axis(module: nn.Module) -> int:
    """Axis of the features in the module's output: 1 for 1-D conv blocks, else -1."""
    if isinstance(module, nn.Conv1d):
        return 1
    first = next((m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Embedding))), None)
    return 1 if isinstance(first, nn.Conv1d) else -1


def output_width(module: nn.Module) -> int | None:
    """Feature width of the module's output when it can be read from the module, else ``None``."""
    if _is_linear(module):
        return int(module.out_features)
    if isinstance(module, nn.Embedding):
        return int(module.embedding_dim)
    if isinstance(module, nn.Conv1d):
        return int(module.out_channels)
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.ndim == 1:  # norms
        return int(weight.shape[0])
    down = getattr(module, "down_proj", None)  # an MLP: its output is its down-projection's
    if down is not None and _is_linear(down):
        return int(down.out_features)
    return None


def check_neurons(neurons: Sequence[int], width: int, module_name: str) -> torch.Tensor:
    """Neuron indices as a long tensor; :class:`AddressError` naming the module and its width."""
    idx = torch.as_tensor(list(neurons), dtype=torch.long).flatten()
    if idx.numel() == 0:
        raise AddressError(f"no neuron indices given for module '{module_name}'")
    bad = idx[(idx < 0) | (idx >= width)]
    if bad.numel():
        raise AddressError(
            f"neuron indices {bad.tolist()[:8]} out of range for module '{module_name}', "
            f"which has {width} neurons (valid: 0..{width - 1})"
        )
    if idx.unique().numel() != idx.numel():
        raise AddressError(f"duplicate neuron indices for module '{module_name}': {idx.tolist()}")
    return idx


def check_vector(vector, width: int | None, module_name: str, what: str = "vector") -> torch.Tensor:
    """A 1-D float vector of ``width`` finite entries; errors name the module and expected shape."""
    vec = torch.as_tensor(vector, dtype=torch.float32)
    if vec.ndim != 1:
        raise AddressError(f"{what} for module '{module_name}' must be 1-D with shape ({width},), got {tuple(vec.shape)}")
    if width is not None and vec.shape[0] != width:
        raise AddressError(
            f"{what} for module '{module_name}' has shape {tuple(vec.shape)}, expected ({width},) "
            f"(the module's feature width)"
        )
    if not torch.isfinite(vec).all():
        raise AddressError(f"{what} for module '{module_name}' contains NaN or inf")
    return vec


# ----------------------------------------------------------------------------- positions & steps
def check_positions(positions: Positions) -> Positions:
    """Validate a position selector (see the module docstring); returns it normalised."""
    if isinstance(positions, str):
        if positions not in ("all", "last", "prefix", "prefix_last"):
            raise AddressError(f"positions must be 'all', 'last', 'prefix', 'prefix_last', an int, a slice or a list, "
                               f"got '{positions}'")
        return positions
    if isinstance(positions, bool):
        raise AddressError(f"positions must be 'all', 'last', 'prefix', an int, a slice or a list, got {positions!r}")
    if isinstance(positions, int):
        if positions < 1:
            raise AddressError(f"positions={positions}: the number of leading positions must be >= 1")
        return positions
    if isinstance(positions, slice):
        return positions
    if isinstance(positions, Mapping):
        return slice(positions.get("start"), positions.get("stop"), positions.get("step"))
    try:
        return tuple(int(p) for p in positions)
    except TypeError:
        raise AddressError(f"positions must be 'all', 'last', 'prefix', an int, a slice or a list, got {positions!r}") from None


def position_index(positions: Positions, length: int) -> slice | list[int] | None:
    """Index along the position axis for a forward over ``length`` positions; ``None`` = skip."""
    if positions == "all":
        return slice(None)
    if positions == "last":
        return slice(length - 1, length)
    if positions == "prefix":
        return slice(None) if length > 1 else None
    if positions == "prefix_last":
        return slice(length - 1, length) if length > 1 else None
    if isinstance(positions, int):
        return slice(0, min(positions, length))
    if isinstance(positions, slice):
        return positions
    kept = sorted({p % length for p in positions if -length <= p < length})
    return kept or None


@dataclass(frozen=True)
class StepRange:
    """Denoising steps ``start <= index < stop`` (``stop=None``: to the end)."""

    start: int = 0
    stop: int | None = None

    def __post_init__(self) -> None:
        if self.start < 0 or (self.stop is not None and self.stop <= self.start):
            raise AddressError(f"step range [{self.start}, {self.stop}) is empty or negative")

    def __contains__(self, index: int) -> bool:
        return index >= self.start and (self.stop is None or index < self.stop)

    @classmethod
    def parse(cls, steps) -> "StepRange | None":
        """``None``, a ``StepRange``, ``(start, stop)``, ``range``, ``{"start":, "stop":}`` or ``"a:b"``."""
        if steps is None or isinstance(steps, StepRange):
            return steps
        if isinstance(steps, range):
            if steps.step != 1:
                raise AddressError("a step range must be contiguous (step 1)")
            return cls(steps.start, steps.stop)
        if isinstance(steps, str):
            start, _, stop = steps.partition(":")
            return cls(int(start or 0), int(stop) if stop else None)
        if isinstance(steps, Mapping):
            return cls(int(steps.get("start", 0)), None if steps.get("stop") is None else int(steps["stop"]))
        if isinstance(steps, int):
            return cls(steps, steps + 1)
        start, stop = steps
        return cls(int(start or 0), None if stop is None else int(stop))
