"""Build a :class:`~embodied_steer.vls.guidance.GuidedSampler` from the ``guide`` config group.

``embodied-steer eval env=lift_ood policy=lift_diffusion guide=vls`` composes
``embodied_steer/conf/guide/vls.yaml``; :func:`guide_from_settings` turns that block into a sampler
bound to the environment (keypoints from its simulator, trajectory map from its controller).

Settings (all optional except where noted):

``program``          ``default`` (the task's shipped hand-written program; an environment with obstacles
                     gets its task's ``obstacle`` variant, whose keypoints end with the obstacles), ``vlm`` (written once by the
                     configured VLM from a keypoint image; the default stays if it gives no valid
                     program), or a path to a program text file (compiled in the sandbox).
``program_source``   the text of a reward program (compiled in the sandbox; wins over ``program``) —
                     how a program arrives over the network, e.g. at the ROS 2 policy server.
``scale``            λ. ``num_particles``: K. ``normalize``, ``dims``, ``evaluate_on`` (clean | noisy),
``diversity``, ``diversity_until``, ``potential`` (null | instantaneous | max | additive |
difference), ``fk_temperature``, ``ess_threshold``, ``select`` (best | first), ``clip_aware``,
``seed``: see :class:`~embodied_steer.vls.guidance.GuidanceConfig`.
``schedule``         ``{kind: constant | sigmoid, midpoint, steepness, floor}``.
``stage_thresholds`` list, one reward threshold per stage (or one for all); ``stage_dwell``: chunks
                     a threshold must hold before the stage switches.
``tracking``         per-step tracking factor of the trajectory map (null: from the controller gains).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from embodied_steer.core.errors import ConfigError
from embodied_steer.core.policy import InterventionPoint, SteerablePolicy
from embodied_steer.vls.guidance import GuidanceConfig, GuidedSampler
from embodied_steer.vls.schedule import GuidanceSchedule
from embodied_steer.vls.trajectory import ee_position_index, trajectory_map_for

log = logging.getLogger(__name__)

_CONFIG_KEYS = {"scale", "num_particles", "normalize", "dims", "evaluate_on", "diversity", "diversity_until",
                "potential", "fk_temperature", "ess_threshold", "select", "clip_aware", "seed", "stage_dwell"}
KNOWN_KEYS = _CONFIG_KEYS | {"program", "program_source", "schedule", "stage_thresholds", "tracking", "name",
                             "description"}


@dataclass(frozen=True)
class GuideContext:
    """What guidance needs to know about the robot and the scene, without the simulator object.

    Attributes:
        task: robosuite task class name (``"Lift"``), selects the default program and the keypoint legend.
        state_names: names of ``obs.state`` entries (the end-effector position is looked up in them).
        spec_extra: the environment's ``spec_info.extra`` (``controller_config``, ``sim_timestep``).
        control_hz: control rate (Hz), for the trajectory map's tracking factor.
        keypoints: ``Observation -> (K, 3)`` float32 tensor, metres, world frame (the task's legend,
            then one row per obstacle in the obstacle variant).
        variant: ``None`` (the plain task) or ``"obstacle"``; selects the default program.
        env: the simulated environment when there is one (only ``program=vlm`` needs it: camera image).
    """

    task: str
    state_names: Sequence[str]
    spec_extra: Mapping[str, Any]
    control_hz: float | None
    keypoints: Callable[[Any], Any]
    variant: str | None = None
    env: Any = field(default=None, compare=False)

    @classmethod
    def from_env(cls, env: Any) -> "GuideContext":
        """Keypoints from the simulator's ground truth, robot description from ``env.spec_info``."""
        from embodied_steer.vls.defaults import env_variant
        from embodied_steer.vls.keypoints import keypoints_for, task_name

        spec = env.spec_info
        variant, extra_bodies = env_variant(env)  # obstacles: extra keypoints after the task's own

        def keypoints(_obs: Any) -> Any:
            # The runner asks for a chunk right after the step that produced ``obs``: the simulator's
            # ground truth is the state that observation shows.
            return keypoints_for(env, extra_bodies=extra_bodies)[1]

        return cls(task=task_name(env), state_names=tuple(spec.state_names), spec_extra=dict(spec.extra),
                   control_hz=spec.control_hz, keypoints=keypoints, variant=variant, env=env)


