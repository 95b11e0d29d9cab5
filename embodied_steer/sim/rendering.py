"""Offscreen rendering helpers shared by the robosuite-based wrappers (robosuite and LIBERO).

robosuite renders into whichever OpenGL context is *current*, and frees a render context in
``__del__`` against whatever context is current then. With several environments in one process
(or after replacing a context to change render quality) that yields another scene's pixels or
black images. These helpers keep each environment's context current while it works and free
contexts explicitly, with their own context current.
"""

from __future__ import annotations

import contextlib

from embodied_steer.sim.base import RenderSettings


def make_current(sim) -> None:
    """Make ``sim``'s offscreen GL context current (no-op without one)."""
    ctx = getattr(sim, "_render_context_offscreen", None) if sim is not None else None
    if ctx is not None:
        ctx.gl_ctx.make_current()


def free_render_context(sim) -> None:
    """Free ``sim``'s offscreen GL resources with their own context current."""
    ctx = getattr(sim, "_render_context_offscreen", None) if sim is not None else None
    if ctx is None:
        return
    with contextlib.suppress(Exception):
        ctx.gl_ctx.make_current()
        ctx.con.free()  # MuJoCo resets a freed MjrContext, so robosuite's later free is a no-op
        ctx.gl_ctx.free()
    sim._render_context_offscreen = None


def apply_render_quality(sim, settings: RenderSettings, device_id: int = -1) -> None:
    """Set shadow-map size and MSAA samples, then replace the render context (it reads them at creation)."""
    from robosuite.utils.binding_utils import MjRenderContextOffscreen

    quality = sim.model._model.vis.quality
    quality.shadowsize = int(settings.shadow_size)
    quality.offsamples = int(settings.offscreen_samples)
    free_render_context(sim)
    MjRenderContextOffscreen(sim, device_id=device_id)
