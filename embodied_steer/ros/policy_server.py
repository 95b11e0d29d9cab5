"""Policy server: a lifecycle node that runs a configured policy (+ interventions) at the control rate.

Lifecycle: ``configure`` loads the policy and creates topics and services; ``activate`` starts the
control timer; ``deactivate`` stops it and holds; ``cleanup`` drops the policy. With the parameter
``autostart: true`` the node configures and activates itself (for the simulated loop and for robots
without a lifecycle manager).

``episode_seed`` ≥ 0 re-seeds the policy's sampler at every episode reset (the simulated arm sets it
to the episode's seed before calling ``~/reset``, so a run through ROS draws the same noise as
``embodied-steer eval`` with the same seeds); -1 keeps one random stream (real robots).

In ``lockstep`` mode (simulators only: the arm waits for each command) a stall of the arm or a slow
inference still sends hold commands and is counted, but does not void the current chunk — the
simulated arm did not move meanwhile — so the executed actions equal the in-process runner's.

Every control tick (``control_rate_hz``, the arm's control rate, which also defines the command
units; ``timer_rate_hz`` > 0 ticks faster, for a lockstep simulation that should run faster than
real time): if the e-stop is engaged or the :class:`Watchdog` trips
(stale observations, inference overrun), publish a *hold* command; otherwise take the next action of
the current chunk (running the policy when the chunk is used up), pass it through the
:class:`SafetyFilter` and publish it. With ``lockstep: true`` a command is only sent for an
observation stamp not answered yet (the simulated arm steps once per command).

Topics, units and message types: :mod:`embodied_steer.ros.conversions`. Services: ``~/estop``
(``std_srvs/SetBool``: true engages, false releases), ``~/reset`` (``std_srvs/Trigger``: new
episode), ``~/set_steering`` (``std_srvs/SetBool``: interventions on / off, from the next chunk).
Steering parameters ``intervention.noise_scale`` / ``intervention.noise_seed`` and
``steering.settings`` (a JSON object with the settings of ``embodied-steer eval``'s intervention
block; when set it is the complete settings and the former are ignored) may be changed at run time (``ros2 param set``, or the
``steering_control`` node); a change is validated against the loaded policy at once — an invalid
one is refused with its reason — and applies from the next chunk. Diagnostics:
``diagnostic_msgs/DiagnosticArray`` on ``diagnostics``.

What ``steering.settings`` can switch at run time (all validated before they are accepted):

* ``noise_scale`` / ``noise_seed`` — the sampler's initial noise (``NOISE`` point);
* ``steer`` — activation steering (a mapping in the format of ``steering/<name>.yaml``; ``ACTIVATIONS``);
  coefficients, neurons and schedules change by sending a new mapping;
* ``dsrl`` — the path of a DSRL adapter folder: its noise actor picks the noise (``NOISE``); ``null``
  or absent goes back to the base policy's own noise;
* ``guide`` — reward-guided sampling (``DENOISING_STEP``): the name of a ``guide`` config
  (``vls``, ``grad``) or a mapping of guide settings, which may carry the reward program's text as
  ``program_source`` (compiled in the sandbox). Needs the arm description and keypoints
  (:mod:`embodied_steer.ros.scene`); a chunk whose keypoints are missing or older than
  ``keypoints_max_age_s`` is sampled unguided and counted as ``guide_fallbacks``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from embodied_steer.core.policy import InterventionPoint
from embodied_steer.ros import conversions as cv
from embodied_steer.ros.inputs import ObservationInputs
from embodied_steer.ros.node_utils import announce, declare, run_node
from embodied_steer.ros.params import POLICY_SERVER as DEFAULTS
from embodied_steer.ros.safety import EefLimits, EStop, JointLimits, SafetyFilter, UnsafeInput, Watchdog
from embodied_steer.ros.scene import (
    ArmDescriptionError,
    KeypointStore,
    guide_context,
    keypoints_from_message,
    load_arm_description,
    parse_arm_description,
)


def _strings(values: list[str]) -> list[str]:
    return [v for v in values if v]  # ROS string-array parameters can't be empty: [""] means none


class PolicyServer(LifecycleNode):
    """See the module docstring. Parameters: :data:`DEFAULTS` (units in the names)."""

    def __init__(self, node_name: str = "policy_server", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare(self, DEFAULTS)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.policy = None
        self.timer = None
        self._subs: list = []
        self._pubs: dict[str, Any] = {}
        self._srvs: list = []
        self.estop = EStop()
        self.inputs: ObservationInputs | None = None
        self.counters = {"rejected": 0, "clamped": 0, "holds": 0, "commands": 0, "chunks": 0, "overruns": 0,
                         "errors": 0, "guided_chunks": 0, "guide_fallbacks": 0, "dsrl_chunks": 0}
        self.last_infer_s = 0.0
        self._queue: list[np.ndarray] = []
        self._last_stamp = -1
        self._last_gripper = -1.0
        self._holding = ""
        self._act = None
        self._needs_keypoints = False
        self._detach: list = []  # undo functions of the current settings (steering hooks, guided sampler)
        self._act_dirty = True
        self.keypoints = KeypointStore(float(self.p["keypoints_max_age_s"]))
        self.arm_description: dict[str, Any] | None = None
        if self.p["arm_description_file"]:
            self.arm_description = load_arm_description(self.p["arm_description_file"])
        if self.p["autostart"]:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise RuntimeError("policy_server: configure failed")
            self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._load_policy()
            self._make_safety()
        except Exception as exc:
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        info = self.policy.info
        cams = _strings(self.p["cameras"])
        self.assembler = cv.ObservationAssembler(self.p["gripper_joints"], info.env_state_dim, cams,
                                                 int(self.p["sync_slop_s"] * 1e9), self.p["instruction"])
        self.inputs = ObservationInputs(
            self, self.assembler, max_future_stamp_s=self.p["max_future_stamp_s"],
            on_observation=lambda: self.watchdog.observation(time.monotonic()),
            on_reset=lambda _stamp: self._new_episode(), on_joint_states=self._on_joints)
        self.inputs.subscribe(cams)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subs = [self.create_subscription(Bool, "estop", self._on_estop_topic, 10),
                      self.create_subscription(PoseArray, "keypoints", self._on_keypoints, 10),
                      self.create_subscription(String, "arm_description", self._on_arm_description, latched)]
        if self.p["command_type"] == "eef_twist":
            self._pubs["twist"] = self.create_publisher(TwistStamped, "eef_command", 10)
            self._pubs["gripper"] = self.create_publisher(JointState, "gripper_command", 10)
        elif self.p["command_type"] == "joint_trajectory":
            self._pubs["trajectory"] = self.create_publisher(JointTrajectory, "joint_trajectory", 10)
        else:
            self.get_logger().error(f"command_type must be eef_twist or joint_trajectory, got {self.p['command_type']}")
            return TransitionCallbackReturn.FAILURE
        self._pubs["diagnostics"] = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self._srvs = [
            self.create_service(SetBool, "~/estop", self._srv_estop),
            self.create_service(Trigger, "~/reset", self._srv_reset),
            self.create_service(SetBool, "~/set_steering", self._srv_steering),
        ]
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"configured policy '{info.name}' (chunk {info.chunk_size}, executes "
                               f"{self._execute_steps()}), command_type={self.p['command_type']}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.watchdog.reset()
        self._queue.clear()
        rate = float(self.p["timer_rate_hz"]) or float(self.p["control_rate_hz"])
        self.timer = self.create_timer(1.0 / rate, self._tick)
        announce(f"READY {self.get_name()} active")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        if self.timer is not None:
            self.destroy_timer(self.timer)
            self.timer = None
        self._hold("deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        for s in self._subs:
            self.destroy_subscription(s)
        if self.inputs is not None:
            self.inputs.destroy()
        for s in self._srvs:
            self.destroy_service(s)
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self.destroy_timer(self._diag_timer)
        self._subs, self._srvs, self._pubs = [], [], {}
        self._remove_interventions()
        self._act = None
        self.policy = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ set-up
    def _load_policy(self) -> None:
        from embodied_steer.cli import compose, instantiate_policy

        overrides = [f"policy={self.p['policy']}"] + _strings(self.p["policy_overrides"])
        if self.p["checkpoint"]:
            overrides.append(f"policy.path_or_hub_id={self.p['checkpoint']}")
        cfg = compose("eval", overrides)
        torch.set_num_threads(1)
        self.policy = instantiate_policy(cfg.policy)
        self.policy.reset()

    def _make_safety(self) -> None:
        p = self.p
        eef = EefLimits(p["action_low"], p["action_high"], p["workspace_low"], p["workspace_high"],
                        p["max_linear_speed"], p["max_angular_speed"], p["max_linear_step_m"],
                        p["max_angular_step_rad"], p["control_rate_hz"])
        joints = None
        if p["command_type"] == "joint_trajectory":
            joints = JointLimits(p["arm_joints"], p["joint_lower"], p["joint_upper"], p["joint_max_velocity"],
                                 p["control_rate_hz"])
        self.safety = SafetyFilter(eef, joints)
        self.scale = cv.EefScale(p["max_linear_step_m"], p["max_angular_step_rad"], p["control_rate_hz"])
        self.watchdog = Watchdog(p["obs_timeout_s"], p["max_inference_s"])

    def _execute_steps(self) -> int:
        return int(self.p["execute_steps"]) or self.policy.info.execute_steps

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {prm.name: prm.value for prm in params}
        for name in ("control_rate_hz", "policy", "checkpoint", "command_type"):
            if name in changes and self.policy is not None:
                return SetParametersResult(successful=False, reason=f"{name} can only change while unconfigured")
        if any(n.startswith(("intervention.", "steering.")) for n in changes):
            try:
                settings = self._steering_settings({**self.p, **changes})
                if self.policy is not None:  # validate against this policy; built again at the next chunk
                    _, undo = self._build_act(settings)
                    for fn in undo:
                        fn()
            except Exception as exc:  # noqa: BLE001 - any invalid setting is refused with its reason
                return SetParametersResult(successful=False, reason=f"{type(exc).__name__}: {exc}")
        for name, value in changes.items():
            self.p[name] = value
            if name.startswith(("intervention.", "steering.")) or name == "steering_enabled":
                self._act_dirty = True  # rebuilt at the next chunk
        return SetParametersResult(successful=True)

    @staticmethod
    def _steering_settings(p: dict[str, Any]) -> dict[str, Any]:
        """The evaluation's intervention settings from the parameters: the JSON object in
        ``steering.settings`` (the format of ``embodied-steer eval``'s settings) when it is set — it is
        then the complete settings — else the ``intervention.*`` parameters."""
        import json

        text = str(p.get("steering.settings") or "").strip()
        if text:
            settings = json.loads(text)
            if not isinstance(settings, dict):
                raise ValueError(f"steering.settings must be a JSON object, got {type(settings).__name__}")
        else:
            settings = {"noise_scale": float(p["intervention.noise_scale"]),
                        "noise_seed": int(p["intervention.noise_seed"])}
        scale = float(settings.get("noise_scale", 1.0))
        if not np.isfinite(scale) or scale < 0:
            raise ValueError(f"intervention.noise_scale must be finite and >= 0, got {scale}")
        return settings

    def _build_act(self, settings: dict[str, Any]):
        """The act function of ``settings`` and the undo functions of what it attached to the policy.

        ``steer`` (a mapping in the format of ``steering/<name>.yaml``) attaches interventions on the
        policy's modules; ``guide`` builds a guided sampler from the arm description and the keypoint
        topic; the other keys (``noise_scale``, ``noise_seed``, ``dsrl``) go to
        :func:`~embodied_steer.eval.interventions.make_act_fn`.
        """
        from embodied_steer.eval.interventions import make_act_fn, steered_act

        settings = dict(settings)
        steer = settings.pop("steer", None)
        guide = settings.pop("guide", None)
        if steer is not None and not isinstance(steer, dict):
            raise ValueError(f"steer must be a mapping of steering settings, got {type(steer).__name__}")
        undo: list = []
        if guide is not None:
            sampler = act = self._guided_act(guide, settings)
            policy = self.policy
            undo.append(lambda: sampler.detach(policy))
        else:
            act = make_act_fn(settings, self.policy)
        if steer:
            from embodied_steer.steering.config import attach_from_config

            try:
                handle = attach_from_config(self.policy, steer)
            except Exception:
                for fn in undo:
                    fn()
                raise
            if handle is not None:
                undo.append(handle.remove)
                act = steered_act(handle, act)
        return act, undo

    def _guided_act(self, guide: Any, settings: dict[str, Any]):
        """A guided sampler for ``guide`` (a guide config name or a settings mapping), re-seeded with the
        current episode's seed so that a run through ROS samples what ``embodied-steer eval`` does."""
        from embodied_steer.vls.configure import guide_from_context

        if float(settings.get("noise_scale", 1.0)) != 1.0 or settings.get("dsrl") is not None:
            raise ValueError("guide cannot be combined with noise_scale or dsrl (the guided sampler draws its own noise)")
        if isinstance(guide, str):
            from omegaconf import OmegaConf

            from embodied_steer.cli import compose

            guide = OmegaConf.to_container(compose("eval", [f"guide={guide}"]).guide, resolve=True)
        if not isinstance(guide, dict):
            raise ValueError(f"guide must be a guide config name or a mapping of guide settings, got "
                             f"{type(guide).__name__}")
        if self.arm_description is None:
            raise ValueError("guide needs the arm description (topic 'arm_description' or the "
                             "arm_description_file parameter); none received yet")
        sampler = guide_from_context(guide, self.policy, guide_context(self.arm_description, self.keypoints))
        seed = int(self.p["episode_seed"])
        if seed >= 0:
            sampler.reset(seed)
        return sampler

    def _remove_interventions(self) -> None:
        for fn in reversed(self._detach):
            fn()
        self._detach = []

    def _act_fn(self):
        if self._act_dirty or self._act is None:
            from embodied_steer.eval.runner import default_act

            self._remove_interventions()  # the previous interventions come off before new ones go on
            self._needs_keypoints = False
            if self.p["steering_enabled"]:
                settings = self._steering_settings(self.p)
                self._act, self._detach = self._build_act(settings)
                self._needs_keypoints = settings.get("guide") is not None
            else:
                self._act = default_act
            self._act_dirty = False
        return self._act

    def _on_keypoints(self, msg: PoseArray) -> None:
        try:
            stamp = cv.stamp_ns(msg.header.stamp)
            if self.inputs is not None and stamp < self.inputs.ignore_before_ns:
                return  # from before the last episode reset
            now = self.get_clock().now().nanoseconds
            if stamp > now + int(self.p["max_future_stamp_s"] * 1e9):
                raise UnsafeInput(f"keypoints: stamp is {(stamp - now) / 1e9:.3f} s in the future")
            names = (self.arm_description or {}).get("keypoint_names") or []
            self.keypoints.update(stamp, keypoints_from_message(msg, len(names) or None))
        except Exception as exc:  # noqa: BLE001 - nothing malformed may crash the node
            if self.inputs is not None:
                self.inputs.reject("keypoints", exc)

    def _on_arm_description(self, msg: String) -> None:
        try:
            description = parse_arm_description(msg.data)
        except ArmDescriptionError as exc:
            if self.inputs is not None:
                self.inputs.reject("arm_description", exc)
            return
        if self.p["arm_description_file"]:
            return  # the parameter file wins over the topic
        self.arm_description = description
        self.get_logger().info(f"arm description: task {description['task']}, "
                               f"{len(description.get('keypoint_names') or [])} keypoints")

    # ------------------------------------------------------------------ inputs
    def _on_joints(self, msg: JointState) -> None:
        if self.p["command_type"] == "joint_trajectory":
            self._measured_joints = cv.joint_positions(msg, self.p["arm_joints"])

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self.estop.engage("e-stop topic")
            self._hold("e-stop")

    def _new_episode(self, ignore_before_ns: int = 0) -> None:
        self._queue.clear()
        if self.inputs is not None:
            self.inputs.new_episode(ignore_before_ns)
        self._last_stamp = -1
        self.keypoints.clear()
        if self.policy is not None:
            seed = int(self.p["episode_seed"])
            self.policy.reset(seed=seed if seed >= 0 else None)
        self.safety.reset_joint_reference()

    def _srv_estop(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        if req.data:
            self.estop.engage("e-stop service")
            self._hold("e-stop")
            res.message = "e-stop engaged"
        else:
            self.estop.release()
            self._queue.clear()
            res.message = "e-stop released"
        res.success = True
        return res

    def _srv_reset(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        now = self.get_clock().now().nanoseconds
        if self.inputs is not None:
            self.inputs.last_reset_ns = now
        self._new_episode(ignore_before_ns=now)
        res.success, res.message = True, "episode reset"
        return res

    def _srv_steering(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        try:
            self.set_parameters([rclpy.parameter.Parameter("steering_enabled", value=bool(req.data))])
        except Exception as exc:  # noqa: BLE001
            res.success, res.message = False, str(exc)
            return res
        res.success, res.message = True, f"steering {'on' if req.data else 'off'} from the next chunk"
        return res

    # ------------------------------------------------------------------ control
    def _tick(self) -> None:
        now = time.monotonic()
        if self.estop.engaged:
            self._hold(self.estop.reason)
            return
        status = self.watchdog.status(now)
        if not status.ok:
            if status.reason != "no observation yet":
                if not self.p["lockstep"]:
                    self._queue.clear()  # the arm kept moving (or stopped) without us: the plan is void
                self._hold(status.reason)
            return
        stamp = self.assembler.latest_stamp()
        if stamp is None:
            return
        new = stamp > self._last_stamp
        if self.p["lockstep"] and not new:
            return
        obs = self.assembler.build(timestamp=stamp / 1e9)
        previous = self._last_stamp
        if new:
            self._last_stamp = stamp
        try:
            if not self._queue:
                act = self._act_fn()
                if self._needs_keypoints and self.p["lockstep"] and (self.keypoints.stamp_ns or -1) < stamp:
                    self._last_stamp = previous  # answer this stamp once they arrive
                    return  # lockstep: the simulator sends this step's keypoints; wait for them
                t0 = time.monotonic()
                chunk = act(self.policy, obs)
                t1 = time.monotonic()
                self.last_infer_s = t1 - t0
                self._count_chunk(chunk.info)
                if not self.watchdog.inference(t0, t1):
                    self.counters["overruns"] += 1
                    if not self.p["lockstep"]:
                        self._hold(f"inference overrun ({t1 - t0:.3f} s)")
                        return
                self._queue = [row for row in chunk.actions[: max(1, self._execute_steps())]]
            elif new:
                self.policy.observe(obs)
            action = self._queue.pop(0)
            self._command(action, obs, stamp)
        except Exception as exc:  # noqa: BLE001 - a failing policy must not crash the loop
            self.counters["errors"] += 1
            self._queue.clear()
            self.get_logger().error(f"policy step failed: {type(exc).__name__}: {exc}", throttle_duration_sec=1.0)
            self._hold(f"policy error: {type(exc).__name__}")

    def _count_chunk(self, info: Any) -> None:
        self.counters["chunks"] += 1
        if "guided" in info:
            self.counters["guided_chunks" if info["guided"] else "guide_fallbacks"] += 1
        if "dsrl" in info:
            self.counters["dsrl_chunks"] += 1

    def _command(self, action: np.ndarray, obs, stamp: int) -> None:
        st = cv.to_stamp(stamp)
        if self.p["command_type"] == "eef_twist":
            safe, report = self.safety.filter_eef(action, obs.state[:3])
            twist, grip = cv.action_to_eef_msgs(safe, st, self.scale, self.p["frame_id"])
            self._last_gripper = float(safe[6])
            self._pubs["twist"].publish(twist)
            self._pubs["gripper"].publish(grip)
        else:
            safe, report = self.safety.filter_joints(action, getattr(self, "_measured_joints", None))
            dt = 1.0 / self.p["control_rate_hz"]
            self._pubs["trajectory"].publish(cv.chunk_to_trajectory(safe[None], self.p["arm_joints"], dt, st))
        self.counters["commands"] += 1
        if report.clamped:
            self.counters["clamped"] += 1
            for r in report.reasons:
                key = "clamp_" + r.split(":")[0].replace(" ", "_")
                self.counters[key] = self.counters.get(key, 0) + 1
        if self._holding:
            self.get_logger().info(f"resumed commanding after hold ({self._holding})")
            self._holding = ""
            self._publish_diagnostics()

    def _hold(self, reason: str) -> None:
        """Stop commanding motion: zero twist (keep gripper) or the measured joint position."""
        stamp = self.get_clock().now().to_msg()
        if "twist" in self._pubs:
            twist, grip = cv.action_to_eef_msgs(np.r_[np.zeros(6), self._last_gripper], stamp, self.scale,
                                                self.p["frame_id"])
            self._pubs["twist"].publish(twist)
            self._pubs["gripper"].publish(grip)
        elif "trajectory" in self._pubs and getattr(self, "_measured_joints", None) is not None:
            dt = 1.0 / self.p["control_rate_hz"]
            self._pubs["trajectory"].publish(cv.chunk_to_trajectory(self._measured_joints[None], self.p["arm_joints"],
                                                                    dt, stamp))
            self.safety.reset_joint_reference()
        self.counters["holds"] += 1
        reason = reason.split(" (")[0]  # "observations stale (0.6 s > 0.5 s)" -> one log line per cause
        if reason != self._holding:
            self._holding = reason
            self.get_logger().warning(f"holding position: {reason}")
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        pub = self._pubs.get("diagnostics")
        if pub is None:
            return
        level = DiagnosticStatus.OK
        message = "commanding"
        if self.estop.engaged:
            level, message = DiagnosticStatus.ERROR, f"e-stop: {self.estop.reason}"
        elif self._holding:
            level, message = DiagnosticStatus.WARN, f"holding: {self._holding}"
        self._sync_rejected()
        last_reject = self.inputs.last_reject if self.inputs is not None else ""
        values = {**{k: str(v) for k, v in self.counters.items()},
                  "last_inference_s": f"{self.last_infer_s:.4f}", "last_reject": last_reject[:200]}
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: safety", message=message,
                                  hardware_id="embodied_steer",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        pub.publish(arr)

    def _sync_rejected(self) -> None:
        if self.inputs is not None:
            self.counters["rejected"] = self.inputs.rejected

    def close(self) -> None:
        self._sync_rejected()
        print(f"STATS {self.get_name()} " + " ".join(f"{k}={v}" for k, v in self.counters.items()), flush=True)


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyServer, args)
