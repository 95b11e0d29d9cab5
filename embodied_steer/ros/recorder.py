"""Recorder: write a rosbag2 of the run with ``rosbags`` (pure Python; no ``ros2 bag`` needed).

Subscribes to ``topics`` (relative names resolve in the node's namespace) with raw (serialised CDR)
callbacks, so messages are stored exactly as they were sent. Topic types are discovered from the
graph; a topic that appears late is added when it appears (``RECORDING`` is announced when all were
found or after ``discovery_timeout_s``). Writes ``output_dir`` (must not exist yet) with the ``storage`` plugin (``sqlite3`` or
``mcap``) and closes the bag cleanly on SIGINT. Receive times (ns, ROS clock) are the bag timestamps.
"""

from __future__ import annotations

import time
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile

from embodied_steer.ros.node_utils import announce, declare, run_node
from embodied_steer.ros.params import RECORDER as DEFAULTS


class Recorder(Node):
    def __init__(self, node_name: str = "recorder", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.p = declare(self, DEFAULTS)
        plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[self.p["storage"]]
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.writer = Writer(self.p["output_dir"], version=9, storage_plugin=plugin)
        self.writer.open()
        self.count = 0
        self.connections: dict[str, Any] = {}
        self.wanted = {self.resolve_topic_name(t): t for t in self.p["topics"] if t}
        self.deadline = time.monotonic() + float(self.p["discovery_timeout_s"])
        self._announced = False
        self._timer = self.create_timer(0.2, self._discover)
        announce(f"READY {self.get_name()} recording to {self.p['output_dir']}")

    def _discover(self) -> None:
        types = dict(self.get_topic_names_and_types())
        for topic in list(self.wanted):
            if topic in types and topic not in self.connections:
                msgtype = types[topic][0]
                conn = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
                self.connections[topic] = conn
                qos = QoSProfile(depth=100)  # reliable, volatile: a bag of a closed loop should not drop commands
                self.create_subscription(self._msg_class(msgtype), topic,
                                         lambda raw, c=conn: self._write(c, raw), qos, raw=True)
        missing = [t for t in self.wanted if t not in self.connections]
        if not self._announced and (not missing or time.monotonic() > self.deadline):
            if missing:
                self.get_logger().warning(f"topics not seen yet (still watching for them): {missing}")
            announce(f"RECORDING {self.get_name()} topics={sorted(self.connections)}")
            self._announced = True
        if not missing:
            self.destroy_timer(self._timer)

    @staticmethod
    def _msg_class(msgtype: str):
        """``"sensor_msgs/msg/JointState"`` -> the message class."""
        import importlib

        pkg, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)

    def _write(self, conn, raw: bytes) -> None:
        self.writer.write(conn, self.get_clock().now().nanoseconds, raw)
        self.count += 1

    def close(self) -> None:
        self.writer.close()
        print(f"STATS {self.get_name()} messages={self.count} topics={len(self.connections)}", flush=True)


def main(args: list[str] | None = None) -> int:
    return run_node(Recorder, args)
