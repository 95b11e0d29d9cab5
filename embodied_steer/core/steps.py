"""Which denoising step is running right now: a light context the sampler loops set.

The flow and diffusion adapters run their own sampler loops; around each network evaluation they
enter :func:`denoise_step_context`, so that code running *inside* the network — forward hooks of
activation steering or capture — can ask :func:`current_denoise_step` which step it is in without
the hook being told explicitly. Outside a sampler loop (e.g. a VLM prefix pass that runs once per
chunk, or a token policy) it returns ``None``.

It is a :mod:`contextvars` variable, so threads and asyncio tasks each see their own value.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class StepContext:
    """The sampler step in progress.

    Attributes:
        index: 0 for the first (noisiest) step, ``num_steps - 1`` for the last.
        num_steps: steps per chunk.
        t: the sampler's time at this step (flow time or diffusion timestep), as in ``DenoiseStep``.
    """

    index: int
    num_steps: int
    t: float


_CURRENT: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar("embodied_steer_denoise_step", default=None)


@contextlib.contextmanager
def denoise_step_context(index: int, num_steps: int, t: float) -> Iterator[StepContext]:
    """Mark the code inside as running denoising step ``index`` of ``num_steps`` (restored on exit)."""
    ctx = StepContext(int(index), int(num_steps), float(t))
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def current_denoise_step() -> StepContext | None:
    """The denoising step in progress, or ``None`` outside a sampler loop."""
    return _CURRENT.get()
