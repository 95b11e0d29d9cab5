"""Observation inputs shared by the nodes that run a policy (policy server, assistance monitor).

:class:`ObservationInputs` subscribes to the observation topics of :mod:`embodied_steer.ros.conversions`
(``eef_pose``, ``joint_states``, ``object_state``, ``camera/<cam>/image_raw[/compressed]``,
``instruction``, ``episode_reset``), validates every message (stamp order, stamps from the future,
shapes, NaN) and feeds the valid ones into an :class:`~embodied_steer.ros.conversions.ObservationAssembler`.
A malformed message is rejected — counted, reported through ``on_reject`` and logged (throttled) —
never raised into the executor, so no input can crash a node.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Header, String

from embodied_steer.ros import conversions as cv
from embodied_steer.ros.safety import StampOrder, UnsafeInput

SENSOR_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
MAX_INSTRUCTION_CHARS = 10_000


class ObservationInputs:
    """Subscriptions + validation for one node; see the module docstring.

    Args:
        node: the node that owns the subscriptions.
        assembler: receives every valid message.
        max_future_stamp_s: stamps further than this in the future (node clock) are rejected.
        on_observation: called after every valid message once the assembler has a complete observation
            (e.g. to feed a watchdog).
        on_reset: called for an ``episode_reset`` message newer than the last reset, with its stamp (ns).
        on_joint_states: extra handler for valid ``joint_states`` messages (e.g. measured arm joints).
    """

    def __init__(self, node: Node, assembler: cv.ObservationAssembler, *, max_future_stamp_s: float,
                 on_observation: Callable[[], None] | None = None,
                 on_reset: Callable[[int], None] | None = None,
                 on_joint_states: Callable[[JointState], None] | None = None) -> None:
        self.node = node
        self.assembler = assembler
        self.max_future_ns = int(max_future_stamp_s * 1e9)
        self.on_observation = on_observation
        self.on_reset = on_reset
        self.on_joint_states = on_joint_states
        self.order = StampOrder()
        self.rejected = 0
        self.last_reject = ""
        self.ignore_before_ns = 0
        self.last_reset_ns = 0
        self.subscriptions: list[Any] = []

    def subscribe(self, cameras: Sequence[str]) -> None:
        """Create the subscriptions (object state only when the assembler needs it)."""
        sub = self.node.create_subscription
        a = self.assembler
        self.subscriptions = [
            sub(PoseStamped, "eef_pose", lambda m: self.guard("eef_pose", m, a.set_pose), SENSOR_QOS),
            sub(JointState, "joint_states", lambda m: self.guard("joint_states", m, self._joint_states), SENSOR_QOS),
            sub(String, "instruction", self._instruction, 10),
            sub(Header, "episode_reset", self._episode_reset, 10),
        ]
        if a.env_state_dim:
            self.subscriptions.append(
                sub(JointState, "object_state", lambda m: self.guard("object_state", m, a.set_object_state),
                    SENSOR_QOS))
        for cam in cameras:
            self.subscriptions.append(sub(Image, f"camera/{cam}/image_raw",
                                          lambda m, c=cam: self.guard(f"camera/{c}", m,
                                                                      lambda x: self._image(c, x, False)),
                                          SENSOR_QOS))
            self.subscriptions.append(sub(CompressedImage, f"camera/{cam}/image_raw/compressed",
                                          lambda m, c=cam: self.guard(f"camera/{c}/compressed", m,
                                                                      lambda x: self._image(c, x, True)),
                                          SENSOR_QOS))

    def destroy(self) -> None:
        for s in self.subscriptions:
            self.node.destroy_subscription(s)
        self.subscriptions = []

    def new_episode(self, ignore_before_ns: int = 0) -> None:
        """Forget the stored messages and the stamp order; with ``ignore_before_ns`` drop messages
        stamped before the reset that are still in flight."""
        self.order.reset()
        self.assembler.clear()
        self.ignore_before_ns = max(self.ignore_before_ns, ignore_before_ns)

    # ------------------------------------------------------------------ validation
    def guard(self, topic: str, msg: Any, apply: Callable[[Any], None]) -> None:
        """Validate the stamp, apply a message; reject (count, report) anything malformed."""
        try:
            stamp = cv.stamp_ns(msg.header.stamp)
            now = self.node.get_clock().now().nanoseconds
            if stamp > now + self.max_future_ns:
                raise UnsafeInput(f"{topic}: stamp is {(stamp - now) / 1e9:.3f} s in the future")
            if stamp < self.ignore_before_ns:
                return  # from before the last episode reset
            self.order.check(topic, stamp)
            apply(msg)
        except Exception as exc:  # noqa: BLE001 - nothing malformed may crash the node
            self.reject(topic, exc)
            return
        if self.on_observation is not None and self.assembler.latest_stamp() is not None:
            self.on_observation()

    def reject(self, topic: str, exc: Exception) -> None:
        self.rejected += 1
        self.last_reject = f"{topic}: {type(exc).__name__}: {exc}"
        self.node.get_logger().warning(f"rejected {self.last_reject}", throttle_duration_sec=1.0)

    def _joint_states(self, msg: JointState) -> None:
        self.assembler.set_joint_states(msg)
        if self.on_joint_states is not None:
            self.on_joint_states(msg)

    def _image(self, camera: str, msg: Any, compressed: bool) -> None:
        img = cv.compressed_to_array(msg) if compressed else cv.image_to_array(msg)
        self.assembler.set_image(camera, cv.stamp_ns(msg.header.stamp), img)

    def _instruction(self, msg: String) -> None:
        if len(msg.data) > MAX_INSTRUCTION_CHARS or "\x00" in msg.data:
            self.reject("instruction", UnsafeInput("instruction too long or contains NUL"))
            return
        self.assembler.instruction = msg.data

    def _episode_reset(self, msg: Header) -> None:
        stamp = cv.stamp_ns(msg.stamp)
        if stamp <= self.last_reset_ns:
            return  # this episode was already reset (e.g. through a reset service, which comes first)
        self.last_reset_ns = stamp
        self.new_episode(stamp)
        if self.on_reset is not None:
            self.on_reset(stamp)
