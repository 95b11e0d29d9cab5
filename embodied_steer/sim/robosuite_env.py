"""robosuite 1.4 tasks (Lift, PickPlaceCan, NutAssemblySquare, ...) as gymnasium environments.

Actions are robosuite's controller inputs. With the default OSC_POSE controller an action is
``(7,)`` in [-1, 1]: delta end-effector position (scaled by 0.05 m per step at |a|=1), delta
orientation as axis-angle (0.5 rad per step at |a|=1) and the gripper (-1 open, +1 close).

State layout (``state_names``): end-effector position (3, metres, world frame), end-effector
quaternion (4, xyzw), gripper finger joint positions (2, metres). ``env_state`` is robosuite's
``object-state`` observable (object positions, quaternions, and object-to-gripper offsets).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np

from embodied_steer.core.errors import ConfigError
from embodied_steer.core.types import ActionBounds
from embodied_steer.sim.base import EnvSpec, RenderSettings, step_info, upright_images
from embodied_steer.sim.rendering import apply_render_quality, free_render_context, make_current

os.environ.setdefault("MUJOCO_GL", "egl")

STATE_NAMES = (
    "eef_pos_x", "eef_pos_y", "eef_pos_z",
    "eef_quat_x", "eef_quat_y", "eef_quat_z", "eef_quat_w",
    "gripper_qpos_left", "gripper_qpos_right",
)

TASK_INSTRUCTIONS = {
    "Lift": "lift the red cube",
    "PickPlaceCan": "pick up the can and place it in its bin",
    "NutAssemblySquare": "put the square nut on the square peg",
    "Stack": "stack the red cube on the green cube",
    "Door": "open the door",
}


def _import_robosuite():
    # robosuite prints macro warnings at import; keep them out of users' logs.
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        import robosuite
        from robosuite import load_controller_config
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    return robosuite, load_controller_config


def clear_gripper_commands(env) -> None:
    """Zero the grippers' remembered command after a soft reset.

    robosuite's grippers move their command towards each new action at a limited speed and a soft
    reset (``hard_reset=False``) keeps the last command, so an episode's first steps would depend on
    how the previous episode ended. A freshly built model starts from zero; so do we.
    """
    for robot in env.robots:
        robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)


def _placement_samplers(env) -> dict[str, Any]:
    """Name → UniformRandomSampler of a robosuite env's placement initializer (composites flattened)."""
    root = getattr(env, "placement_initializer", None)
    found: dict[str, Any] = {}
    stack = [root] if root is not None else []
    while stack:
        sampler = stack.pop()
        children = getattr(sampler, "samplers", None)
        if isinstance(children, dict):
            stack.extend(children.values())
        else:
            found[sampler.name] = sampler
    return found


def apply_placement_overrides(env, overrides: dict[str, dict[str, Sequence[float]]]) -> dict[str, dict[str, list[float]]]:
    """Replace the ``x_range`` / ``y_range`` of named placement samplers; return every sampler's ranges.

    Raises:
        ConfigError: an unknown sampler name or key, or a range that is not ``[lo, hi]`` with lo <= hi.
    """
    samplers = _placement_samplers(env)
    for name, ranges in overrides.items():
        if name not in samplers:
            raise ConfigError(f"placement override for unknown sampler '{name}'; this task has {sorted(samplers)}")
        for key, value in dict(ranges).items():
            if key not in ("x_range", "y_range"):
                raise ConfigError(f"placement.{name}: unknown key '{key}' (use x_range, y_range)")
            pair = [float(v) for v in value]
            if len(pair) != 2 or pair[0] > pair[1]:
                raise ConfigError(f"placement.{name}.{key} must be [low, high] with low <= high, got {list(value)}")
            setattr(samplers[name], key, pair)
    return {name: {"x_range": [float(v) for v in s.x_range], "y_range": [float(v) for v in s.y_range]}
            for name, s in samplers.items() if hasattr(s, "x_range")}


