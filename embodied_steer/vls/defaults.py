"""Hand-written reward programs shipped with the package, for working offline without a VLM.

Programs are package data (``embodied_steer/vls/programs/*.py``), read as *text* and compiled
through the sandbox like any VLM-written program: they are never imported.
"""

from __future__ import annotations

from importlib import resources

from embodied_steer.core.errors import ConfigError
from embodied_steer.vls.limits import SandboxLimits
from embodied_steer.vls.program import RewardProgram
from embodied_steer.vls.sandbox import compile_reward_program

#: robosuite task → program file. Task variants (moved objects, obstacles) use their base task's.
DEFAULT_PROGRAMS: dict[str, str] = {"Lift": "lift.py", "PickPlaceCan": "pick_place_can.py"}


def default_program_source(task: str) -> str:
    """The text of the shipped program for ``task`` (``"Lift"``, ``"PickPlaceCan"``)."""
    if task not in DEFAULT_PROGRAMS:
        raise ConfigError(f"no default reward program for task '{task}'; shipped: {sorted(DEFAULT_PROGRAMS)}")
    return resources.files("embodied_steer.vls").joinpath("programs", DEFAULT_PROGRAMS[task]).read_text("utf-8")


def default_program(task: str, *, limits: SandboxLimits | None = None) -> RewardProgram:
    """The shipped program for ``task``, compiled through the sandbox.

    The probe subprocess is skipped (the text ships with the package and is tested); the static
    check and the in-process guards still apply."""
    limits = limits or SandboxLimits(probe=False)
    return compile_reward_program(default_program_source(task), limits=limits)
