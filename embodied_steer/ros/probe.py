"""Measurement and fuzzing node for tests and benchmarks (``python -m embodied_steer.ros.probe``).

Modes (``--mode``):

``latency``   wait for ``--count`` commands that answer an observation; latency = receive time of
              the command (``eef_command``) − stamp of the observation it answers (the simulated arm
              stamps observations when it publishes them; same machine clock).
``watchdog``  print ``WATCHING`` after ``--count`` commands; the supervisor then stops the arm
              (SIGSTOP); report the time from the last observation to the first hold command.
``estop``     engage the e-stop on the ``estop`` topic, check that only hold (zero-motion) commands
              follow, release it with the ``<server>/estop`` service and wait for motion again.
``lifecycle`` through the server's lifecycle services: check it is active, deactivate it (no motion
              commands may follow), activate it again and wait for motion.
``steer``     set ``intervention.noise_scale`` to 0 (accepted), to -1 (refused), switch steering off and on
              with ``<server>/set_steering``, and check that commanding goes on.
``assist``    wait for ``--count`` estimates of the assistance monitor (``assist/recommendation``,
              ``assist/entropy``, its ``diagnostics``) and report what they contained.
``steering``  through the ``steering_control`` node: select a preset (applied), an invalid setting
              (refused by the server, previous settings kept), an unknown preset and malformed JSON
              (refused by the node); check that commanding goes on.
``fuzz``      publish ``--count`` malformed / hostile messages (NaN, wrong sizes, names and encodings,
              out-of-order and future stamps, absurd poses) on the observation and command topics while
              checking every command of the policy server against the safety limits.

The result is printed as one ``RESULT {json}`` line. Fuzz messages are paced (``--rate``, Hz).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np


def limit_args(param_file: str, node: str = "policy_server") -> list[str]:
    """The probe's safety-limit arguments matching a policy server's parameter file (so a check uses
    exactly the limits the server was started with)."""
    import yaml

    with open(param_file) as f:
        params = yaml.safe_load(f)[f"/{node}"]["ros__parameters"]
    args: list[str] = []
    for key in ("workspace_low", "workspace_high"):
        if key in params:
            args += [f"--{key.replace('_', '-')}", *(str(float(v)) for v in params[key])]
    for key in ("max_linear_speed", "max_angular_speed", "control_rate_hz"):
        if key in params:
            flag = "--control-hz" if key == "control_rate_hz" else f"--{key.replace('_', '-')}"
            args += [flag, str(float(params[key]))]
    return args


def main(argv: list[str] | None = None) -> int:
    from embodied_steer.ros.bootstrap import ensure_ros_environment

    ensure_ros_environment()
    import rclpy
    from geometry_msgs.msg import PoseArray, PoseStamped, TwistStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Bool, String
    from std_srvs.srv import SetBool

    from embodied_steer.ros import conversions as cv
    from embodied_steer.ros.node_utils import announce
    from embodied_steer.ros.safety import EefLimits, SafetyFilter

    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["latency", "watchdog", "fuzz", "estop", "lifecycle", "steer", "assist", "steering"], required=True)
    ap.add_argument("--server", default="policy_server", help="policy server node name (for its services)")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workspace-low", type=float, nargs=3, default=[-0.5, -0.5, 0.80])
    ap.add_argument("--workspace-high", type=float, nargs=3, default=[0.5, 0.5, 1.40])
    ap.add_argument("--max-linear-speed", type=float, default=1.0)
    ap.add_argument("--max-angular-speed", type=float, default=10.0)
    ap.add_argument("--control-hz", type=float, default=20.0)
    args, _ = ap.parse_known_args(argv)

    rclpy.init()
    node = rclpy.create_node("probe")
    checker = SafetyFilter(EefLimits(workspace_low=args.workspace_low, workspace_high=args.workspace_high,
                                     max_linear_speed=args.max_linear_speed,
                                     max_angular_speed=args.max_angular_speed, control_hz=args.control_hz))
    scale = cv.EefScale(control_hz=args.control_hz)
    own: set[int] = set()  # stamps of messages this probe sent (not the arm's)
    poses: dict[int, np.ndarray] = {}
    obs_recv: dict[int, float] = {}
    state = {"last_obs": None, "hold_at": None, "commands": 0, "unsafe": 0, "nonfinite": 0, "checked": 0,
             "latencies": [], "unmatched": 0, "examples": [], "pending": []}

    def on_pose(msg: PoseStamped) -> None:
        st = cv.stamp_ns(msg.header.stamp)
        if st in own:
            return
        p = msg.pose.position
        if not all(math.isfinite(v) for v in (p.x, p.y, p.z)):
            return
        poses[st] = np.array([p.x, p.y, p.z])
        obs_recv[st] = time.monotonic()
        state["last_obs"] = time.monotonic()
        if len(poses) > 5000:
            for k in sorted(poses)[:1000]:
                poses.pop(k, None)

    def on_twist(msg: TwistStamped) -> None:
        now_wall = time.time_ns()
        st = cv.stamp_ns(msg.header.stamp)
        if st in own:
            return
        state["commands"] += 1
        t = msg.twist
        vals = [t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z]
        if not all(math.isfinite(v) for v in vals):
            state["nonfinite"] += 1
            state["unsafe"] += 1
            return
        a = np.r_[np.array(vals[:3]) / (scale.max_linear_step_m * scale.control_hz),
                  np.array(vals[3:]) / (scale.max_angular_step_rad * scale.control_hz), 0.0]
        pos = poses.get(st)
        if pos is not None:
            state["latencies"].append((now_wall - st) / 1e9)
        elif state["last_obs"] is not None and state["hold_at"] is None and not np.any(a[:6]):
            state["hold_at"] = time.monotonic()
        if pos is None and np.any(a[:3]):
            state["pending"].append((st, a))  # its observation may arrive after it: check at the end
            return
        state["checked"] += 1
        if not checker.is_safe_eef(a, pos):
            state["unsafe"] += 1
            if len(state["examples"]) < 5:
                state["examples"].append({"action": a.round(4).tolist(), "stamp": st,
                                          "poses_near": {k: v.round(4).tolist() for k, v in poses.items()
                                                         if abs(k - st) < 2e8},
                                          "pos": None if pos is None else pos.round(4).tolist()})

    node.create_subscription(PoseStamped, "eef_pose", on_pose, 1000)  # deep queues: a slow probe loses nothing
    node.create_subscription(TwistStamped, "eef_command", on_twist, 1000)
    pubs = {
        "pose": node.create_publisher(PoseStamped, "eef_pose", 10),
        "joints": node.create_publisher(JointState, "joint_states", 10),
        "objects": node.create_publisher(JointState, "object_state", 10),
        "image": node.create_publisher(Image, "camera/agentview/image_raw", 10),
        "compressed": node.create_publisher(CompressedImage, "camera/agentview/image_raw/compressed", 10),
        "instruction": node.create_publisher(String, "instruction", 10),
        "twist": node.create_publisher(TwistStamped, "eef_command", 10),
        "estop": node.create_publisher(Bool, "estop", 10),
        "gripper": node.create_publisher(JointState, "gripper_command", 10),
        "keypoints": node.create_publisher(PoseArray, "keypoints", 10),
        "description": node.create_publisher(String, "arm_description", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)),
    }
    rng = np.random.default_rng(args.seed)
    result: dict[str, object] = {"mode": args.mode}
    deadline = time.monotonic() + args.timeout

    def spin_until(cond) -> bool:
        while time.monotonic() < deadline:
            if cond():
                return True
            rclpy.spin_once(node, timeout_sec=0.02)
        return cond()

    def call(client, request):
        """Call a service and spin until it answers (``None`` when the deadline passes first)."""
        fut = client.call_async(request)
        spin_until(lambda: fut.done())
        return fut.result()

    try:
        # Discovery of each remote participant takes ~0.1 s or ~2.2 s: wait until both the arm's
        # observations and the server's commands arrive, then forget what came before (commands
        # whose observation this probe could not see yet).
        warm = spin_until(lambda: len(state["latencies"]) >= 5)
        state.update(commands=0, unsafe=0, nonfinite=0, checked=0, latencies=[], unmatched=0, examples=[],
                     pending=[])
        result["discovered"] = warm
        if args.mode == "latency":
            ok = spin_until(lambda: len(state["latencies"]) >= args.count)
            lat = np.array(state["latencies"]) * 1e3
            result.update(ok=ok, n=int(lat.size), p50_ms=float(np.percentile(lat, 50)) if lat.size else None,
                          p99_ms=float(np.percentile(lat, 99)) if lat.size else None,
                          max_ms=float(lat.max()) if lat.size else None, latencies_ms=lat.round(3).tolist(),
                          commands_checked=state["checked"], unsafe=state["unsafe"], unsafe_examples=state["examples"])
        elif args.mode == "watchdog":
            ok = spin_until(lambda: state["commands"] >= args.count)
            state["hold_at"] = None
            announce("WATCHING")
            stop_time = time.monotonic()
            ok = spin_until(lambda: state["hold_at"] is not None) and ok
            last = state["last_obs"]
            result.update(ok=ok, reaction_s=(state["hold_at"] - last) if ok and last else None,
                          since_watching_s=(state["hold_at"] - stop_time) if ok else None)
        elif args.mode == "estop":
            ok = spin_until(lambda: state["commands"] >= 10)
            motion: list[int] = []

            def on_motion(msg: TwistStamped) -> None:
                t = msg.twist
                motion.append(int(any(v != 0.0 for v in (t.linear.x, t.linear.y, t.linear.z,
                                                          t.angular.x, t.angular.y, t.angular.z))))
            engaged_at = time.monotonic()
            pubs["estop"].publish(Bool(data=True))
            spin_until(lambda: time.monotonic() - engaged_at > 0.3)  # commands in flight may still arrive
            node.create_subscription(TwistStamped, "eef_command", on_motion, 50)
            ok = spin_until(lambda: len(motion) >= 10) and ok
            during = list(motion)
            client = node.create_client(SetBool, f"{args.server}/estop")
            ok = spin_until(lambda: client.service_is_ready()) and ok
            future = client.call_async(SetBool.Request(data=False))
            ok = spin_until(lambda: future.done()) and ok
            motion.clear()
            resumed = spin_until(lambda: sum(motion) >= 3)
            result.update(ok=ok and resumed, holds_seen=len(during), motion_during_estop=int(sum(during)),
                          released=bool(future.done() and future.result().success), resumed=resumed)
        elif args.mode == "steer":
            from rcl_interfaces.msg import Parameter as ParamMsg
            from rcl_interfaces.msg import ParameterType, ParameterValue
            from rcl_interfaces.srv import SetParameters

            ok = spin_until(lambda: state["commands"] >= 5)
            setp = node.create_client(SetParameters, f"{args.server}/set_parameters")
            steer = node.create_client(SetBool, f"{args.server}/set_steering")
            ok = spin_until(lambda: setp.service_is_ready() and steer.service_is_ready()) and ok

            def set_scale(v: float) -> bool:
                value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
                res = call(setp, SetParameters.Request(parameters=[ParamMsg(name="intervention.noise_scale",
                                                                           value=value)]))
                return bool(res.results[0].successful)

            accepted, refused = set_scale(0.0), not set_scale(-1.0)
            before = state["commands"]
            more = spin_until(lambda: state["commands"] >= before + 20)
            off = call(steer, SetBool.Request(data=False)).success
            before = state["commands"]
            more = spin_until(lambda: state["commands"] >= before + 20) and more
            on = call(steer, SetBool.Request(data=True)).success
            result.update(ok=ok and more, zero_scale_accepted=accepted, negative_refused=refused,
                          steering_off=bool(off), steering_on=bool(on), commanding=more)
        elif args.mode == "assist":
            from diagnostic_msgs.msg import DiagnosticArray
            from std_msgs.msg import Float32

            recs: list[dict] = []
            entropies: list[float] = []
            diags: list[tuple[str, int, str]] = []
            node.create_subscription(String, "assist/recommendation", lambda m: recs.append(json.loads(m.data)), 50)
            node.create_subscription(Float32, "assist/entropy", lambda m: entropies.append(float(m.data)), 50)
            node.create_subscription(
                DiagnosticArray, "diagnostics",
                lambda m: diags.extend((st.name, int.from_bytes(st.level, "little") if isinstance(st.level, bytes)
                                        else int(st.level), st.message) for st in m.status), 50)
            ok = spin_until(lambda: len(recs) >= args.count and len(entropies) >= args.count)
            mine = [d for d in diags if d[0].startswith("assist_monitor")]
            result.update(ok=ok, n=len(recs), entropies=entropies[: args.count],
                          recommended=[r["recommended"] for r in recs], statuses=sorted({r["status"] for r in recs}),
                          keys=sorted(recs[0]) if recs else [], stamps_increasing=all(
                              a["stamp_ns"] < b["stamp_ns"] for a, b in zip(recs, recs[1:])),
                          diagnostics=mine[-5:], sample_ms=[r["sample_ms"] for r in recs])
        elif args.mode == "steering":
            from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

            states: list[dict] = []
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
            from diagnostic_msgs.msg import DiagnosticArray

            node.create_subscription(String, "steering/state", lambda m: states.append(json.loads(m.data)), qos)
            counters: dict[str, int] = {}

            def on_diagnostics(msg) -> None:
                for st in msg.status:
                    if st.name.startswith(f"{args.server}:"):
                        counters.update({kv.key: int(kv.value) for kv in st.values if kv.value.isdigit()})

            node.create_subscription(DiagnosticArray, "diagnostics", on_diagnostics, 50)
            select = node.create_publisher(String, "steering/select", 10)
            ok = spin_until(lambda: state["commands"] >= 5 and select.get_subscription_count() > 0)
            answers: dict[str, dict] = {}
            effects: dict[str, int] = {}
            hostile_program = json.dumps({"guide": {"program_source": "import os\ndef stage_1(keypoints, trajectory):\n"
                                                                      "    return os.system('true')\n"}})
            for label, text, counter in (
                    ("preset", "focused", None), ("invalid", '{"noise_scale": -1.0}', None),
                    ("unknown", "no_such_preset", None), ("malformed", "{not json", None),
                    ("adapted", "adapted", "dsrl_chunks"), ("bad_adapter", '{"dsrl": "/no/such/adapter"}', None),
                    ("guided", "guided", "guided_chunks"), ("hostile_program", hostile_program, None),
                    ("untouched", "untouched", None)):
                seen = len(states)
                select.publish(String(data=text))
                ok = spin_until(lambda: len(states) > seen) and ok
                answers[label] = states[-1] if len(states) > seen else {}
                if counter is not None and answers[label].get("applied"):
                    # applied from the next chunk: the server's diagnostics must count chunks of that kind
                    start = counters.get(counter, 0)
                    effects[label] = int(spin_until(lambda: counters.get(counter, 0) >= start + 2)) and (
                        counters.get(counter, 0) - start)
            before = state["commands"]
            more = spin_until(lambda: state["commands"] >= before + 20)
            result.update(ok=ok and more, answers=answers, commanding=more, effects=effects,
                          counters=dict(counters))
        elif args.mode == "lifecycle":
            from lifecycle_msgs.msg import Transition
            from lifecycle_msgs.srv import ChangeState, GetState

            ok = spin_until(lambda: state["commands"] >= 10)
            get = node.create_client(GetState, f"{args.server}/get_state")
            change = node.create_client(ChangeState, f"{args.server}/change_state")
            ok = spin_until(lambda: get.service_is_ready() and change.service_is_ready()) and ok

            states = [call(get, GetState.Request()).current_state.label]
            done = call(change, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
            states.append(call(get, GetState.Request()).current_state.label)
            motion: list[int] = []

            def on_motion(msg: TwistStamped) -> None:
                t = msg.twist
                motion.append(int(any(v != 0.0 for v in (t.linear.x, t.linear.y, t.linear.z))))
            node.create_subscription(TwistStamped, "eef_command", on_motion, 50)
            quiet_until = time.monotonic() + 1.0
            spin_until(lambda: time.monotonic() > quiet_until)
            motion_inactive = int(sum(motion))
            again = call(change, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE)))
            states.append(call(get, GetState.Request()).current_state.label)
            motion.clear()
            resumed = spin_until(lambda: sum(motion) >= 3)
            result.update(ok=ok and bool(done.success) and bool(again.success) and resumed, states=states,
                          motion_while_inactive=motion_inactive, resumed=resumed)
        else:
            spin_until(lambda: state["commands"] >= 5)
            kinds = _hostile_kinds()
            sent: dict[str, int] = {}
            period = 1.0 / args.rate
            for i in range(args.count):
                kind = kinds[i % len(kinds)]
                latest = max(poses) if poses else time.time_ns()
                topic, msg, stamp = _hostile(kind, rng, latest, cv)
                if stamp is not None:
                    own.add(stamp)
                pubs[topic].publish(msg)
                sent[kind] = sent.get(kind, 0) + 1
                t_end = time.monotonic() + period
                while time.monotonic() < t_end:
                    rclpy.spin_once(node, timeout_sec=max(0.0, t_end - time.monotonic()))
            before = state["commands"]
            alive = spin_until(lambda: state["commands"] >= before + 20)
            result.update(ok=alive, sent=int(sum(sent.values())), kinds=sent, commands_checked=state["checked"],
                          unsafe=state["unsafe"], nonfinite=state["nonfinite"], unmatched_motion=state["unmatched"],
                          loop_alive_after=alive, unsafe_examples=state["examples"])
        for st, a in state["pending"]:  # late-matched commands
            pos = poses.get(st)
            if pos is None:
                state["unmatched"] += 1  # answers an observation this probe never saw: not verifiable
            else:
                state["checked"] += 1
                state["unsafe"] += int(not checker.is_safe_eef(a, pos))
        result.update(commands_checked=state["checked"], unsafe=state["unsafe"],
                      unmatched_motion=state["unmatched"])
    finally:
        announce("RESULT " + json.dumps(result))
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _hostile_kinds() -> list[str]:
    return ["js_nan", "js_names", "js_count", "js_old", "js_future", "js_empty", "pose_nan", "pose_quat",
            "pose_absurd", "pose_old", "obj_size", "obj_nan", "obj_count", "img_encoding", "img_size",
            "img_huge", "compressed_garbage", "instruction_huge", "twist_nan", "gripper_bad", "pose_inf_sameinst",
            "kp_nan", "kp_count", "kp_empty", "kp_far", "kp_old", "desc_garbage", "desc_missing"]


def _hostile(kind: str, rng, latest_ns: int, cv):
    """One hostile message: (publisher key, message, stamp or None)."""
    from geometry_msgs.msg import PoseStamped, TwistStamped
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import String

    now = time.time_ns()
    stamp = latest_ns + 1 + int(rng.integers(0, 1000))  # close to the arm's stamps: maximally confusing
    st = cv.to_stamp(stamp)
    grip = ["gripper0_finger_joint1", "gripper0_finger_joint2"]
    if kind == "js_nan":
        return "joints", cv.values_message([float("nan"), 0.01], grip, st), stamp
    if kind == "js_names":
        return "joints", cv.values_message([0.01, 0.01], ["elbow", "wrist"], st), stamp
    if kind == "js_count":
        m = cv.values_message([0.01, 0.01, 0.3], grip, st)
        return "joints", m, stamp
    if kind == "js_old":
        return "joints", cv.values_message([0.02, -0.02], grip, cv.to_stamp(latest_ns - 10**9)), latest_ns - 10**9
    if kind == "js_future":
        s = now + 3600 * 10**9
        return "joints", cv.values_message([0.02, -0.02], grip, cv.to_stamp(s)), s
    if kind == "js_empty":
        return "joints", cv.values_message([], [], st), stamp
    if kind == "pose_nan":
        return "pose", cv.array_to_pose([float("nan"), 0, 1, 0, 0, 0, 1], st), stamp
    if kind == "pose_quat":
        return "pose", cv.array_to_pose([0, 0, 1, 0, 0, 0, 5], st), stamp
    if kind == "pose_absurd":  # well-formed but far outside the workspace, same-ish stamp
        return "pose", cv.array_to_pose([rng.uniform(-1e3, 1e3), 1e3, -1e3, 0, 0, 0, 1], st), stamp
    if kind == "pose_old":
        return "pose", cv.array_to_pose([0, 0, 1, 0, 0, 0, 1], cv.to_stamp(1)), 1
    if kind == "obj_size":
        return "objects", cv.values_message(rng.normal(size=3), ["a", "b", "c"], st), stamp
    if kind == "obj_nan":
        vals = rng.normal(size=10)
        vals[int(rng.integers(10))] = float("inf")
        return "objects", cv.values_message(vals, [f"object_state_{i}" for i in range(10)], st), stamp
    if kind == "obj_count":
        m = cv.values_message(rng.normal(size=10), ["x"], st)
        return "objects", m, stamp
    if kind == "img_encoding":
        m = Image(height=4, width=4, encoding="yuv422", step=8, data=bytes(32))
        m.header.stamp = st
        return "image", m, stamp
    if kind == "img_size":
        m = Image(height=64, width=64, encoding="rgb8", step=192, data=bytes(100))
        m.header.stamp = st
        return "image", m, stamp
    if kind == "img_huge":
        m = Image(height=100000, width=100000, encoding="rgb8", step=300000, data=bytes(10))
        m.header.stamp = st
        return "image", m, stamp
    if kind == "compressed_garbage":
        m = CompressedImage(format="jpeg", data=bytes(rng.integers(0, 256, 256, dtype=np.uint8)))
        m.header.stamp = st
        return "compressed", m, stamp
    if kind == "instruction_huge":
        return "instruction", String(data="x" * 20000 + "\x00"), None
    if kind == "twist_nan":
        m = TwistStamped()
        m.header.stamp = st
        m.twist.linear.x = float("nan")
        m.twist.angular.z = float("inf")
        return "twist", m, stamp
    if kind == "gripper_bad":
        return "gripper", cv.values_message([float("nan"), 3.0], ["gripper", "gripper"], st), stamp
    if kind.startswith("kp_"):
        from geometry_msgs.msg import PoseArray

        from embodied_steer.ros.scene import keypoints_message

        points = {"kp_nan": [[float("nan"), 0, 1], [0, 0, 0.8]], "kp_count": rng.normal(size=(5, 3)),
                  "kp_empty": np.zeros((0, 3)), "kp_far": [[1e4, 0, 1], [0, 0, 0.8]],
                  "kp_old": [[0, 0, 1], [0, 0, 0.8]]}[kind]
        kp_stamp = cv.to_stamp(1) if kind == "kp_old" else st
        msg = keypoints_message(np.asarray(points, dtype=np.float64), kp_stamp, "world") if len(points) else PoseArray()
        return "keypoints", msg, None
    if kind == "desc_garbage":
        return "description", String(data="{not json" + "x" * int(rng.integers(0, 100))), None
    if kind == "desc_missing":
        return "description", String(data=json.dumps({"task": "Lift", "control_hz": -1})), None
    if kind == "pose_inf_sameinst":
        m = PoseStamped()
        m.header.stamp = cv.to_stamp(latest_ns)  # exactly the arm's latest stamp
        m.pose.position.x = float("inf")
        m.pose.orientation.w = 1.0
        return "pose", m, None
    raise ValueError(kind)


if __name__ == "__main__":
    raise SystemExit(main())
