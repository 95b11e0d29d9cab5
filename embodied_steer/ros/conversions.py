"""ROS 2 messages <-> toolkit types (:class:`Observation`, action arrays). Needs the message packages.

Topic contract (all names relative, so they follow the node's namespace and remappings):

=======================  ==================================  ==================================================
topic                    type                                meaning / units
=======================  ==================================  ==================================================
``joint_states``         ``sensor_msgs/JointState``          arm + gripper joints (rad, m); gripper fingers feed
                                                             the policy's state
``eef_pose``             ``geometry_msgs/PoseStamped``       end-effector pose (m; quaternion x, y, z, w)
``object_state``         ``sensor_msgs/JointState``          privileged object state (simulation only):
                                                             ``name`` = component names, ``position`` = values
                                                             (robosuite ``object-state``: m, quaternion xyzw)
``camera/<cam>/image_raw`` ``sensor_msgs/Image``             rgb8 / bgr8 / mono8 / rgba8 / bgra8
``camera/<cam>/image_raw/compressed`` ``sensor_msgs/CompressedImage``  jpeg / png
``instruction``          ``std_msgs/String``                 language instruction
``eef_command``          ``geometry_msgs/TwistStamped``      end-effector velocity (m/s, rad/s, axis-angle rate)
``gripper_command``      ``sensor_msgs/JointState``          ``name=["gripper"]``, ``position=[-1 open … +1 close]``
``joint_trajectory``     ``trajectory_msgs/JointTrajectory`` action chunk of a joint-space policy
=======================  ==================================  ==================================================

An OSC_POSE delta action ``a`` (normalised, one control step) maps to a twist by
``v = a[:3] * max_linear_step_m * control_hz`` (m/s) and ``w = a[3:6] * max_angular_step_rad *
control_hz`` (rad/s); a commanded twist is meant to be applied for one control period ``1 /
control_hz`` s. The command's header stamp is the stamp of the observation it answers (hold commands
carry the time they were sent).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import CompressedImage, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from embodied_steer.core.types import Observation
from embodied_steer.ros.safety import UnsafeInput, require_finite

MAX_IMAGE_PIXELS = 4096 * 4096


def stamp_ns(stamp: Time) -> int:
    """A ``builtin_interfaces/Time`` as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def to_stamp(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def to_duration(seconds: float) -> Duration:
    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# ------------------------------------------------------------------------------ images
_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


def image_to_array(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``uint8 (H, W, 3)`` RGB; :class:`UnsafeInput` when malformed."""
    enc = msg.encoding.lower()
    if enc not in _CHANNELS:
        raise UnsafeInput(f"image encoding '{msg.encoding}' not supported (use one of {sorted(_CHANNELS)})")
    h, w, c = int(msg.height), int(msg.width), _CHANNELS[enc]
    if h <= 0 or w <= 0 or h * w > MAX_IMAGE_PIXELS:
        raise UnsafeInput(f"image size {h}x{w} out of range")
    if int(msg.step) < w * c:
        raise UnsafeInput(f"image step {msg.step} < width*channels {w * c}")
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size != int(msg.step) * h:
        raise UnsafeInput(f"image data has {data.size} bytes, expected step*height = {int(msg.step) * h}")
    img = data.reshape(h, int(msg.step))[:, : w * c].reshape(h, w, c)
    if enc == "mono8":
        img = np.repeat(img, 3, axis=2)
    elif enc in ("bgr8", "bgra8"):
        img = img[:, :, 2::-1]
    else:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


def compressed_to_array(msg: CompressedImage) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg / png) -> ``uint8 (H, W, 3)`` RGB."""
    from PIL import Image as PILImage

    fmt = msg.format.lower()
    if not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise UnsafeInput(f"compressed image format '{msg.format}' not supported (jpeg, png)")
    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as pil:
            if pil.width * pil.height > MAX_IMAGE_PIXELS:
                raise UnsafeInput(f"compressed image {pil.width}x{pil.height} too large")
            return np.asarray(pil.convert("RGB"), dtype=np.uint8).copy()
    except UnsafeInput:
        raise
    except Exception as exc:  # PIL raises many types on garbage
        raise UnsafeInput(f"cannot decode compressed image: {type(exc).__name__}: {exc}") from None


def array_to_image(img: np.ndarray, stamp: Time, frame_id: str = "") -> Image:
    """``uint8 (H, W, 3)`` RGB -> ``sensor_msgs/Image`` (rgb8)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    msg = Image(height=img.shape[0], width=img.shape[1], encoding="rgb8", is_bigendian=0, step=img.shape[1] * 3)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.data = img.tobytes()
    return msg


# ------------------------------------------------------------------------------ state
def pose_to_array(msg: PoseStamped) -> np.ndarray:
    """``PoseStamped`` -> ``(7,)`` [x, y, z (m), qx, qy, qz, qw]; rejects NaN and non-unit quaternions."""
    p, q = msg.pose.position, msg.pose.orientation
    arr = require_finite(np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w]), "eef_pose")
    norm = float(np.linalg.norm(arr[3:]))
    if abs(norm - 1.0) > 1e-2:
        raise UnsafeInput(f"eef_pose orientation is not a unit quaternion (norm {norm:.4f})")
    return arr


def array_to_pose(values: Sequence[float], stamp: Time, frame_id: str = "world") -> PoseStamped:
    v = [float(x) for x in values]
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = v[:3]
    (msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z, msg.pose.orientation.w) = v[3:7]
    return msg


def joint_positions(msg: JointState, names: Sequence[str], what: str = "joint_states") -> np.ndarray:
    """Positions of ``names`` (any order in the message) as float64; rejects missing names,
    duplicated names, a ``position`` array whose length differs from ``name``, NaN / inf."""
    if len(msg.position) != len(msg.name):
        raise UnsafeInput(f"{what}: {len(msg.name)} names but {len(msg.position)} positions")
    if len(set(msg.name)) != len(msg.name):
        raise UnsafeInput(f"{what}: duplicated joint names")
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise UnsafeInput(f"{what}: missing joints {missing}")
    pos = np.asarray(msg.position, dtype=np.float64)
    return require_finite(pos[[index[n] for n in names]], what)


def values_message(values: Iterable[float], names: Sequence[str], stamp: Time, frame_id: str = "") -> JointState:
    """A ``JointState`` carrying named values in ``position`` (used for object state and gripper)."""
    msg = JointState()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.name = list(names)
    msg.position = [float(v) for v in values]
    return msg


# ------------------------------------------------------------------------------ commands
@dataclass(frozen=True)
class EefScale:
    """How normalised OSC deltas map to SI velocities (see module docstring)."""

    max_linear_step_m: float = 0.05
    max_angular_step_rad: float = 0.5
    control_hz: float = 20.0


def action_to_eef_msgs(action: np.ndarray, stamp: Time, scale: EefScale, frame_id: str = "world"
                       ) -> tuple[TwistStamped, JointState]:
    """Normalised ``(7,)`` action -> (``TwistStamped`` in m/s, rad/s; gripper ``JointState``)."""
    a = np.asarray(action, dtype=np.float64)
    lin = a[:3] * scale.max_linear_step_m * scale.control_hz
    ang = a[3:6] * scale.max_angular_step_rad * scale.control_hz
    twist = TwistStamped()
    twist.header.stamp = stamp
    twist.header.frame_id = frame_id
    twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z = (float(x) for x in lin)
    twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z = (float(x) for x in ang)
    return twist, values_message([a[6]], ["gripper"], stamp, frame_id)


def eef_msgs_to_action(twist: TwistStamped, gripper: JointState, scale: EefScale) -> np.ndarray:
    """Inverse of :func:`action_to_eef_msgs`; rejects NaN and malformed gripper messages."""
    t = twist.twist
    lin = np.array([t.linear.x, t.linear.y, t.linear.z]) / (scale.max_linear_step_m * scale.control_hz)
    ang = np.array([t.angular.x, t.angular.y, t.angular.z]) / (scale.max_angular_step_rad * scale.control_hz)
    grip = joint_positions(gripper, ["gripper"], "gripper_command")
    return require_finite(np.concatenate([lin, ang, grip]), "eef command")


def chunk_to_trajectory(actions: np.ndarray, names: Sequence[str], dt: float, stamp: Time,
                        frame_id: str = "") -> JointTrajectory:
    """``(T, D)`` chunk -> ``JointTrajectory`` (point k at ``(k + 1) * dt`` s after the stamp)."""
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or actions.shape[1] != len(names):
        raise UnsafeInput(f"chunk shape {actions.shape} does not match {len(names)} joint names")
    msg = JointTrajectory()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.joint_names = list(names)
    for k, row in enumerate(actions):
        msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in row],
                                               time_from_start=to_duration((k + 1) * dt)))
    return msg


def trajectory_to_chunk(msg: JointTrajectory, names: Sequence[str]) -> np.ndarray:
    """``JointTrajectory`` -> ``(T, len(names))`` positions, reordered to ``names``; validated."""
    if sorted(msg.joint_names) != sorted(names) or len(set(msg.joint_names)) != len(msg.joint_names):
        raise UnsafeInput(f"trajectory joints {list(msg.joint_names)} != expected {list(names)}")
    order = [list(msg.joint_names).index(n) for n in names]
    rows = []
    for k, pt in enumerate(msg.points):
        if len(pt.positions) != len(names):
            raise UnsafeInput(f"trajectory point {k} has {len(pt.positions)} positions, expected {len(names)}")
        rows.append(np.asarray(pt.positions, dtype=np.float64)[order])
    if not rows:
        raise UnsafeInput("trajectory has no points")
    return require_finite(np.stack(rows), "trajectory")


# ------------------------------------------------------------------------------ observations
class ObservationAssembler:
    """Collect the latest message of every observation topic and build synchronised observations.

    An observation is complete when every required topic has a message and their stamps lie within
    ``slop_ns`` of each other (0: identical stamps, as the simulated arm publishes them). Images and
    the instruction are optional extras. State layout: eef position (3), eef quaternion xyzw (4),
    then ``gripper_joints`` positions.
    """

    def __init__(self, gripper_joints: Sequence[str], env_state_dim: int | None, cameras: Sequence[str] = (),
                 slop_ns: int = 0, instruction: str = "") -> None:
        self.gripper_joints = tuple(gripper_joints)
        self.env_state_dim = env_state_dim
        self.cameras = tuple(cameras)
        self.slop_ns = int(slop_ns)
        self.instruction = instruction
        self.pose: tuple[int, np.ndarray] | None = None
        self.gripper: tuple[int, np.ndarray] | None = None
        self.env_state: tuple[int, np.ndarray] | None = None
        self.images: dict[str, tuple[int, np.ndarray]] = {}

    def clear(self) -> None:
        """Forget every stored message (a new episode must not be answered with the last one's data);
        the instruction stays."""
        self.pose = self.gripper = self.env_state = None
        self.images = {}

    def set_pose(self, msg: PoseStamped) -> None:
        self.pose = (stamp_ns(msg.header.stamp), pose_to_array(msg))

    def set_joint_states(self, msg: JointState) -> None:
        self.gripper = (stamp_ns(msg.header.stamp), joint_positions(msg, self.gripper_joints))

    def set_object_state(self, msg: JointState) -> None:
        if len(msg.position) != len(msg.name):
            raise UnsafeInput(f"object_state: {len(msg.name)} names but {len(msg.position)} values")
        values = require_finite(np.asarray(msg.position, dtype=np.float64), "object_state")
        if self.env_state_dim is not None and values.shape[0] != self.env_state_dim:
            raise UnsafeInput(f"object_state has {values.shape[0]} values, the policy needs {self.env_state_dim}")
        self.env_state = (stamp_ns(msg.header.stamp), values)

    def set_image(self, camera: str, stamp: int, img: np.ndarray) -> None:
        self.images[camera] = (stamp, img)

    def latest_stamp(self) -> int | None:
        parts = self._parts()
        if parts is None:
            return None
        stamps = [s for s, _ in parts.values()]
        if max(stamps) - min(stamps) > self.slop_ns:
            return None
        return max(stamps)

    def _parts(self) -> Mapping[str, tuple[int, np.ndarray]] | None:
        parts: dict[str, tuple[int, np.ndarray]] = {}
        if self.pose is None or self.gripper is None:
            return None
        parts["pose"], parts["gripper"] = self.pose, self.gripper
        if self.env_state_dim:
            if self.env_state is None:
                return None
            parts["env_state"] = self.env_state
        for cam in self.cameras:
            if cam not in self.images:
                return None
            parts["cam:" + cam] = self.images[cam]
        return parts

    def build(self, timestamp: float) -> Observation | None:
        """The synchronised :class:`Observation`, or ``None`` when not complete / not in sync."""
        if self.latest_stamp() is None:
            return None
        state = np.concatenate([self.pose[1], self.gripper[1]]).astype(np.float32)
        env_state = self.env_state[1].astype(np.float32) if self.env_state_dim else None
        return Observation(images={c: self.images[c][1] for c in self.cameras}, state=state,
                           instruction=self.instruction, env_state=env_state, timestamp=timestamp).validate()