def guidance_config(settings: Mapping[str, Any]) -> GuidanceConfig:
    """:class:`GuidanceConfig` from a settings mapping; unknown keys are a :class:`ConfigError`."""
    unknown = set(settings) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"unknown guide settings {sorted(unknown)}; known: {sorted(KNOWN_KEYS)}")
    values: dict[str, Any] = {k: settings[k] for k in _CONFIG_KEYS if k in settings and settings[k] is not None}
    if settings.get("potential") is None:
        values["potential"] = None
    if "dims" in values:
        values["dims"] = tuple(int(d) for d in values["dims"])
    if "num_particles" in values:
        values["num_particles"] = int(values["num_particles"])
    schedule = dict(settings.get("schedule") or {})
    try:
        values["schedule"] = GuidanceSchedule(**schedule)
    except TypeError as exc:
        raise ConfigError(f"guide.schedule: {exc}") from None
    thresholds = settings.get("stage_thresholds", [0.0])
    thresholds = [thresholds] if isinstance(thresholds, (int, float)) else list(thresholds)
    values["stage_thresholds"] = tuple(float(t) for t in thresholds)
    return GuidanceConfig(**values)


def load_program(spec: str, env: Any, *, task: str | None = None, variant: str | None = None) -> Any:
    """The reward program named by ``guide.program`` for ``env`` (see the module docstring).

    ``env`` may be ``None`` when ``task`` (and ``variant``, e.g. ``"obstacle"``) are given (no
    simulator: ``vlm`` is then unavailable); with an ``env``, both default to the environment's."""
    from embodied_steer.vls.defaults import default_program, env_variant
    from embodied_steer.vls.keypoints import task_name

    extra_bodies: tuple[str, ...] = ()
    if env is not None:
        env_var, extra_bodies = env_variant(env)
        variant = env_var if variant is None else variant
        task = task or task_name(env)
    if task is None:
        raise ConfigError("load_program needs an environment or a task name")
    if spec == "default":
        return default_program(task, variant=variant)
    if spec == "vlm":
        if env is None:
            raise ConfigError("guide.program=vlm needs the simulator (the VLM is shown a keypoint image rendered "
                              "from it); write the program elsewhere and pass its text as guide.program_source")
        from embodied_steer.vls.errors import NoProgramInResponse, VLMError
        from embodied_steer.vls.vlm import VLMConfig

        if VLMConfig.from_env() is None:
            raise ConfigError("guide.program=vlm needs a VLM: set EMBODIED_STEER_VLM_BASE_URL and "
                              "EMBODIED_STEER_VLM_MODEL (and _API_KEY if the endpoint wants one)")
        from embodied_steer.vls.writer import ProgramWriter

        writer = ProgramWriter.for_task(task, variant=variant)
        try:
            writer.write_for_env(env, extra_bodies=extra_bodies)
        except NoProgramInResponse as exc:
            log.warning("VLM gave no valid reward program, using the shipped default for %s: %s", task, exc)
        except VLMError as exc:  # unreachable endpoint, timeout, HTTP error: evaluate with the default
            log.warning("VLM request failed, using the shipped default reward program for %s: %s", task, exc)
        return writer.program
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"guide.program must be 'default', 'vlm' or a program file; '{spec}' is none of these")
    from embodied_steer.vls.sandbox import compile_reward_program

    return compile_reward_program(path.read_text("utf-8"))


def guide_from_settings(settings: Mapping[str, Any], policy: SteerablePolicy, env: Any) -> GuidedSampler:
    """A :class:`GuidedSampler` for ``policy`` in the simulated ``env``, attached to the policy (reset follows it).

    Raises:
        UnsupportedIntervention: the policy lacks ``DENOISING_STEP`` (checked first).
        ConfigError: a bad setting, or an environment without keypoints / controller description.
    """
    policy.require(InterventionPoint.DENOISING_STEP, "reward-guided sampling (guide=...)")
    return guide_from_context(settings, policy, GuideContext.from_env(env))


def guide_from_context(settings: Mapping[str, Any], policy: SteerablePolicy, context: GuideContext) -> GuidedSampler:
    """A :class:`GuidedSampler` for ``policy`` from a :class:`GuideContext` (e.g. a ROS 2 arm description
    and a keypoint topic), attached to the policy; see :func:`guide_from_settings`."""
    policy.require(InterventionPoint.DENOISING_STEP, "reward-guided sampling (guide=...)")
    config = guidance_config(settings)
    source = settings.get("program_source")
    if source is not None:
        if not isinstance(source, str) or not source.strip():
            raise ConfigError("guide.program_source must be the non-empty text of a reward program")
        from embodied_steer.vls.sandbox import compile_reward_program

        program = compile_reward_program(source)
    else:
        program = load_program(str(settings.get("program", "default")), context.env, task=context.task,
                               variant=context.variant)
    trajectory_map = trajectory_map_for(context.spec_extra, control_hz=context.control_hz,
                                        tracking=settings.get("tracking"))
    guide = GuidedSampler(program, context.keypoints, trajectory_map, ee_position_index(context.state_names), config)
    return guide.attach(policy)
