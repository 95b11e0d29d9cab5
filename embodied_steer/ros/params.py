"""Declared parameters (name -> default) of every node, importable without ROS (static checks use them).

Units are in the names or documented with the node: ``*_hz`` hertz, ``*_s`` seconds, ``*_m`` metres,
``*_rad`` radians, ``max_linear_speed`` m/s, ``max_angular_speed`` rad/s, joint limits rad (m for
prismatic joints), ``joint_max_velocity`` rad/s. String-array parameters use ``[""]`` for "none"
(ROS parameters can't be empty arrays of a known type).
"""

from __future__ import annotations

from typing import Any

POLICY_SERVER: dict[str, Any] = {
    "policy": "lift_diffusion",
    "checkpoint": "",
    "policy_overrides": [""],
    "execute_steps": 0,
    "control_rate_hz": 20.0,
    "timer_rate_hz": 0.0,
    "lockstep": False,
    "autostart": False,
    "command_type": "eef_twist",
    "frame_id": "world",
    "gripper_joints": ["gripper0_finger_joint1", "gripper0_finger_joint2"],
    "arm_joints": ["robot0_joint1", "robot0_joint2", "robot0_joint3", "robot0_joint4", "robot0_joint5",
                   "robot0_joint6", "robot0_joint7"],
    "cameras": [""],
    "instruction": "",
    "sync_slop_s": 0.0,
    "max_future_stamp_s": 1.0,
    "obs_timeout_s": 0.5,
    "max_inference_s": 0.5,
    "action_low": [-1.0] * 7,
    "action_high": [1.0] * 7,
    "workspace_low": [-0.5, -0.5, 0.80],
    "workspace_high": [0.5, 0.5, 1.40],
    "max_linear_speed": 1.0,
    "max_angular_speed": 10.0,
    "max_linear_step_m": 0.05,
    "max_angular_step_rad": 0.5,
    "joint_lower": [-2.9, -1.76, -2.9, -3.07, -2.9, -0.02, -2.9],
    "joint_upper": [2.9, 1.76, 2.9, -0.07, 2.9, 3.75, 2.9],
    "joint_max_velocity": [2.0] * 7,
    "steering_enabled": True,
    "intervention.noise_scale": 1.0,
    "intervention.noise_seed": 0,
    "steering.settings": "",
    "episode_seed": -1,
    "keypoints_max_age_s": 1.0,
    "arm_description_file": "",
}

SIM_ARM: dict[str, Any] = {
    "env": "lift",
    "env_overrides": [""],
    "episodes": 0,
    "seed": 0,
    "max_steps": 0,
    "step_mode": "lockstep",
    "control_rate_hz": 20.0,
    "republish_s": 0.25,
    "refresh_stamp_s": 5.0,
    "command_timeout_s": 0.2,
    "max_linear_step_m": 0.05,
    "max_angular_step_rad": 0.5,
    "frame_id": "world",
    "results_path": "",
    "reset_service": "policy_server/reset",
    "seed_policy": True,
}

RECORDER: dict[str, Any] = {
    "output_dir": "rosbag",
    "storage": "sqlite3",
    "topics": ["joint_states", "eef_pose", "object_state", "eef_command", "gripper_command", "diagnostics",
               "episode_reset", "instruction"],
    "discovery_timeout_s": 10.0,
}

STEERING_CONTROL: dict[str, Any] = {
    "server": "policy_server",
    "presets_file": "",
    "initial_preset": "",
    "enabled": True,
    "service_timeout_s": 5.0,
}

ASSIST_MONITOR: dict[str, Any] = {
    "policy": "lift_diffusion",
    "checkpoint": "",
    "policy_overrides": [""],
    "seed": 0,
    "gripper_joints": ["gripper0_finger_joint1", "gripper0_finger_joint2"],
    "cameras": [""],
    "instruction": "",
    "sync_slop_s": 0.0,
    "max_future_stamp_s": 1.0,
    "obs_timeout_s": 0.5,
    "observe_rate_hz": 20.0,
    "query_rate_hz": 2.0,
    "samples": 32,
    "estimator": "spacing",
    "human_std": 0.05,
    "k_max": 3,
    "correction_dims": 1,
    "margin": 0.1,
    "patience": 2,
    "log_path": "",
}

NODES: dict[str, dict[str, Any]] = {"policy_server": POLICY_SERVER, "sim_arm": SIM_ARM, "recorder": RECORDER,
                                    "assist_monitor": ASSIST_MONITOR, "steering_control": STEERING_CONTROL}
"""Executable name -> its declared parameters."""
