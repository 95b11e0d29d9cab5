"""The strength of an intervention over an episode: fixed, scheduled, or closed-loop (PID).

A coefficient *source* is asked for its value **once per policy call** (one action chunk): the
evaluation loop — or whoever calls the policy — first hands it the latest observation through
:meth:`Coefficient.on_observation`, and every hook that fires during that call reads the same
frozen value (:attr:`Coefficient.value`). The sources keep their own call counter, reset by
:meth:`Coefficient.reset` at the start of an episode. What the value *means* depends on the
intervention kind: the clamp value of a neuron, the scale of an added vector, a rotation angle in
radians, the fraction of a direction that is ablated.

* :class:`Fixed` — a constant.
* :class:`Schedule` — a function of the call index (chunk index, ``unit="call"``) or of the
  observation time in seconds (``unit="time"``): ``linear``, ``cosine``, ``piecewise`` (constant
  segments) or any callable.
* :class:`PID` — drives a measured behaviour (read from each observation by a :class:`Measure`,
  e.g. end-effector height ``state[2]`` or speed) toward a target, with output limits and
  anti-windup (the integral is frozen while the output saturates in the direction of the error,
  and is itself clamped so the integral term alone cannot exceed the output limits).
* :class:`Gated` — another source that is *switched on* only while conditions on the observation
  hold (a task phase, e.g. "the gripper is closed on the cube"); while off, the intervention is
  not applied at all (:attr:`Coefficient.active` is ``False`` and the hooks pass activations
  through unchanged) — for a clamp there is no coefficient value that means "no edit".

Static clamping is known to hurt task success badly (OpenVLA on LIBERO: 71% → 27% / 2% under a
static clamp; closed-loop control keeps ~72–76%), which is why the closed-loop source is part of
the API and not an afterthought.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from embodied_steer.core.errors import ConfigError
from embodied_steer.core.types import Observation


def check_finite(value: float, what: str = "coefficient") -> float:
    """``float(value)``; :class:`ConfigError` for NaN / inf / non-numbers."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return out


class Coefficient:
    """Base class: a value frozen per policy call, updated from observations."""

    #: Whether the intervention applies during the current policy call (hooks skip it when
    #: ``False``). Only :class:`Gated` ever switches it off.
    active: bool = True

    def __init__(self) -> None:
        self.calls = 0
        self._value = 0.0

    @property
    def value(self) -> float:
        """The value hooks use during the current policy call."""
        return self._value

    def reset(self) -> None:
        """Start of an episode: forget the call counter and any controller state."""
        self.calls = 0

    def on_observation(self, obs: Observation | None) -> float:
        """Advance to the next policy call given its observation; return the new frozen value."""
        value = check_finite(self._compute(obs), f"{type(self).__name__} coefficient")
        self._value = value
        self.calls += 1
        return value

    def _compute(self, obs: Observation | None) -> float:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": type(self).__name__.lower()}


