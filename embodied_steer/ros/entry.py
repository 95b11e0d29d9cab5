"""Console-script entry points of the ROS 2 nodes (``embodied-steer-policy-server``, ...).

Each one first makes sure the ROS 2 libraries can be loaded
(:func:`~embodied_steer.ros.bootstrap.ensure_ros_environment`, which may re-execute the
interpreter), then imports the node module. ROS arguments (``--ros-args -p name:=value
--params-file f.yaml -r old:=new``) are passed through.
"""

from __future__ import annotations

import os
import sys


def _prepare() -> None:
    from embodied_steer.ros.bootstrap import ensure_ros_environment

    ensure_ros_environment()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MUJOCO_GL", "egl")


def policy_server() -> int:
    _prepare()
    from embodied_steer.ros.policy_server import main

    return main(sys.argv)


def sim_arm() -> int:
    _prepare()
    from embodied_steer.ros.sim_arm import main

    return main(sys.argv)


def recorder() -> int:
    _prepare()
    from embodied_steer.ros.recorder import main

    return main(sys.argv)


def assist_monitor() -> int:
    _prepare()
    from embodied_steer.ros.assist_monitor import main

    return main(sys.argv)


def steering_control() -> int:
    _prepare()
    from embodied_steer.ros.steering_control import main

    return main(sys.argv)


def install_layout() -> int:
    from embodied_steer.ros.layout import main

    return main(sys.argv[1:])
