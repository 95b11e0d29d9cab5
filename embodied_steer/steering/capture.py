"""Activation capture: to disk per layer and per step with shapes recorded, or pooled in memory.

:class:`ActivationCapture` (a context manager) hooks the chosen modules of a policy and writes what
they see to ``out_dir``:

* ``shard_00000.safetensors`` … — the tensors (on CPU, optionally cast to ``dtype``);
* ``index.json`` — ``{"entries": [{module, call, step, occurrence, shape, dtype, file, key}, …]}``:
  ``call`` = the policy call (incremented by :meth:`ActivationCapture.begin_call`, e.g. by the
  evaluation act function), ``step`` = the denoising step of flow / diffusion samplers (``null``
  for modules outside the sampler loop), ``occurrence`` = how many times the module had fired in
  this call before (vision towers fire once per camera; a token policy's layers once per decoded
  token).

Memory is bounded: the buffer is written out whenever the (call, step) changes — so at most one
step's activations are held — or earlier when it exceeds ``max_buffer_bytes``.
:func:`read_capture` loads the index and tensors back.

:func:`record_activations` is the in-memory variant for direction discovery: it runs the policy on
a list of observations and returns ``{module: (N, d)}`` pooled per observation (last position,
mean over positions, or first occurrence only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from embodied_steer.core.errors import ConfigError
from embodied_steer.core.policy import SteerablePolicy
from embodied_steer.core.steps import current_denoise_step
from embodied_steer.core.types import Observation
from embodied_steer.steering.addressing import policy_modules, resolve_modules

INDEX = "index.json"


class ActivationCapture:
    """Write the activations of ``modules`` to ``out_dir`` while active.

    Args:
        policy: the policy (needs ``ACTIVATIONS``).
        modules: names / globs from ``policy.modules()``.
        out_dir: output folder (created; an existing index there is an error unless ``overwrite``).
        what: ``"output"`` (forward hook) or ``"input"`` (first positional input, pre-hook; for a
            down-projection that is the MLP's neuron activations).
        dtype: cast before writing (e.g. ``torch.float16`` halves the disk use); default: keep.
        max_buffer_bytes: flush earlier when the buffer grows past this.
        overwrite: replace an earlier capture in ``out_dir``.
    """

    def __init__(self, policy: SteerablePolicy, modules: str | Sequence[str], out_dir: str | Path, *,
                 what: str = "output", dtype: torch.dtype | None = None, max_buffer_bytes: int = 256 << 20,
                 overwrite: bool = False) -> None:
        if what not in ("output", "input"):
            raise ConfigError(f"what must be 'output' or 'input', got '{what}'")
        self.policy = policy
        self.names = resolve_modules(policy, modules)
        self.out_dir = Path(out_dir)
        if (self.out_dir / INDEX).exists() and not overwrite:
            raise ConfigError(f"{self.out_dir} already holds a capture (pass overwrite=True)")
        self.what, self.dtype, self.max_buffer_bytes = what, dtype, int(max_buffer_bytes)
        self.entries: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self.call = 0
        self._buffer: dict[str, torch.Tensor] = {}
        self._buffer_bytes = 0
        self.peak_buffer_bytes = 0
        self.bytes_written = 0
        self._key: tuple[int, int | None] | None = None
        self._occurrence: dict[str, int] = {}
        self._shard = 0
        self._hooks: list[Any] = []

    # -------------------------------------------------------------- life cycle
    def start(self) -> "ActivationCapture":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for old in self.out_dir.glob("shard_*.safetensors"):
            old.unlink()
        modules = policy_modules(self.policy)
        try:
            for name in self.names:
                m = modules[name]
                if self.what == "output":
                    self._hooks.append(m.register_forward_hook(self._make_hook(name, post=True)))
                else:
                    self._hooks.append(m.register_forward_pre_hook(self._make_hook(name, post=False)))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove the hooks, flush the buffer and write the index (idempotent)."""
        hooks, self._hooks = self._hooks, []
        for h in hooks:
            h.remove()
        self.flush()
        if self.out_dir.is_dir():
            (self.out_dir / INDEX).write_text(json.dumps(
                {"modules": self.names, "what": self.what, "calls": self.call, "entries": self.entries}, indent=1))

    def __enter__(self) -> "ActivationCapture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def begin_call(self, obs: Observation | None = None) -> None:
        """Before each policy call after the first: the next activations belong to a new call."""
        if self._occurrence:
            self.call += 1
            self._occurrence = {}

    # -------------------------------------------------------------- hooks
    def _make_hook(self, name: str, post: bool) -> Callable:
        def record(tensor: Any) -> None:
            if isinstance(tensor, (tuple, list)):
                tensor = tensor[0] if tensor else None
            if not isinstance(tensor, torch.Tensor):
                return
            ctx = current_denoise_step()
            step = None if ctx is None else ctx.index
            key = (self.call, step)
            if self._key is not None and key != self._key:
                self.flush()
            self._key = key
            occurrence = self._occurrence.get(name, 0)
            self._occurrence[name] = occurrence + 1
            value = tensor.detach()
            if self.dtype is not None:
                value = value.to(self.dtype)
            value = value.to("cpu", copy=True).contiguous()
            tkey = f"{name}|c{self.call}|s{'-' if step is None else step}|o{occurrence}"
            self._buffer[tkey] = value
            nbytes = value.numel() * value.element_size()
            self._buffer_bytes += nbytes
            self.peak_buffer_bytes = max(self.peak_buffer_bytes, self._buffer_bytes)
            entry = {"module": name, "call": self.call, "step": step, "occurrence": occurrence,
                     "shape": list(value.shape), "dtype": str(value.dtype).replace("torch.", ""),
                     "file": None, "key": tkey}
            self.entries.append(entry)
            self._pending.append(entry)
            if self._buffer_bytes > self.max_buffer_bytes:
                self.flush()

        if post:
            return lambda module, args, output: record(output)
        return lambda module, args: record(args)

    def flush(self) -> None:
        """Write the buffered tensors to the next shard."""
        if not self._buffer:
            return
        from safetensors.torch import save_file

        file = f"shard_{self._shard:05d}.safetensors"
        save_file(self._buffer, str(self.out_dir / file))
        for entry in self._pending:
            entry["file"] = file
        self._pending = []
        self.bytes_written += self._buffer_bytes
        self._shard += 1
        self._buffer, self._buffer_bytes = {}, 0


def capture(policy: SteerablePolicy, modules: str | Sequence[str], out_dir: str | Path, **kwargs: Any) -> ActivationCapture:
    """``with capture(policy, "vlm.layers.*.mlp", "out/acts"): policy.act(obs)`` — see :class:`ActivationCapture`."""
    return ActivationCapture(policy, modules, out_dir, **kwargs)


def read_capture(out_dir: str | Path, *, module: str | None = None, call: int | None = None,
                 step: int | None | str = "any") -> Iterator[tuple[dict[str, Any], torch.Tensor]]:
    """Yield ``(entry, tensor)`` from a capture folder, optionally filtered."""
    from safetensors import safe_open

    out_dir = Path(out_dir)
    if not (out_dir / INDEX).is_file():
        raise ConfigError(f"no capture index at {out_dir / INDEX}")
    index = json.loads((out_dir / INDEX).read_text())
    handles: dict[str, Any] = {}
    for entry in index["entries"]:
        if module is not None and entry["module"] != module:
            continue
        if call is not None and entry["call"] != call:
            continue
        if step != "any" and entry["step"] != step:
            continue
        f = handles.get(entry["file"])
        if f is None:
            f = handles[entry["file"]] = safe_open(str(out_dir / entry["file"]), framework="pt")
        yield entry, f.get_tensor(entry["key"])


# ----------------------------------------------------------------------------- in memory, pooled
def pool(tensor: torch.Tensor, how: str = "last", axis: int = -1) -> torch.Tensor:
    """``(B, S, d)`` → ``(B, d)``: ``"last"`` position or ``"mean"`` over positions. 2-D passes through.
    ``axis`` is the feature axis (1 for conv blocks, then positions are the last axis)."""
    if tensor.ndim == 2:
        return tensor
    if axis == 1:
        tensor = tensor.movedim(1, -1)
    if how == "last":
        return tensor[..., -1, :].reshape(-1, tensor.shape[-1])
    if how == "mean":
        return tensor.mean(dim=-2).reshape(-1, tensor.shape[-1])
    raise ConfigError(f"pool must be 'last' or 'mean', got '{how}'")


@torch.no_grad()
def record_activations(
    policy: SteerablePolicy,
    observations: Iterable[Observation],
    modules: str | Sequence[str],
    *,
    pool_by: str = "last",
    first_only: bool = True,
    run: Callable[[SteerablePolicy, Observation], Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``policy`` on each observation and return ``{module: (N, d)}`` pooled activations.

    ``first_only``: keep only each module's first firing per observation (the prompt pass of a
    token policy; the first flow step of an expert); otherwise every firing is averaged.
    ``run``: how to call the policy (default ``policy.act(obs)``).
    """
    from embodied_steer.steering.addressing import feature_axis

    names = resolve_modules(policy, modules)
    table = policy_modules(policy)
    rows: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    current: dict[str, list[torch.Tensor]] = {}

    def hook_for(name: str):
        axis = feature_axis(table[name])

        def hook(module, args, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            if first_only and current.get(name):
                return
            current.setdefault(name, []).append(pool(out.detach().float(), pool_by, axis).mean(0).cpu())
        return hook

    hooks = [table[n].register_forward_hook(hook_for(n)) for n in names]
    try:
        for obs in observations:
            current.clear()
            policy.reset()
            (run or (lambda p, o: p.act(o)))(policy, obs)
            for n in names:
                if not current.get(n):
                    raise ConfigError(f"module '{n}' did not fire while the policy acted")
                rows[n].append(torch.stack(current[n]).mean(0))
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.stack(v) for n, v in rows.items()}