class Fixed(Coefficient):
    """Always ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.constant = check_finite(value)
        self._value = self.constant

    def _compute(self, obs: Observation | None) -> float:
        return self.constant

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fixed", "value": self.constant}


class Schedule(Coefficient):
    """A value that follows a function of the call index (or of observation time).

    Args:
        kind: ``"linear"`` (``start`` → ``end`` over ``length``, then ``end``), ``"cosine"``
            (half-cosine from ``start`` to ``end`` over ``length``), ``"piecewise"`` (``points``:
            ``[(from_x, value), …]``, each value holds from its ``x`` on) or ``"function"``
            (``fn(x) -> float``).
        unit: ``"call"`` — ``x`` is the 0-based policy call (chunk) index in the episode;
            ``"time"`` — ``x`` is ``obs.timestamp`` in seconds.
    """

    def __init__(
        self,
        kind: str = "linear",
        *,
        start: float = 0.0,
        end: float = 1.0,
        length: float = 10.0,
        points: Sequence[Sequence[float]] | None = None,
        fn: Callable[[float], float] | None = None,
        unit: str = "call",
    ) -> None:
        super().__init__()
        if kind not in ("linear", "cosine", "piecewise", "function"):
            raise ConfigError(f"schedule kind must be linear, cosine, piecewise or function, got '{kind}'")
        if unit not in ("call", "time"):
            raise ConfigError(f"schedule unit must be 'call' or 'time', got '{unit}'")
        self.kind, self.unit = kind, unit
        self.start, self.end = check_finite(start, "schedule start"), check_finite(end, "schedule end")
        self.length = check_finite(length, "schedule length")
        if kind in ("linear", "cosine") and self.length <= 0:
            raise ConfigError(f"schedule length must be > 0, got {length}")
        if kind == "piecewise":
            if not points:
                raise ConfigError("a piecewise schedule needs points: [[from_x, value], ...]")
            self.points = sorted((check_finite(x, "schedule point"), check_finite(v, "schedule value")) for x, v in points)
        else:
            self.points = None
        if kind == "function" and not callable(fn):
            raise ConfigError("a function schedule needs fn(x) -> float")
        self.fn = fn
        self._value = self.at(0.0)

    def at(self, x: float) -> float:
        """The schedule's value at ``x`` (call index or seconds)."""
        if self.kind == "function":
            return float(self.fn(x))
        if self.kind == "piecewise":
            value = self.points[0][1]
            for start, v in self.points:
                if x >= start:
                    value = v
            return value
        frac = min(max(x / self.length, 0.0), 1.0)
        if self.kind == "cosine":
            frac = 0.5 * (1.0 - math.cos(math.pi * frac))
        return self.start + (self.end - self.start) * frac

    def _compute(self, obs: Observation | None) -> float:
        if self.unit == "time":
            return self.at(0.0 if obs is None else float(obs.timestamp))
        return self.at(float(self.calls))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "schedule", "schedule": self.kind, "start": self.start, "end": self.end,
                "length": self.length, "points": self.points, "unit": self.unit}


# ----------------------------------------------------------------------------- measures
class Measure:
    """Reads one number from an observation (the behaviour a :class:`PID` controls)."""

    def __call__(self, obs: Observation) -> float:
        raise NotImplementedError

    def reset(self) -> None:
        """Start of an episode."""


@dataclass
class StateValue(Measure):
    """``obs.state[index]`` (or ``obs.env_state`` with ``source="env_state"``), e.g. end-effector
    height ``state[2]`` in the robosuite wrappers."""

    index: int
    source: str = "state"

    def __call__(self, obs: Observation) -> float:
        vector = getattr(obs, self.source)
        if vector is None:
            raise ConfigError(f"measure needs obs.{self.source}, which this observation lacks")
        if not -len(vector) <= self.index < len(vector):
            raise ConfigError(f"measure index {self.index} out of range for obs.{self.source} of size {len(vector)}")
        return float(vector[self.index])


@dataclass
class StateSpeed(Measure):
    """Speed of ``obs.state[indices]`` (e.g. end-effector position ``[0, 1, 2]``): the norm of its
    change since the previous observation divided by the elapsed ``obs.timestamp`` (0 at the first
    observation of an episode or when no time passed)."""

    indices: Sequence[int] = (0, 1, 2)
    source: str = "state"
    _last: tuple[float, np.ndarray] | None = field(default=None, repr=False)

    def __call__(self, obs: Observation) -> float:
        vector = getattr(obs, self.source)
        if vector is None:
            raise ConfigError(f"measure needs obs.{self.source}, which this observation lacks")
        point = np.asarray(vector, dtype=np.float64)[list(self.indices)]
        last, self._last = self._last, (float(obs.timestamp), point)
        if last is None or obs.timestamp <= last[0]:
            return 0.0
        return float(np.linalg.norm(point - last[1]) / (obs.timestamp - last[0]))

    def reset(self) -> None:
        self._last = None


