"""Hand-written reward programs shipped with the package, for working offline without a VLM.

Programs are package data (``embodied_steer/vls/programs/*.py``), read as *text* and compiled
through the sandbox like any VLM-written program: they are never imported.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from embodied_steer.core.errors import ConfigError
from embodied_steer.vls.limits import SandboxLimits
from embodied_steer.vls.program import RewardProgram
from embodied_steer.vls.sandbox import compile_reward_program

#: robosuite task → program file. Variants that only move objects use their base task's program.
DEFAULT_PROGRAMS: dict[str, str] = {"Lift": "lift.py", "PickPlaceCan": "pick_place_can.py"}
#: (robosuite task, variant) → program file, for variants whose keypoints differ from the task's:
#: ``"obstacle"`` — one obstacle added to the arena, its centre appended as the last keypoint.
VARIANT_PROGRAMS: dict[tuple[str, str], str] = {("Lift", "obstacle"): "lift_obstacle.py"}


def _program_file(task: str, variant: str | None) -> str:
    if variant is not None:
        if (task, variant) not in VARIANT_PROGRAMS:
            raise ConfigError(f"no default reward program for task '{task}' variant '{variant}'; "
                              f"shipped variants: {sorted(VARIANT_PROGRAMS)}")
        return VARIANT_PROGRAMS[(task, variant)]
    if task not in DEFAULT_PROGRAMS:
        raise ConfigError(f"no default reward program for task '{task}'; shipped: {sorted(DEFAULT_PROGRAMS)}")
    return DEFAULT_PROGRAMS[task]


def default_program_source(task: str, variant: str | None = None) -> str:
    """The text of the shipped program for ``task`` (``"Lift"``, ``"PickPlaceCan"``), or for one of
    its variants (``variant="obstacle"``, see :data:`VARIANT_PROGRAMS`)."""
    name = _program_file(task, variant)
    return resources.files("embodied_steer.vls").joinpath("programs", name).read_text("utf-8")


def default_program(task: str, *, variant: str | None = None, limits: SandboxLimits | None = None) -> RewardProgram:
    """The shipped program for ``task`` (or its ``variant``), compiled through the sandbox.

    The probe subprocess is skipped (the text ships with the package and is tested); the static
    check and the in-process guards still apply."""
    limits = limits or SandboxLimits(probe=False)
    return compile_reward_program(default_program_source(task, variant), limits=limits)


def env_variant(env: Any) -> tuple[str | None, tuple[str, ...]]:
    """``(variant, extra keypoint bodies)`` of an environment from its ``spec_info.extra``.

    An environment with obstacles (``extra["obstacles"]``, as :class:`~embodied_steer.sim.robosuite_env.RobosuiteEnv`
    records them) is the ``"obstacle"`` variant, and its obstacles' bodies are extra keypoints;
    anything else is the plain task (``None``, no extra bodies)."""
    spec = getattr(env, "spec_info", None)
    obstacles = list((getattr(spec, "extra", None) or {}).get("obstacles") or [])
    if not obstacles:
        return None, ()
    return "obstacle", tuple(str(o["name"]) for o in obstacles)
