"""The guarded operations a compiled reward program runs through.

The sandbox (:mod:`embodied_steer.vls.sandbox`) rewrites every operator, call, attribute read and
subscript of a reward program into a call to one of the helpers built here, so nothing a program
does reaches Python or torch except through a function that

* accepts only the value types a reward needs (tensors, numbers, short strings, tuples/lists),
* checks the wall-clock deadline of the current call,
* checks the size of the tensor it is about to make (before allocating where the size is known in
  advance) and adds it to the call's memory and work budgets.

Exceeding a budget raises :class:`~embodied_steer.vls.errors.SandboxLimitExceeded`.
"""

from __future__ import annotations

import math
import operator
import threading
import time
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

import torch

from embodied_steer.vls.errors import RewardProgramError, SandboxLimitExceeded
from embodied_steer.vls.limits import SandboxLimits

# --- the allow-lists (also read by the static checker) -------------------------------------------

#: torch functions by dotted name relative to ``torch`` (``F.x`` is ``nn.functional.x``).
ELEMENTWISE = frozenset({
    "abs", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "square", "sin", "cos", "tan", "tanh",
    "atan", "asin", "acos", "atan2", "sigmoid", "relu", "sign", "floor", "ceil", "round", "clamp",
    "clip", "clamp_min", "clamp_max", "neg", "reciprocal", "pow", "minimum", "maximum", "where",
    "lerp", "isfinite", "isnan", "nan_to_num", "logical_and", "logical_or", "logical_not", "erf",
    "hypot", "softmax", "log_softmax",
})
REDUCTIONS = frozenset({
    "sum", "mean", "prod", "min", "max", "amin", "amax", "argmin", "argmax", "norm", "std", "var",
    "logsumexp", "cumsum", "all", "any", "dist",
})
SHAPE_OPS = frozenset({
    "stack", "cat", "concat", "reshape", "flatten", "squeeze", "unsqueeze", "transpose", "permute",
    "diff", "flip",
})
GROWING = frozenset({"cdist", "matmul", "outer", "dot", "cross"})
CREATION = frozenset({"zeros", "ones", "full", "arange", "linspace", "eye"})
CREATION_LIKE = frozenset({"zeros_like", "ones_like", "full_like", "tensor", "as_tensor"})
NAMESPACED = frozenset({
    "linalg.norm", "linalg.vector_norm", "linalg.cross",
    "nn.functional.relu", "nn.functional.softplus", "nn.functional.normalize",
    "nn.functional.cosine_similarity", "nn.functional.pairwise_distance", "nn.functional.softmax",
    "nn.functional.sigmoid", "nn.functional.elu", "nn.functional.leaky_relu",
})
TORCH_FUNCTIONS = ELEMENTWISE | REDUCTIONS | SHAPE_OPS | GROWING | CREATION | CREATION_LIKE | NAMESPACED

#: non-callable torch attributes (constants and dtypes).
TORCH_CONSTANTS: Mapping[str, Any] = MappingProxyType({
    "pi": math.pi, "e": math.e, "inf": math.inf,
    "float32": torch.float32, "float64": torch.float64, "float": torch.float32, "double": torch.float64,
    "long": torch.int64, "int64": torch.int64, "bool": torch.bool,
})