@dataclass
class StateNorm(Measure):
    """Euclidean norm of ``obs.state[indices]`` (or another vector field), e.g. the gripper-to-cube
    distance ``norm(env_state[7:10])`` in robosuite Lift (metres)."""

    indices: Sequence[int] = (0, 1, 2)
    source: str = "state"

    def __call__(self, obs: Observation) -> float:
        vector = getattr(obs, self.source)
        if vector is None:
            raise ConfigError(f"measure needs obs.{self.source}, which this observation lacks")
        if max(self.indices) >= len(vector) or min(self.indices) < -len(vector):
            raise ConfigError(f"measure indices {list(self.indices)} out of range for obs.{self.source} of size {len(vector)}")
        return float(np.linalg.norm(np.asarray(vector, dtype=np.float64)[list(self.indices)]))


_FIELDS = ("state", "env_state")


def _field_indices(text: str, spec: str) -> tuple[str, list[int]]:
    """``"state[0:3]"`` / ``"env_state[7,8]"`` → (field, indices)."""
    if "[" not in text or not text.endswith("]"):
        raise ConfigError(f"cannot parse measure '{spec}': expected e.g. 'state[0:3]'")
    fld, rng = text[:-1].split("[", 1)
    if fld not in _FIELDS:
        raise ConfigError(f"measure '{spec}': unknown observation field '{fld}' (fields: {', '.join(_FIELDS)})")
    try:
        if ":" in rng:
            a, b = rng.split(":")
            idx = list(range(int(a), int(b)))
        else:
            idx = [int(i) for i in rng.split(",")]
    except ValueError:
        raise ConfigError(f"cannot parse the indices of measure '{spec}'") from None
    if not idx:
        raise ConfigError(f"measure '{spec}' selects no index")
    return fld, idx


def make_measure(spec: Measure | Callable[[Observation], float] | Mapping[str, Any] | str) -> Callable[[Observation], float]:
    """A measure from an object, a callable, ``"state[2]"`` / ``"speed(state[0:3])"`` /
    ``"norm(env_state[7:10])"`` or a mapping ``{kind: state|speed|norm, index: 2 | indices: [0,1,2],
    source: state}``."""
    if isinstance(spec, Measure) or (callable(spec) and not isinstance(spec, (str, Mapping))):
        return spec
    if isinstance(spec, str):
        text = spec.replace(" ", "")
        for name, cls in (("speed", StateSpeed), ("norm", StateNorm)):
            if text.startswith(name + "(") and text.endswith(")"):
                fld, idx = _field_indices(text[len(name) + 1:-1], spec)
                return cls(idx, fld)
        if "[" in text and text.endswith("]"):
            fld, idx = text[:-1].split("[", 1)
            if fld not in _FIELDS:
                raise ConfigError(f"measure '{spec}': unknown observation field '{fld}' (fields: {', '.join(_FIELDS)})")
            try:
                return StateValue(int(idx), fld)
            except ValueError:
                raise ConfigError(f"cannot parse the index of measure '{spec}'") from None
        raise ConfigError(f"cannot parse measure '{spec}': use 'state[2]', 'speed(state[0:3])' or 'norm(env_state[7:10])'")
    spec = dict(spec)
    kind = spec.pop("kind", "state")
    if kind == "state":
        return StateValue(int(spec.get("index", 0)), spec.get("source", "state"))
    if kind == "speed":
        return StateSpeed(tuple(spec.get("indices", (0, 1, 2))), spec.get("source", "state"))
    if kind == "norm":
        return StateNorm(tuple(spec.get("indices", (0, 1, 2))), spec.get("source", "state"))
    raise ConfigError(f"measure kind must be 'state', 'speed' or 'norm', got '{kind}'")


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
}


