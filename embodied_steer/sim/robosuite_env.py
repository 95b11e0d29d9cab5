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
import os
from typing import Any, Sequence

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
                   "placement": placements, "sim_timestep": float(self._env.model_timestep)},
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

    def _info(self, success: bool) -> dict[str, Any]:
        return step_info(success, self.instruction, self.render_settings)

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
        return self._convert(raw), self._info(self._env._check_success())

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
        return self._convert(raw), float(reward), terminated, truncated, self._info(success)

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