#: ``math`` functions and constants (plain Python numbers only).
MATH_FUNCTIONS: Mapping[str, Callable[..., Any]] = MappingProxyType({
    name: getattr(math, name)
    for name in ("sqrt", "exp", "log", "cos", "sin", "tan", "atan2", "tanh", "radians", "degrees",
                 "hypot", "floor", "ceil", "fabs")
})
MATH_CONSTANTS: Mapping[str, Any] = MappingProxyType({"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf})

#: methods callable on tensors (``x.sum(dim=-1)``). Nothing that mutates in place (``*_``), copies
#: out of torch (``tolist``, ``numpy``, ``item``), touches storage, devices or autograd state.
TENSOR_METHODS = frozenset({
    "abs", "exp", "log", "log1p", "sqrt", "square", "sin", "cos", "tanh", "sigmoid", "relu", "sign",
    "floor", "ceil", "round", "clamp", "clip", "clamp_min", "clamp_max", "neg", "pow", "reciprocal",
    "sum", "mean", "prod", "min", "max", "amin", "amax", "argmin", "argmax", "norm", "std", "var",
    "logsumexp", "cumsum", "all", "any", "reshape", "view", "flatten", "squeeze", "unsqueeze",
    "transpose", "permute", "t", "expand", "expand_as", "repeat", "diff", "flip", "softmax", "float",
    "double", "clone", "detach", "dim", "size", "numel", "isfinite", "nan_to_num", "matmul", "dot",
    "minimum", "maximum", "lerp", "contiguous", "where", "atan2", "to", "type_as",
})
TENSOR_GROWING_METHODS = frozenset({"repeat", "matmul", "dot"})  # .expand makes a view: checked after

#: attributes readable without a call.
VALUE_ATTRIBUTES = frozenset({"shape", "ndim", "T", "mT", "values", "indices", "device", "dtype"})
_TENSOR_ATTRIBUTES = frozenset({"shape", "ndim", "T", "mT", "device", "dtype"})
_RESULT_ATTRIBUTES = frozenset({"values", "indices"})

#: plain names a program may call.
BUILTIN_FUNCTIONS = frozenset({"abs", "min", "max", "sum", "len", "float", "int", "range"})

#: keyword arguments no call may receive (they write into tensors or set autograd / memory state).
#: ``device=`` is accepted only with the trajectory's own device (checked at run time).
FORBIDDEN_KEYWORDS = frozenset({
    "out", "requires_grad", "pin_memory", "layout", "memory_format", "generator", "names", "copy",
})

_NUMBER = (bool, int, float)


class _CallState(threading.local):
    deadline: float = math.inf
    numel: int = 0
    work: int = 0
    device: torch.device | None = None
    dtype: torch.dtype = torch.float32
    active: bool = False


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 0)
    return n


class Guard:
    """Budgets of one compiled program; :meth:`session` opens one call's budget."""

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        self._state = _CallState()

    # -- per-call session ------------------------------------------------------------------------
    def session(self, *, device: torch.device, dtype: torch.dtype) -> "_Session":
        return _Session(self, device, dtype)

    # -- checks ----------------------------------------------------------------------------------
    def tick(self) -> None:
        state = self._state
        if time.monotonic() > state.deadline:
            raise SandboxLimitExceeded(
                f"time limit exceeded: one call may take at most {self.limits.call_timeout_s:g} s")

    def check_size(self, numel: int, what: str) -> None:
        if numel > self.limits.max_tensor_numel:
            raise SandboxLimitExceeded(
                f"memory limit: {what} would make a tensor of {numel:,} elements "
                f"(at most {self.limits.max_tensor_numel:,})")

    def check_broadcast(self, tensors: list[torch.Tensor], what: str) -> None:
        """Check the size of the broadcast of ``tensors`` before an elementwise operation."""
        bound = 1
        for t in tensors:
            bound *= max(t.numel(), 1)
        if bound <= self.limits.max_tensor_numel:
            return  # the broadcast can never be larger than the product of the inputs
        n = _broadcast_numel(tensors)
        if n is not None:
            self.check_size(n, what)

    def add_work(self, n: int, what: str) -> None:
        state = self._state
        state.work += int(n)
        if state.work > self.limits.max_work:
            raise SandboxLimitExceeded(
                f"work limit: {what} takes the call over {self.limits.max_work:,} element-operations")

    def account(self, result: Any, what: str) -> Any:
        """Check and count every tensor in ``result``; return ``result`` unchanged."""
        for t in _tensors_in(result):
            n = t.numel()
            self.check_size(n, what)
            state = self._state
            state.numel += n
            if state.numel > self.limits.max_total_numel:
                raise SandboxLimitExceeded(
                    f"memory limit: {what} takes the call over {self.limits.max_total_numel:,} tensor "
                    "elements in all")
            self.add_work(n, what)
        return result

    def check_int(self, value: Any, what: str) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > self.limits.max_int_bits:
            raise SandboxLimitExceeded(f"{what} makes an integer over {self.limits.max_int_bits} bits")
        return value

    @property
    def device(self) -> torch.device | None:
        return self._state.device

    @property
    def dtype(self) -> torch.dtype:
        return self._state.dtype


class _Session:
    def __init__(self, guard: Guard, device: torch.device, dtype: torch.dtype) -> None:
        self.guard, self.device, self.dtype = guard, device, dtype

    def __enter__(self) -> Guard:
        state = self.guard._state
        if state.active:
            raise RewardProgramError("a reward program cannot be called from inside itself")
        state.active = True
        state.deadline = time.monotonic() + self.guard.limits.call_timeout_s
        state.numel = state.work = 0
        state.device, state.dtype = self.device, self.dtype
        return self.guard

    def __exit__(self, *exc: Any) -> None:
        state = self.guard._state
        state.active = False
        state.deadline = math.inf
        state.device = None


def _tensors_in(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            if isinstance(v, torch.Tensor):
                yield v


def _check_value(value: Any, what: str, depth: int = 0) -> None:
    """Only tensors, numbers, None, short strings, dtypes, slices and (nested) tuples/lists of them
    may be passed to a guarded operation."""
    if value is None or value is Ellipsis or isinstance(value, (torch.Tensor, torch.dtype, torch.device, str, slice) + _NUMBER):
        return
    if isinstance(value, (tuple, list)) and depth < 4:
        for v in value:
            _check_value(v, what, depth + 1)
        return
    raise RewardProgramError(f"{what} got a value of type {type(value).__name__}, which reward programs cannot use")


def broadcast_shape(*shapes: Iterable[int]) -> tuple[int, ...] | None:
    """NumPy/torch broadcasting of ``shapes``; ``None`` when they do not broadcast.

    (``torch.broadcast_shapes`` would do, but its first call imports ``torch._refs``: seconds.)"""
    dims = [tuple(int(d) for d in s) for s in shapes]
    ndim = max((len(d) for d in dims), default=0)
    out = []
    for i in range(-ndim, 0):
        size = 1
        for d in dims:
            if len(d) >= -i and d[i] != 1:
                if size not in (1, d[i]):
                    return None
                size = d[i]
        out.append(size)
    return tuple(out)


def _broadcast_numel(tensors: list[torch.Tensor]) -> int | None:
    shape = broadcast_shape(*(t.shape for t in tensors))
    return None if shape is None else _numel(shape)  # None: the operation itself raises a clear error


class Runtime:
    """Builds the helper functions and the globals a compiled program runs with."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.functions: dict[str, Callable[..., Any]] = {
            name: self._wrap_torch(name) for name in sorted(TORCH_FUNCTIONS)
        }
        self.functions.update({f"math.{n}": self._wrap_math(n, f) for n, f in MATH_FUNCTIONS.items()})

    # -- guarded torch / math functions ------------------------------------------------------------
    def _resolve(self, dotted: str) -> Callable[..., Any]:
        obj: Any = torch
        for part in dotted.split("."):
            obj = getattr(obj, part)
        return obj

    def _wrap_torch(self, dotted: str) -> Callable[..., Any]:
        fn = self._resolve(dotted)
        guard = self.guard
        what = f"torch.{dotted}"
        short = dotted.rsplit(".", 1)[-1]

        def call(*args: Any, **kwargs: Any) -> Any:
            guard.tick()
            _check_value(args, what)
            _check_value(tuple(kwargs.values()), what)
            bad = FORBIDDEN_KEYWORDS.intersection(kwargs)
            if bad:
                raise RewardProgramError(f"{what} may not receive keyword '{sorted(bad)[0]}'")
            if "device" in kwargs:
                _check_device(guard, what, kwargs["device"])
            if short in CREATION or short in ("tensor", "as_tensor"):
                kwargs.setdefault("device", guard.device)
                if short in ("zeros", "ones", "eye", "linspace") or _has_float(args):
                    kwargs.setdefault("dtype", guard.dtype)
            if short == "norm":
                _check_norm(what, dotted, args, kwargs)
            if short in CREATION:
                guard.check_size(_creation_numel(what, short, args, kwargs), what)
            elif dotted in GROWING:
                _precheck_growing(guard, what, dotted, args, kwargs)
            else:
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                for a in args:
                    if isinstance(a, (list, tuple)):
                        tensors.extend(t for t in a if isinstance(t, torch.Tensor))
                if len(tensors) >= 2 and short not in ("stack", "cat", "concat"):
                    guard.check_broadcast(tensors, what)
                if short in ("stack", "cat", "concat"):
                    guard.check_size(sum(t.numel() for t in tensors), what)
            guard.add_work(sum(t.numel() for t in _tensors_in(args)), what)
            return guard.account(fn(*args, **kwargs), what)

        call.__name__ = f"guarded_{short}"
        return call

    def _wrap_math(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        guard = self.guard

        def call(*args: Any) -> Any:
            guard.tick()
            for a in args:
                if not isinstance(a, _NUMBER):
                    raise RewardProgramError(f"math.{name} takes plain numbers; use torch.{name} for tensors")
            try:
                return guard.check_int(fn(*args), f"math.{name}")
            except (ValueError, OverflowError) as exc:
                raise RewardProgramError(f"math.{name}: {exc}") from None

        return call

    # -- helpers the rewritten program calls ---------------------------------------------------
    def binop(self, op: str, a: Any, b: Any) -> Any:
        guard = self.guard
        guard.tick()
        what = f"operator {op}"
        for v in (a, b):
            if not isinstance(v, torch.Tensor | bool | int | float):
                raise RewardProgramError(f"{what} is only defined on tensors and numbers, got {type(v).__name__}")
        ta, tb = isinstance(a, torch.Tensor), isinstance(b, torch.Tensor)
        if not ta and not tb:
            if op == "**" and isinstance(a, int) and isinstance(b, int):
                if abs(b) > 64 or a.bit_length() * abs(b) > guard.limits.max_int_bits:
                    raise SandboxLimitExceeded(f"{a} ** {b} is too large an integer power")
            if op == "*" and isinstance(a, int) and isinstance(b, int):
                if a.bit_length() + b.bit_length() > guard.limits.max_int_bits:
                    raise SandboxLimitExceeded(f"{what} makes an integer over {guard.limits.max_int_bits} bits")
            try:
                return guard.check_int(_BINOPS[op](a, b), what)
            except (ZeroDivisionError, OverflowError) as exc:
                raise RewardProgramError(f"{what}: {exc}") from None
        if op == "@":
            _precheck_growing(guard, what, "@", (a, b), {})
        elif ta and tb:
            guard.check_broadcast([a, b], what)
        guard.add_work(sum(t.numel() for t in (a, b) if isinstance(t, torch.Tensor)), what)
        return guard.account(_BINOPS[op](a, b), what)

    def unop(self, op: str, a: Any) -> Any:
        self.guard.tick()
        if not isinstance(a, torch.Tensor | bool | int | float):
            raise RewardProgramError(f"unary {op} is only defined on tensors and numbers, got {type(a).__name__}")
        if op == "not":
            return not a
        return self.guard.account(_UNOPS[op](a), f"unary {op}")

    def compare(self, op: str, a: Any, b: Any) -> Any:
        guard = self.guard
        guard.tick()
        for v in (a, b):
            if not isinstance(v, torch.Tensor | bool | int | float):
                raise RewardProgramError(f"comparison {op} is only defined on tensors and numbers, got {type(v).__name__}")
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            guard.check_broadcast([a, b], f"comparison {op}")
        return guard.account(_COMPARISONS[op](a, b), f"comparison {op}")

    def method(self, obj: Any, name: str, /, *args: Any, **kwargs: Any) -> Any:
        guard = self.guard
        guard.tick()
        what = f"method .{name}()"
        if not isinstance(obj, torch.Tensor):
            raise RewardProgramError(f"{what} can only be called on a tensor, not on {type(obj).__name__}")
        if name not in TENSOR_METHODS:
            raise RewardProgramError(f"{what} is not in the allow-list of tensor methods")
        _check_value(args, what)
        _check_value(tuple(kwargs.values()), what)
        bad = FORBIDDEN_KEYWORDS.intersection(kwargs)
        if bad:
            raise RewardProgramError(f"{what} may not receive keyword '{sorted(bad)[0]}'")
        if name == "norm":
            _check_norm(what, "norm", (obj, *args), kwargs)
        if name == "to":
            for v in (*args, *kwargs.values()):
                if isinstance(v, (torch.device, str)):
                    _check_device(guard, what, v)
                elif not isinstance(v, (torch.dtype, torch.Tensor, bool)):
                    raise RewardProgramError(f"{what} takes a dtype, the trajectory's device or a tensor")
                elif isinstance(v, torch.Tensor) and v.device != guard.device and guard.device is not None:
                    _check_device(guard, what, v.device)
        if "device" in kwargs:
            _check_device(guard, what, kwargs["device"])
        fn = getattr(obj, name)
        if name in TENSOR_GROWING_METHODS:
            _precheck_growing(guard, what, name, (obj, *args), kwargs)
        guard.add_work(obj.numel(), what)
        return guard.account(fn(*args, **kwargs), what)

    def attribute(self, obj: Any, name: str) -> Any:
        self.guard.tick()
        if name in _TENSOR_ATTRIBUTES and isinstance(obj, torch.Tensor):
            return getattr(obj, name)
        if name in _RESULT_ATTRIBUTES and type(obj).__module__ == "torch.return_types":
            return getattr(obj, name)
        raise RewardProgramError(f"attribute .{name} is not readable on a value of type {type(obj).__name__}")

    def getitem(self, obj: Any, index: Any) -> Any:
        guard = self.guard
        guard.tick()
        what = "indexing"
        parts = index if isinstance(index, tuple) else (index,)
        for p in parts:
            if not (p is None or p is Ellipsis or isinstance(p, (slice, torch.Tensor, int, bool))):
                raise RewardProgramError(f"{what}: an index must be an int, a slice, None, ... or a tensor, "
                                         f"got {type(p).__name__}")
        if isinstance(obj, torch.Tensor):
            tensor_index = [p for p in parts if isinstance(p, torch.Tensor)]
            if tensor_index:
                bound = obj.numel()
                for p in tensor_index:
                    if p.dtype != torch.bool:
                        bound *= max(p.numel(), 1)
                guard.check_size(bound, what)
            return guard.account(obj[index], what)
        if isinstance(obj, (tuple, list)):  # shapes, stacked lists, torch.return_types
            if not all(isinstance(p, (int, slice)) for p in parts) or isinstance(index, tuple):
                raise RewardProgramError(f"{what}: a {type(obj).__name__} takes one int or slice index")
            return obj[index]
        raise RewardProgramError(f"{what} is not defined on a value of type {type(obj).__name__}")

    # -- builtins --------------------------------------------------------------------------------
    def builtins(self) -> dict[str, Callable[..., Any]]:
        guard, rt = self.guard, self

        def _abs(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return rt.functions["abs"](x)
            if isinstance(x, _NUMBER):
                return abs(x)
            raise RewardProgramError(f"abs() takes a tensor or a number, got {type(x).__name__}")

        def _extremum(kind: str) -> Callable[..., Any]:
            pick = torch.minimum if kind == "min" else torch.maximum
            py = min if kind == "min" else max

            def f(*args: Any) -> Any:
                guard.tick()
                if len(args) < 2:
                    raise RewardProgramError(f"{kind}() takes two or more values; use torch.{kind}(x, dim=...) "
                                             "to reduce a tensor")
                if all(isinstance(a, _NUMBER) for a in args):
                    return py(args)
                out = args[0]
                for a in args[1:]:
                    for v in (out, a):
                        if not isinstance(v, torch.Tensor | bool | int | float):
                            raise RewardProgramError(f"{kind}() takes tensors and numbers, got {type(v).__name__}")
                    x = out if isinstance(out, torch.Tensor) else torch.as_tensor(out, dtype=guard.dtype, device=guard.device)
                    y = a if isinstance(a, torch.Tensor) else torch.as_tensor(a, dtype=guard.dtype, device=guard.device)
                    guard.check_broadcast([x, y], f"{kind}()")
                    out = guard.account(pick(x, y), f"{kind}()")
                return out

            return f

        def _sum(values: Any, start: Any = 0) -> Any:
            if not isinstance(values, (list, tuple)):
                raise RewardProgramError("sum() takes a list or tuple; use torch.sum / .sum(dim=...) for tensors")
            total = start
            for v in values:
                total = rt.binop("+", total, v)
            return total

        def _len(x: Any) -> int:
            if isinstance(x, (torch.Tensor, tuple, list)):
                return len(x)
            raise RewardProgramError(f"len() takes a tensor, tuple or list, got {type(x).__name__}")

        def _number(kind: type) -> Callable[[Any], Any]:
            def f(x: Any) -> Any:
                if isinstance(x, torch.Tensor) and x.numel() == 1:
                    x = x.item()
                if kind is float and isinstance(x, str) and x.lower() in ("inf", "-inf", "+inf", "nan"):
                    return float(x)
                if not isinstance(x, _NUMBER):
                    raise RewardProgramError(f"{kind.__name__}() takes a number or a one-element tensor")
                try:
                    return guard.check_int(kind(x), f"{kind.__name__}()")
                except (OverflowError, ValueError) as exc:
                    raise RewardProgramError(f"{kind.__name__}(): {exc}") from None
            return f

        def _range(*args: int) -> range:
            # The checker only lets literal bounds through; this re-checks at run time.
            r = range(*args)
            if len(r) > guard.limits.max_loop_iterations:
                raise SandboxLimitExceeded(f"range of {len(r)} iterations (at most {guard.limits.max_loop_iterations})")
            return r

        return {"abs": _abs, "min": _extremum("min"), "max": _extremum("max"), "sum": _sum, "len": _len,
                "float": _number(float), "int": _number(int), "range": _range}

    def globals(self) -> dict[str, Any]:
        """The globals of the compiled module: no builtins, only the guarded helpers."""
        g: dict[str, Any] = {"__builtins__": MappingProxyType({})}
        g.update(self.builtins())
        g.update({
            HELPER_BINOP: self.binop, HELPER_UNOP: self.unop, HELPER_COMPARE: self.compare,
            HELPER_METHOD: self.method, HELPER_ATTRIBUTE: self.attribute, HELPER_GETITEM: self.getitem,
            HELPER_FUNCTIONS: MappingProxyType(self.functions), HELPER_SLICE: slice,
            HELPER_CONSTANTS: MappingProxyType({**{f"torch.{k}": v for k, v in TORCH_CONSTANTS.items()},
                                                **{f"math.{k}": v for k, v in MATH_CONSTANTS.items()}}),
        })
        return g


def _check_device(guard: Guard, what: str, device: Any) -> None:
    """``device=`` may only name the device the trajectory is on (``device=trajectory.device``)."""
    if not isinstance(device, torch.device) or (guard.device is not None and device != guard.device):
        raise RewardProgramError(f"{what}: device= must be the trajectory's device (write device=trajectory.device), "
                                 f"got {device!r}")


def _check_norm(what: str, dotted: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Only vector norms: matrix norms (spectral, nuclear) run an SVD whose cost grows with the cube
    of the size, inside one uninterruptible call."""
    key = "ord" if dotted == "linalg.norm" else "p"
    order = kwargs.get(key, args[1] if len(args) > 1 else None)
    dim = kwargs.get("dim", args[2] if len(args) > 2 else None)
    if order == "nuc" or (dotted == "linalg.norm" and order is not None and order != "fro"
                          and not isinstance(dim, int) and not (isinstance(dim, (tuple, list)) and len(dim) == 1)):
        raise RewardProgramError(f"{what}: matrix norms are not available; give dim=<int> for a vector norm "
                                 "(or use torch.linalg.vector_norm)")


def _creation_numel(what: str, short: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Element count of a tensor-creating call, from its arguments (nothing is allocated)."""
    if short == "arange":
        return _arange_numel(what, args, kwargs)
    try:
        if short == "linspace":
            steps = kwargs.get("steps", args[2] if len(args) > 2 else None)
            return max(int(steps), 0)
        if short == "eye":
            n = int(kwargs.get("n", args[0]))
            m = int(kwargs.get("m", args[1] if len(args) > 1 else n))
            return max(n, 0) * max(m, 0)
        sizes: Any = kwargs.get("size", args[0] if short == "full" else args)
        if short == "full" and "size" not in kwargs:
            sizes = args[0]
        if isinstance(sizes, (tuple, list, torch.Size)) and len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)):
            sizes = sizes[0]
        if not isinstance(sizes, (tuple, list, torch.Size)):
            sizes = (sizes,)
        return _numel(int(d) for d in sizes)
    except (IndexError, KeyError, TypeError, ValueError, RuntimeError):
        raise RewardProgramError(f"{what}: sizes must be integers") from None


def _arange_numel(what: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Element count of ``torch.arange(...)`` computed from its arguments (no allocation)."""
    names = ("start", "end", "step")
    values = dict(zip(names, args if len(args) > 1 else (0, *args)))
    values.update({k: kwargs[k] for k in names if k in kwargs})
    try:
        start, end, step = (float(values.get(k, d)) for k, d in zip(names, (0, None, 1)))
    except (TypeError, ValueError, RuntimeError):
        raise RewardProgramError(f"{what} takes numbers as start, end and step") from None
    if step == 0 or not all(math.isfinite(v) for v in (start, end, step)):
        raise RewardProgramError(f"{what} needs finite bounds and a non-zero step")
    return max(0, math.ceil((end - start) / step))


def _has_float(value: Any, depth: int = 0) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, torch.Tensor):
        return value.is_floating_point()
    if isinstance(value, (tuple, list)) and depth < 4:
        return any(_has_float(v, depth + 1) for v in value)
    return False


def _precheck_growing(guard: Guard, what: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Size a product-like operation from its input shapes before running it (no allocation).

    Shapes are worked out by hand: torch's meta kernels would do it too, but some of them are slow
    (``cdist`` on meta tensors takes seconds for large inputs)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    out_numel: int | None = None
    inner = 1
    try:
        if name == "repeat" and tensors:
            sizes = args[1:]
            if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)):
                sizes = tuple(sizes[0])
            out_numel = tensors[0].numel() * _numel(int(s) for s in sizes)
        elif name in ("matmul", "dot", "@") and len(tensors) == 2:
            a, b = tensors
            inner = int(a.shape[-1]) if a.ndim else 1
            rows = (int(a.shape[-2]),) if a.ndim >= 2 else ()
            cols = (int(b.shape[-1]),) if b.ndim >= 2 else ()
            batch = (broadcast_shape(a.shape[:-2], b.shape[:-2]) or ()) if a.ndim > 2 or b.ndim > 2 else ()
            out_numel = _numel(batch + rows + cols)
        elif name == "cdist" and len(tensors) == 2:
            a, b = tensors
            inner = int(a.shape[-1])
            batch = broadcast_shape(a.shape[:-2], b.shape[:-2]) or ()
            out_numel = _numel(batch + (int(a.shape[-2]), int(b.shape[-2])))
        elif name == "outer" and len(tensors) == 2:
            out_numel = tensors[0].numel() * tensors[1].numel()
        elif name == "cross" and len(tensors) == 2:
            out_numel = _broadcast_numel(tensors)
    except (RuntimeError, IndexError, TypeError, ValueError):
        out_numel = None  # malformed shapes: the operation itself raises a clear error
    if out_numel is None:
        out_numel = 1
        for t in tensors:
            out_numel *= max(t.numel(), 1)
    guard.check_size(out_numel, what)
    guard.add_work(out_numel * max(inner, 1), what)


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow, "@": operator.matmul,
    "&": operator.and_, "|": operator.or_, "^": operator.xor,
}
_UNOPS: dict[str, Callable[[Any], Any]] = {"-": operator.neg, "+": operator.pos, "~": operator.invert}
_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}

# Names of the helpers in the compiled module's globals. They contain "__", which programs may not
# write, so a program can neither read nor replace them.
HELPER_BINOP = "__es_binop__"
HELPER_UNOP = "__es_unop__"
HELPER_COMPARE = "__es_compare__"
HELPER_METHOD = "__es_method__"
HELPER_ATTRIBUTE = "__es_attribute__"
HELPER_GETITEM = "__es_getitem__"
HELPER_FUNCTIONS = "__es_functions__"
HELPER_CONSTANTS = "__es_constants__"
HELPER_SLICE = "__es_slice__"