@dataclass
class Condition:
    """``measure(obs) <op> threshold`` — one condition of a :class:`Gated` coefficient.

    Attributes:
        measure: what to read (see :func:`make_measure`), in the observation's units.
        op: ``<``, ``<=``, ``>`` or ``>=``.
        threshold: compared with the measurement.
    """

    measure: Any
    op: str
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ConfigError(f"condition operator must be one of {', '.join(_OPS)}, got '{self.op}'")
        self.threshold = check_finite(self.threshold, "condition threshold")
        self.spec = self.measure if isinstance(self.measure, str) else type(self.measure).__name__
        self.measure = make_measure(self.measure)

    def __call__(self, obs: Observation) -> bool:
        return _OPS[self.op](check_finite(self.measure(obs), f"measurement '{self.spec}'"), self.threshold)

    def reset(self) -> None:
        if isinstance(self.measure, Measure):
            self.measure.reset()

    def __str__(self) -> str:
        return f"{self.spec}{self.op}{self.threshold:g}"

    @classmethod
    def parse(cls, spec: "Condition | str | Mapping[str, Any]") -> "Condition":
        """A condition from itself, ``"state[7] < 0.028"`` or ``{measure:, op:, threshold:}``."""
        if isinstance(spec, Condition):
            return spec
        if isinstance(spec, Mapping):
            missing = {"measure", "op", "threshold"} - set(spec)
            if missing:
                raise ConfigError(f"a gate condition needs {sorted(missing)}, got {dict(spec)}")
            return cls(spec["measure"], spec["op"], spec["threshold"])
        text = str(spec).replace(" ", "")
        for op in ("<=", ">=", "<", ">"):  # two-character operators first
            if op in text:
                left, right = text.split(op, 1)
                return cls(left, op, check_finite(right, f"threshold of condition '{spec}'"))
        raise ConfigError(f"cannot parse gate condition '{spec}': use e.g. 'state[7] < 0.028'")


class Gated(Coefficient):
    """``inner``'s value, applied only while every condition on the observation holds.

    Used to restrict an intervention to a task phase without a learned phase detector, e.g. the
    "up" neurons of a Lift policy only once the gripper is closed on the cube::

        Gated(3.0, ["state[7] < 0.028", "norm(env_state[7:10]) < 0.02"])

    The inner source is advanced on every observation (a schedule keeps counting, a PID keeps
    integrating) whether or not the gate is open. While the gate is closed :attr:`active` is
    ``False`` and the hooks leave activations untouched.

    Args:
        inner: any coefficient spec (:func:`as_coefficient`).
        conditions: one or more :class:`Condition` (or strings / mappings it parses); all must hold.
        latch: once open, stay open until the episode ends (:meth:`reset`).
    """

    def __init__(self, inner: Any, conditions: Sequence[Any] | str, *, latch: bool = False) -> None:
        super().__init__()
        self.inner = as_coefficient(inner)
        if isinstance(conditions, (str, Mapping, Condition)):
            conditions = [conditions]
        self.conditions = [Condition.parse(c) for c in conditions]
        if not self.conditions:
            raise ConfigError("a gated coefficient needs at least one condition")
        self.latch = bool(latch)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.inner.reset()
        for c in self.conditions:
            c.reset()
        self.active = False
        self._value = self.inner.value

    def on_observation(self, obs: Observation | None) -> float:
        value = self.inner.on_observation(obs)
        if obs is not None:  # without an observation the gate keeps its state
            is_open = all(c(obs) for c in self.conditions)
            self.active = is_open or (self.latch and self.active)
        self.active = self.active and self.inner.active
        self._value = value
        self.calls += 1
        return value

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "gated", "inner": self.inner.to_dict(), "conditions": [str(c) for c in self.conditions],
                "latch": self.latch}


