"""ROS 2 integration: policy server, simulated arm, safety layer, recording.

Only :mod:`embodied_steer.ros.safety` and :mod:`embodied_steer.ros.netenv` are importable without
ROS; every other module imports ``rclpy`` and the message packages. Node entry points call
:func:`embodied_steer.ros.bootstrap.ensure_ros_environment` before importing ``rclpy`` so that the
pip wheels' shared libraries are found from any shell.
"""
