"""Simulated arm: a robosuite / MuJoCo task behind the same topics as a real arm.

Publishes (stamps identical within one step): ``joint_states`` (arm + gripper joints, rad / m),
``eef_pose`` (``PoseStamped``, m, quaternion xyzw), ``object_state`` (``JointState`` carrying the
task's privileged object state, for state-based policies), ``camera/<cam>/image_raw`` when the env
renders cameras, ``instruction`` (``std_msgs/String``, transient local) and ``episode_reset``
(``std_msgs/Header``, stamp = start of the new episode); for reward-guided sampling also
``keypoints`` (``geometry_msgs/PoseArray``, the task's ground-truth keypoints, same stamp as the
observation, sent before it) and ``arm_description`` (``std_msgs/String`` JSON, transient local; see
:mod:`embodied_steer.ros.scene`). Executes ``eef_command``
(``TwistStamped``) + ``gripper_command`` (``JointState``), converted back to OSC_POSE deltas with
:class:`~embodied_steer.ros.conversions.EefScale`; malformed or non-finite commands are rejected
and replaced by a zero-motion step.

``step_mode``: ``lockstep`` steps once per command whose stamp equals the current observation's
stamp (the same semantics as the in-process runner, for comparing success rates; the current
observation is re-published every ``republish_s`` while no command comes: with the same stamp, and
after ``refresh_stamp_s`` unanswered with a fresh one); ``timer`` steps at
``control_rate_hz`` with the latest command (zero motion when none arrived within
``command_timeout_s``), like a real arm. Runs ``episodes`` episodes (0: forever) seeded
``seed + i``, prints an ``EPISODE {json}`` line per episode (also appended to ``results_path``) and
exits after the last one. In lockstep with a ``reset_service``, the first episode starts once that
service is reachable, and every episode's first observation is published only after it answered
(no reset/observation race);
with ``seed_policy`` the arm first sets the server's ``episode_seed`` parameter to the episode's seed,
so the policy draws the same noise as ``embodied-steer eval`` with the same seeds (parity check).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseArray, PoseStamped, TwistStamped
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger

from embodied_steer.ros import conversions as cv
from embodied_steer.ros.node_utils import announce, declare, run_node
from embodied_steer.ros.params import SIM_ARM as DEFAULTS
from embodied_steer.ros.scene import describe_env, keypoints_message


class SimArm(Node):
    def __init__(self, node_name: str = "sim_arm", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare(self, DEFAULTS)
        from embodied_steer.cli import compose, instantiate_env

        overrides = [f"env={self.p['env']}"] + [o for o in self.p["env_overrides"] if o]
        cfg = compose("eval", overrides)
        self.env = instantiate_env(cfg.env, fast_render=True)
        rs = self.env.unwrapped_robosuite
        robot = rs.robots[0]
        self.arm_names = list(robot.robot_joints)
        self.arm_index = list(robot._ref_joint_pos_indexes)
        self.gripper_names = list(robot.gripper.joints)
        self.cameras = list(self.env.render_settings.cameras)
        self.max_steps = int(self.p["max_steps"]) or self.env.spec_info.max_episode_steps
        self.scale = cv.EefScale(self.p["max_linear_step_m"], self.p["max_angular_step_rad"],
                                 self.env.spec_info.control_hz)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_joints = self.create_publisher(JointState, "joint_states", 10)
        self.pub_pose = self.create_publisher(PoseStamped, "eef_pose", 10)
        self.pub_objects = self.create_publisher(JointState, "object_state", 10)
        self.pub_instr = self.create_publisher(String, "instruction", latched)
        self.pub_reset = self.create_publisher(Header, "episode_reset", latched)
        self.pub_images = {c: self.create_publisher(Image, f"camera/{c}/image_raw", 10) for c in self.cameras}
        description = describe_env(self.env)
        self.pub_keypoints = (self.create_publisher(PoseArray, "keypoints", 10)
                              if description["keypoint_names"] else None)
        if self.pub_keypoints is not None:
            from embodied_steer.vls.defaults import env_variant

            self.keypoint_bodies = env_variant(self.env)[1]  # obstacles, after the task's own keypoints
        self.pub_description = self.create_publisher(String, "arm_description", latched)
        self.pub_description.publish(String(data=json.dumps(description)))
        self.create_subscription(TwistStamped, "eef_command", self._on_twist, 10)
        self.create_subscription(JointState, "gripper_command", self._on_gripper, 10)
        self.twists: dict[int, TwistStamped] = {}
        self.grippers: dict[int, JointState] = {}
        self.latest: tuple[float, np.ndarray] | None = None
        self.rejected = 0
        self.waiting_reset = False
        self.reset_client = (self.create_client(Trigger, self.p["reset_service"])
                             if self.p["reset_service"] and self.p["step_mode"] == "lockstep" else None)
        server = self.p["reset_service"].rsplit("/", 1)[0] if "/" in self.p["reset_service"] else ""
        self.seed_client = (self.create_client(SetParameters, f"{server}/set_parameters")
                            if self.reset_client is not None and self.p["seed_policy"] and server else None)
        self.unanswered = 0
        self.refreshed = 0
        self.late_commands = 0
        self.last_answered = 0
        self.stamp_ns = 0
        self.first_publish = time.monotonic()
        self.last_gripper = -1.0
        self.episode = -1
        self.results: list[dict[str, Any]] = []
        self.finished = False
        if self.reset_client is None:
            self._start_episode()
        else:  # lockstep with a server: start once its reset (and seed) services are reachable
            self._start_timer = self.create_timer(0.1, self._start_when_server_ready)
        if self.p["step_mode"] == "timer":
            self.create_timer(1.0 / float(self.p["control_rate_hz"]), self._timer_step)
        elif self.p["step_mode"] == "lockstep":
            self.create_timer(float(self.p["republish_s"]), self._maybe_republish)
        else:
            raise ValueError(f"step_mode must be lockstep or timer, got {self.p['step_mode']}")
        announce(f"READY {self.get_name()} env={self.p['env']} mode={self.p['step_mode']}")

    # ------------------------------------------------------------------ episodes
    def _start_episode(self) -> None:
        self.episode += 1
        obs, info = self.env.reset(seed=int(self.p["seed"]) + self.episode)
        self.obs, self.step_count, self.success = obs, 0, bool(info.get("is_success", False))
        self.refreshed = self.late_commands = 0
        self.ep_start = time.monotonic()
        self.twists.clear()
        self.grippers.clear()
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=f"episode {self.episode}")
        self.pub_reset.publish(header)
        self.pub_instr.publish(String(data=self.env.instruction))
        if self.reset_client is not None and self.reset_client.service_is_ready():
            # lockstep: the first observation goes out only after the policy server has reset, so the
            # reset can never race with it (the same order of events as the in-process runner); with
            # seed_policy the server first learns the episode's seed (same noise as in-process)
            self.waiting_reset = True
            if self.seed_client is not None and self.seed_client.service_is_ready():
                seed = int(self.p["seed"]) + self.episode
                value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=seed)
                future = self.seed_client.call_async(
                    SetParameters.Request(parameters=[ParameterMsg(name="episode_seed", value=value)]))
                future.add_done_callback(lambda _: self._call_reset())
            else:
                self._call_reset()
        else:
            self._publish_obs()

    def _call_reset(self) -> None:
        future = self.reset_client.call_async(Trigger.Request())
        future.add_done_callback(lambda _: self._after_reset())

    def _start_when_server_ready(self) -> None:
        if not self.reset_client.service_is_ready():
            return
        if self.seed_client is not None and not self.seed_client.service_is_ready():
            return
        self.destroy_timer(self._start_timer)
        self._start_episode()

    def _after_reset(self) -> None:
        self.waiting_reset = False
        self._publish_obs()

    def _end_episode(self) -> None:
        result = {"episode": self.episode, "seed": int(self.p["seed"]) + self.episode, "success": self.success,
                  "steps": self.step_count, "seconds": round(time.monotonic() - self.ep_start, 3),
                  "rejected_commands": self.rejected, "refreshed_stamps": self.refreshed,
                  "late_commands": self.late_commands}
        self.results.append(result)
        print("EPISODE " + json.dumps(result), flush=True)
        if self.p["results_path"]:
            with open(self.p["results_path"], "a") as f:
                f.write(json.dumps(result) + "\n")
        if self.p["episodes"] and self.episode + 1 >= int(self.p["episodes"]):
            self.finished = True
            announce(f"DONE {self.get_name()} episodes={len(self.results)} "
                     f"successes={sum(r['success'] for r in self.results)}")
            raise SystemExit(0)
        self._start_episode()

    def _step(self, action: np.ndarray) -> None:
        self.obs, _, terminated, truncated, info = self.env.step(action.astype(np.float32))
        self.step_count += 1
        self.success = self.success or bool(info.get("is_success", False))
        if terminated or truncated or self.step_count >= self.max_steps:
            self._end_episode()
        else:
            self._publish_obs()

    # ------------------------------------------------------------------ publishing
    def _publish_obs(self, fresh: bool = True) -> None:
        if fresh:
            self.stamp_ns = self.get_clock().now().nanoseconds
            self.first_publish = time.monotonic()
        stamp_ns = self.stamp_ns
        self.last_publish = time.monotonic()
        st = cv.to_stamp(stamp_ns)
        frame = self.p["frame_id"]
        if self.pub_keypoints is not None:  # first, so a guided policy server has them with the observation
            from embodied_steer.vls.keypoints import keypoints_for

            points = keypoints_for(self.env, extra_bodies=self.keypoint_bodies)[1]
            self.pub_keypoints.publish(keypoints_message(points.numpy(), st, frame))
        state = np.asarray(self.obs["state"], np.float64)
        qpos = self.env.unwrapped_robosuite.sim.data.qpos
        js = cv.values_message(list(qpos[self.arm_index]) + list(state[7:9]), self.arm_names + self.gripper_names, st)
        self.pub_joints.publish(js)
        self.pub_pose.publish(cv.array_to_pose(state[:7], st, frame))
        env_state = np.asarray(self.obs["env_state"], np.float64)
        self.pub_objects.publish(cv.values_message(env_state, [f"object_state_{i}" for i in range(env_state.size)],
                                                   st, frame))
        for cam, pub in self.pub_images.items():
            pub.publish(cv.array_to_image(self.obs["pixels"][cam], st, cam))

    def _maybe_republish(self) -> None:
        """Re-send the unanswered observation with the same stamp (a slow answer then still counts,
        and the policy server does not see a new step); after ``refresh_stamp_s`` without an answer
        use a fresh stamp, so a server that rejected the old stamp (e.g. after a hostile message with
        a later stamp) can answer again. The server takes a fresh stamp for a new step, so a refresh
        while its answer to the old stamp is in flight costs one action: keep ``refresh_stamp_s`` well
        above the slowest answer (it only matters for recovery)."""
        if self.waiting_reset or self.episode < 0:
            return
        now = time.monotonic()
        if now - self.last_publish >= float(self.p["republish_s"]):
            self.unanswered += 1
            fresh = now - self.first_publish >= float(self.p["refresh_stamp_s"])
            self.refreshed += int(fresh)
            self._publish_obs(fresh=fresh)

    # ------------------------------------------------------------------ commands
    def _on_twist(self, msg: TwistStamped) -> None:
        self.twists[cv.stamp_ns(msg.header.stamp)] = msg
        self._try_lockstep(cv.stamp_ns(msg.header.stamp))

    def _on_gripper(self, msg: JointState) -> None:
        self.grippers[cv.stamp_ns(msg.header.stamp)] = msg
        self._try_lockstep(cv.stamp_ns(msg.header.stamp))

    def _command(self, stamp: int) -> np.ndarray:
        try:
            action = cv.eef_msgs_to_action(self.twists[stamp], self.grippers[stamp], self.scale)
        except Exception as exc:  # noqa: BLE001 - a bad command becomes a zero-motion step
            self.rejected += 1
            self.get_logger().warning(f"rejected command: {exc}", throttle_duration_sec=1.0)
            action = np.zeros(7)
            action[6] = self.last_gripper
        action = np.clip(action, -1.0, 1.0)
        self.last_gripper = float(action[6])
        return action

    def _try_lockstep(self, stamp: int) -> None:
        if len(self.twists) > 100:
            self.twists = {k: v for k, v in self.twists.items() if k >= self.stamp_ns}
        if len(self.grippers) > 100:
            self.grippers = {k: v for k, v in self.grippers.items() if k >= self.stamp_ns}
        if self.p["step_mode"] != "lockstep" or self.finished or self.episode < 0 or self.waiting_reset:
            return
        if stamp != self.stamp_ns:
            if stamp < self.stamp_ns and stamp in self.twists and stamp in self.grippers and stamp > self.last_answered:
                self.late_commands += 1  # answers an observation already stepped past (or re-stamped)
            return
        if stamp not in self.twists or stamp not in self.grippers:
            return
        self.last_answered = stamp
        action = self._command(stamp)
        self.unanswered = 0
        self.twists.clear()
        self.grippers.clear()
        self._step(action)

    def _timer_step(self) -> None:
        if self.finished:
            return
        now = self.get_clock().now().nanoseconds
        common = sorted(set(self.twists) & set(self.grippers))
        if common and now - common[-1] <= self.p["command_timeout_s"] * 1e9:
            action = self._command(common[-1])
        else:  # no fresh command: stay where we are, keep the gripper as it was
            action = np.zeros(7)
            action[6] = self.last_gripper
        self.twists.clear()
        self.grippers.clear()
        self._step(action)

    def close(self) -> None:
        self.env.close()


def main(args: list[str] | None = None) -> int:
    return run_node(SimArm, args)