class PID(Coefficient):
    """Closed-loop coefficient: ``u = bias + sign * (kp e + ki ∫e dt + kd de/dt)``, ``e = target - measure(obs)``.

    Args:
        measure: what to read from each observation (see :func:`make_measure`).
        target: the set point for the measurement.
        kp, ki, kd: gains (per unit of measurement error).
        bias: output with zero error (the feed-forward coefficient).
        limits: ``(low, high)`` output limits.
        sign: ``+1`` when a larger coefficient raises the measurement, ``-1`` when it lowers it.
        dt: seconds between calls when observations carry no increasing timestamps.

    Anti-windup: the integral is not accumulated while the output is saturated and the error would
    push it further into saturation, and it is clamped so that ``ki * integral`` stays inside the
    limits.
    """

    def __init__(
        self,
        measure: Any,
        target: float,
        *,
        kp: float = 1.0,
        ki: float = 0.0,
        kd: float = 0.0,
        bias: float = 0.0,
        limits: Sequence[float] = (-math.inf, math.inf),
        sign: float = 1.0,
        dt: float = 1.0,
    ) -> None:
        super().__init__()
        self.measure = make_measure(measure)
        self.target = check_finite(target, "PID target")
        self.kp, self.ki, self.kd = (check_finite(g, "PID gain") for g in (kp, ki, kd))
        self.bias = check_finite(bias, "PID bias")
        low, high = (float(x) for x in limits)
        if math.isnan(low) or math.isnan(high) or low > high:
            raise ConfigError(f"PID limits must be (low <= high), got {tuple(limits)}")
        if not low <= self.bias <= high:
            raise ConfigError(f"PID bias {self.bias} lies outside the limits ({low}, {high})")
        self.limits = (low, high)
        self.sign = 1.0 if sign >= 0 else -1.0
        self.dt = check_finite(dt, "PID dt")
        self._value = self.bias
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.integral = 0.0
        self.last_error: float | None = None
        self.last_time: float | None = None
        self.last_measurement: float | None = None
        self._value = self.bias
        if isinstance(self.measure, Measure):
            self.measure.reset()

    def _compute(self, obs: Observation | None) -> float:
        if obs is None:  # nothing measured: keep the previous output
            return self._value
        y = check_finite(self.measure(obs), "PID measurement")
        self.last_measurement = y
        error = self.target - y
        now = float(obs.timestamp)
        dt = self.dt if self.last_time is None or now <= self.last_time else now - self.last_time
        derivative = 0.0 if self.last_error is None else (error - self.last_error) / dt
        low, high = self.limits
        candidate = self.integral + error * dt
        unclamped = self.bias + self.sign * (self.kp * error + self.ki * candidate + self.kd * derivative)
        pushing_high = unclamped > high and self.sign * error > 0
        pushing_low = unclamped < low and self.sign * error < 0
        if not (pushing_high or pushing_low):
            self.integral = candidate
        if self.ki != 0.0:  # the integral term alone stays within the limits
            bound_lo, bound_hi = sorted(((low - self.bias) / (self.sign * self.ki), (high - self.bias) / (self.sign * self.ki)))
            self.integral = min(max(self.integral, bound_lo), bound_hi)
        self.last_error, self.last_time = error, now
        out = self.bias + self.sign * (self.kp * error + self.ki * self.integral + self.kd * derivative)
        return min(max(out, low), high)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "pid", "target": self.target, "kp": self.kp, "ki": self.ki, "kd": self.kd,
                "bias": self.bias, "limits": list(self.limits), "sign": self.sign}


def as_coefficient(spec: Any) -> Coefficient:
    """A :class:`Coefficient` from a number, a ``Coefficient``, or a config mapping.

    Mappings: ``{kind: fixed, value: 3}``, ``{kind: schedule, schedule: linear|cosine|piecewise,
    start:, end:, length:, points:, unit:}``, ``{kind: pid, measure: "state[2]", target:, kp:, ki:,
    kd:, bias:, limits: [lo, hi], sign:, dt:}``, ``{kind: gated, inner: <any of these>, when:
    ["state[7] < 0.028", …], latch: false}``.
    """
    if isinstance(spec, Coefficient):
        return spec
    if isinstance(spec, Mapping):
        spec = dict(spec)
        kind = spec.pop("kind", "fixed")
        if kind == "fixed":
            return Fixed(spec.get("value", 1.0))
        if kind == "schedule":
            return Schedule(spec.pop("schedule", "linear"), **spec)
        if kind == "pid":
            if "measure" not in spec or "target" not in spec:
                raise ConfigError("a pid coefficient needs 'measure' and 'target'")
            return PID(spec.pop("measure"), spec.pop("target"), **spec)
        if kind == "gated":
            if "inner" not in spec or "when" not in spec:
                raise ConfigError("a gated coefficient needs 'inner' (a coefficient) and 'when' (conditions)")
            return Gated(spec["inner"], spec["when"], latch=bool(spec.get("latch", False)))
        raise ConfigError(f"coefficient kind must be fixed, schedule, pid or gated, got '{kind}'")
    if callable(spec):
        return Schedule("function", fn=spec)
    return Fixed(spec)