@dataclass(frozen=True)
class Obstacle:
    """A fixed box added to a task's arena (an out-of-distribution variant: something in the way).

    The box is a MuJoCo body welded to the world (no joint), so it never moves; it collides with the
    robot and the objects like any other geom. Its body is named ``name`` (a keypoint for reward
    programs: :func:`embodied_steer.vls.keypoints.keypoints_for` with ``extra_bodies``), its geom
    ``name + "_geom"``.

    Attributes:
        name: MuJoCo body name (letters, digits, ``_``; must not clash with the task's bodies).
        pos: ``(3,)`` centre of the box, metres, world frame.
        size: ``(3,)`` half-extents of the box along x, y, z, metres (all > 0).
        rgba: ``(4,)`` colour, each in [0, 1].
    """

    name: str
    pos: tuple[float, float, float]
    size: tuple[float, float, float]
    rgba: tuple[float, float, float, float] = (0.45, 0.3, 0.2, 1.0)

    @classmethod
    def from_config(cls, value: Mapping[str, Any], index: int) -> "Obstacle":
        """Build one from an env YAML entry ``{name, pos: [x, y, z], size: [hx, hy, hz], rgba?}``.

        Raises:
            ConfigError: a missing or unknown key, a wrong length, a non-finite number, a size <= 0.
        """
        where = f"obstacles[{index}]"
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping with name, pos, size; got {type(value).__name__}")
        unknown = set(value) - {"name", "pos", "size", "rgba"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (use name, pos, size, rgba)")
        missing = [k for k in ("name", "pos", "size") if k not in value]
        if missing:
            raise ConfigError(f"{where}: missing {missing}")
        name = str(value["name"])
        if not name or not all(c.isalnum() or c == "_" for c in name):
            raise ConfigError(f"{where}.name must be letters, digits and '_', got '{name}'")

        def numbers(key: str, n: int) -> tuple[float, ...]:
            try:
                out = tuple(float(v) for v in value[key])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}.{key} must be a list of {n} numbers, got {value[key]!r}") from None
            if len(out) != n or not all(math.isfinite(v) for v in out):
                raise ConfigError(f"{where}.{key} must be {n} finite numbers, got {list(value[key])}")
            return out

        pos, size = numbers("pos", 3), numbers("size", 3)
        if min(size) <= 0:
            raise ConfigError(f"{where}.size holds half-extents in metres and must be > 0, got {list(size)}")
        rgba = numbers("rgba", 4) if "rgba" in value else cls.rgba
        if not all(0.0 <= c <= 1.0 for c in rgba):
            raise ConfigError(f"{where}.rgba must be 4 numbers in [0, 1], got {list(rgba)}")
        return cls(name, pos, size, rgba)  # type: ignore[arg-type]

    @property
    def geom_name(self) -> str:
        return f"{self.name}_geom"

    def element(self) -> ET.Element:
        """The MJCF ``<body>`` of the box."""
        body = ET.Element("body", name=self.name, pos=" ".join(f"{v:g}" for v in self.pos))
        ET.SubElement(body, "geom", name=self.geom_name, type="box", size=" ".join(f"{v:g}" for v in self.size),
                      rgba=" ".join(f"{v:g}" for v in self.rgba), group="0", contype="1", conaffinity="1",
                      friction="1 0.005 0.0001")
        return body


def add_obstacles(env, obstacles: Sequence[Obstacle]) -> None:
    """Rebuild a robosuite env's simulation with ``obstacles`` appended to its world body.

    Appending keeps every existing body, geom and joint id (and the object references robosuite
    keeps) unchanged; the env is reset once from the new model.

    Raises:
        ConfigError: an obstacle's name clashes with a body already in the model, or two share a name.
    """
    if not obstacles:
        return
    root = ET.fromstring(env.model.get_xml())
    existing = {b.get("name") for b in root.iter("body")}
    names = [o.name for o in obstacles]
    clash = sorted((set(names) & existing) | {n for n in names if names.count(n) > 1})
    if clash:
        raise ConfigError(f"obstacle names {clash} clash with each other or with bodies of the task model")
    worldbody = root.find("worldbody")
    if worldbody is None:  # pragma: no cover - every robosuite model has one
        raise ConfigError("the task model has no <worldbody>")
    for obstacle in obstacles:
        worldbody.append(obstacle.element())
    with contextlib.redirect_stdout(io.StringIO()):
        env.reset_from_xml_string(ET.tostring(root, encoding="unicode"))


class RobosuiteEnv(gym.Env):
    """A robosuite task behind the toolkit's gymnasium observation format.

    Args:
        task: robosuite environment name (``"Lift"``, ``"PickPlaceCan"``, ...).
        robot: robot name (``"Panda"``).
        controller: robosuite default controller name (``"OSC_POSE"``).
        horizon: episode length in control steps (truncation).
        control_freq: control rate in Hz.
        cameras: camera names to render (``"agentview"``, ``"robot0_eye_in_hand"``); empty = none.
        image_size: ``(height, width)`` of rendered images.
        shadow_size, offscreen_samples: render quality (see :class:`RenderSettings`).
        terminate_on_success: end the episode at the first successful step.
        instruction: the language instruction (defaults to a per-task sentence).
        name: the catalogue name used in results.
        env_kwargs: extra keyword arguments for ``robosuite.make``.
        model_seed: seeds NumPy's global generator while the model is built (then restores it):
            some tasks randomise their model at construction — Lift draws its cube's size — so
            without it two processes build different cubes and the same episode seed gives
            different episodes (a distributed evaluation would not equal an in-process one).
            ``None`` leaves the generator alone.
        placement: object-placement overrides, sampler name → ``{"x_range": [lo, hi], "y_range":
            [lo, hi]}`` in metres relative to the sampler's reference point (the table centre for
            Lift's ``ObjectSampler``, bin 1's centre for PickPlace's ``CollisionObjectSampler``).
            Used for out-of-distribution variants of a task (an object outside the range the
            demonstrations covered) without a new environment class. ``spec_info.extra["placement"]``
            records the ranges in force.
        obstacles: fixed boxes added to the arena, each ``{name, pos: [x, y, z], size: [hx, hy,
            hz], rgba?}`` (metres, world frame; size = half-extents), see :class:`Obstacle`. Every
            step's ``info["obstacle_contact"]`` says whether anything touches one;
            :meth:`episode_info` counts the steps with contact; ``spec_info.extra["obstacles"]``
            records them (reward programs see their bodies as extra keypoints).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str = "Lift",
        robot: str = "Panda",
        controller: str = "OSC_POSE",
        horizon: int = 200,
        control_freq: int = 20,
        cameras: Sequence[str] = (),
        image_size: Sequence[int] = (128, 128),
        shadow_size: int = 4096,
        offscreen_samples: int = 4,
        terminate_on_success: bool = True,
        instruction: str | None = None,
        name: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
        render_mode: str | None = "rgb_array",
        model_seed: int | None = 0,
        placement: dict[str, dict[str, Sequence[float]]] | None = None,
        obstacles: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        robosuite, load_controller_config = _import_robosuite()
        if task not in robosuite.ALL_ENVIRONMENTS:
            raise ConfigError(f"unknown robosuite task '{task}'; known: {sorted(robosuite.ALL_ENVIRONMENTS)}")
        try:
            controller_cfg = load_controller_config(default_controller=controller)
        except Exception as exc:  # robosuite raises AssertionError for unknown names
            raise ConfigError(f"unknown robosuite controller '{controller}': {exc}") from exc
        height, width = int(image_size[0]), int(image_size[1])
        self.render_settings = RenderSettings(tuple(cameras), height, width, shadow_size, offscreen_samples)
        self._cameras = tuple(cameras)
        self.task = task
        self.horizon = int(horizon)
        self.terminate_on_success = terminate_on_success
        self.instruction = instruction if instruction is not None else TASK_INSTRUCTIONS.get(task, task)
        self.render_mode = render_mode
        use_cameras = bool(self._cameras)
        saved = np.random.get_state()
        if model_seed is not None:
            np.random.seed(int(model_seed))
        try:
            self._env = robosuite.make(
                task,
                robots=robot,
                controller_configs=controller_cfg,
                has_renderer=False,
                has_offscreen_renderer=use_cameras,
                use_camera_obs=use_cameras,
                camera_names=list(self._cameras) if use_cameras else "agentview",
                camera_heights=height,
                camera_widths=width,
                reward_shaping=False,
                control_freq=control_freq,
                horizon=self.horizon + 1,  # truncation is ours; never let robosuite end the episode
                ignore_done=True,
                hard_reset=False,
                **(env_kwargs or {}),
            )
        finally:
            np.random.set_state(saved)
        if use_cameras:
            apply_render_quality(self._env.sim, self.render_settings, self._env.render_gpu_device_id)

        self.obstacles = tuple(Obstacle.from_config(o, i) for i, o in enumerate(obstacles or ()))
        add_obstacles(self._env, self.obstacles)
        sim_model = self._env.sim.model
        self._obstacle_geoms = frozenset(sim_model.geom_name2id(o.geom_name) for o in self.obstacles)
        self._contact_steps = 0
        placements = apply_placement_overrides(self._env, placement or {})
        low, high = self._env.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        raw = self._env.reset()
        env_dim = int(np.asarray(raw["object-state"]).shape[0])
        spaces: dict[str, gym.Space] = {
            "state": gym.spaces.Box(-np.inf, np.inf, (len(STATE_NAMES),), np.float32),
            "env_state": gym.spaces.Box(-np.inf, np.inf, (env_dim,), np.float32),
        }
        if use_cameras:
            spaces["pixels"] = gym.spaces.Dict(
                {c: gym.spaces.Box(0, 255, (height, width, 3), np.uint8) for c in self._cameras}
            )
        self.observation_space = gym.spaces.Dict(spaces)
        self.spec_info = EnvSpec(
            name=name or task.lower(),
            max_episode_steps=self.horizon,
            action_bounds=ActionBounds(self.action_space.low, self.action_space.high),
            state_names=STATE_NAMES,
            control_hz=float(control_freq),
            extra={"suite": "robosuite", "task": task, "robot": robot, "controller": controller,
                   "controller_config": {k: v for k, v in controller_cfg.items() if k != "type"},
                   "placement": placements, "sim_timestep": float(self._env.model_timestep),
                   "obstacles": [{"name": o.name, "pos": list(o.pos), "size": list(o.size)} for o in self.obstacles]},
        )
        if hasattr(self._env, "target_bin_placements") and hasattr(self._env, "object_to_id"):
            # PickPlace tasks: centre of each object's target bin placement (world frame, metres).
            goals = {name: self._env.target_bin_placements[i].tolist() for name, i in self._env.object_to_id.items()}
            single = getattr(self._env, "object_id", None)
            self.spec_info.extra["goal_positions"] = goals
            if single is not None:
                self.spec_info.extra["goal_pos"] = self._env.target_bin_placements[single].tolist()
        self.state_names = STATE_NAMES
        self._t = 0
        self._last_raw = raw

    # ------------------------------------------------------------------ helpers
    def _convert(self, raw: dict[str, Any]) -> dict[str, Any]:
        robot = "robot0_"
        state = np.concatenate(
            [raw[robot + "eef_pos"], raw[robot + "eef_quat"], raw[robot + "gripper_qpos"]]
        ).astype(np.float32)
        out: dict[str, Any] = {"state": state, "env_state": np.asarray(raw["object-state"], np.float32)}
        if self._cameras:
            out["pixels"] = upright_images(raw, self._cameras)
        return out

    def _info(self, success: bool, contact: bool = False) -> dict[str, Any]:
        extra = {"obstacle_contact": contact} if self.obstacles else {}
        return step_info(success, self.instruction, self.render_settings, **extra)

    def obstacle_contact(self) -> bool:
        """Whether any geom touches an obstacle in the current simulator state (False without obstacles)."""
        if not self._obstacle_geoms:
            return False
        data = self._env.sim.data
        for contact in data.contact[: data.ncon]:
            if contact.geom1 in self._obstacle_geoms or contact.geom2 in self._obstacle_geoms:
                return True
        return False

    def episode_info(self) -> dict[str, Any]:
        """What the environment saw in the current episode (the evaluation runner stores it).

        With obstacles: ``obstacle_contact_steps`` (control steps that ended with something touching
        an obstacle) and ``obstacle_collision`` (at least one such step). Empty without obstacles.
        """
        if not self.obstacles:
            return {}
        return {"obstacle_contact_steps": self._contact_steps, "obstacle_collision": self._contact_steps > 0}

    @property
    def unwrapped_robosuite(self):
        """The underlying robosuite environment (for experts that read ground-truth poses)."""
        return self._env

    def object_positions(self) -> dict[str, np.ndarray]:
        """Ground-truth object and end-effector positions (metres, world frame) from the last step."""
        return {k[: -len("_pos")]: np.asarray(v, np.float64) for k, v in self._last_raw.items() if k.endswith("_pos")}

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # robosuite's object placement samplers draw from NumPy's global generator.
            np.random.seed(seed)
        make_current(self._env.sim)
        raw = self._env.reset()
        clear_gripper_commands(self._env)
        self._last_raw = raw
        self._t = 0
        self._contact_steps = 0
        return self._convert(raw), self._info(self._env._check_success(), self.obstacle_contact())

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"{self.task}: action must have shape {self.action_space.shape}, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"{self.task}: action contains NaN or inf: {action}")
        make_current(self._env.sim)
        raw, reward, _, _ = self._env.step(np.clip(action, self.action_space.low, self.action_space.high))
        self._last_raw = raw
        self._t += 1
        success = bool(self._env._check_success())
        terminated = success and self.terminate_on_success
        truncated = self._t >= self.horizon and not terminated
        contact = self.obstacle_contact()
        self._contact_steps += int(contact)
        return self._convert(raw), float(reward), terminated, truncated, self._info(success, contact)

    def render(self) -> np.ndarray | None:
        cam = self._cameras[0] if self._cameras else "agentview"
        h, w = self.render_settings.height, self.render_settings.width
        if not self._cameras:
            return None
        make_current(self._env.sim)
        img = self._env.sim.render(camera_name=cam, height=h, width=w)
        return np.ascontiguousarray(img[::-1])

    def close(self) -> None:
        free_render_context(self._env.sim)
        with contextlib.suppress(Exception):
            self._env.close()
