"""Message <-> toolkit conversions and the library-path bootstrap (needs the ROS 2 message wheels)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from embodied_steer.ros import conversions as cv  # noqa: E402
from embodied_steer.ros.safety import UnsafeInput  # noqa: E402

ST = Time(sec=5, nanosec=7)


def test_images_roundtrip_and_encodings(rng):
    img = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    msg = cv.array_to_image(img, ST, "cam")
    assert np.array_equal(cv.image_to_array(msg), img)
    bgr = Image(height=4, width=6, encoding="bgr8", step=18, data=img[:, :, ::-1].tobytes())
    assert np.array_equal(cv.image_to_array(bgr), img)
    mono = Image(height=2, width=2, encoding="mono8", step=4, data=bytes([1, 2, 0, 0, 3, 4, 0, 0]))  # padded rows
    assert cv.image_to_array(mono)[:, :, 0].tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("kwargs", [
    dict(height=4, width=4, encoding="yuv422", step=8, data=bytes(32)),
    dict(height=4, width=4, encoding="32FC1", step=16, data=bytes(64)),
    dict(height=4, width=4, encoding="rgb8", step=12, data=bytes(10)),
    dict(height=4, width=4, encoding="rgb8", step=5, data=bytes(20)),
    dict(height=100000, width=100000, encoding="rgb8", step=300000, data=bytes(3)),
    dict(height=0, width=4, encoding="rgb8", step=12, data=b""),
])
def test_malformed_images_are_rejected(kwargs):
    with pytest.raises(UnsafeInput):
        cv.image_to_array(Image(**kwargs))


def test_compressed_images(rng):
    from PIL import Image as PILImage

    img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(img).save(buf, format="PNG")
    assert np.array_equal(cv.compressed_to_array(CompressedImage(format="png", data=buf.getvalue())), img)
    with pytest.raises(UnsafeInput):
        cv.compressed_to_array(CompressedImage(format="jpeg", data=bytes(100)))
    with pytest.raises(UnsafeInput):
        cv.compressed_to_array(CompressedImage(format="tiff", data=buf.getvalue()))


def test_pose_joint_states_and_commands():
    pose = cv.array_to_pose([0.1, 0.2, 0.9, 0, 0, 0, 1], ST)
    assert cv.pose_to_array(pose).tolist() == pytest.approx([0.1, 0.2, 0.9, 0, 0, 0, 1])
    with pytest.raises(UnsafeInput):
        cv.pose_to_array(cv.array_to_pose([0, 0, 1, 0, 0, 0, 3], ST))
    with pytest.raises(UnsafeInput):
        cv.pose_to_array(cv.array_to_pose([np.nan, 0, 1, 0, 0, 0, 1], ST))
    js = cv.values_message([0.3, 0.01, -0.01], ["j1", "f1", "f2"], ST)
    assert cv.joint_positions(js, ["f2", "f1"]).tolist() == [-0.01, 0.01]
    for bad in (cv.values_message([0.1], ["f1", "f2"], ST), cv.values_message([0.1, 0.2], ["f1", "f1"], ST),
                cv.values_message([0.1, np.inf], ["f1", "f2"], ST), cv.values_message([0.1], ["x"], ST)):
        with pytest.raises(UnsafeInput):
            cv.joint_positions(bad, ["f1", "f2"])
    scale = cv.EefScale()
    action = np.array([0.5, -0.2, 0.1, 0.3, 0.0, -0.4, 1.0])
    twist, grip = cv.action_to_eef_msgs(action, ST, scale)
    assert twist.twist.linear.x == pytest.approx(0.5)  # 0.5 * 0.05 m * 20 Hz = 0.5 m/s
    assert twist.twist.angular.z == pytest.approx(-4.0)  # -0.4 * 0.5 rad * 20 Hz
    assert cv.eef_msgs_to_action(twist, grip, scale) == pytest.approx(action)


def test_trajectory_roundtrip_and_validation():
    names = ["a", "b"]
    chunk = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    traj = cv.chunk_to_trajectory(chunk, names, 0.05, ST)
    assert traj.points[2].time_from_start.nanosec == 150_000_000
    traj.joint_names = ["b", "a"]
    assert cv.trajectory_to_chunk(traj, names) == pytest.approx(chunk[:, ::-1])
    traj.points[1].positions = [0.1]
    with pytest.raises(UnsafeInput):
        cv.trajectory_to_chunk(traj, names)
    with pytest.raises(UnsafeInput):
        cv.trajectory_to_chunk(cv.chunk_to_trajectory(chunk, names, 0.05, ST), ["a", "c"])


def test_assembler_needs_synchronised_stamps():
    asm = cv.ObservationAssembler(["f1", "f2"], env_state_dim=3)
    asm.set_pose(cv.array_to_pose([0.1, 0.2, 0.9, 0, 0, 0, 1], ST))
    asm.set_joint_states(cv.values_message([0.01, -0.01], ["f1", "f2"], ST))
    assert asm.build(0.0) is None  # object state missing
    with pytest.raises(UnsafeInput):
        asm.set_object_state(cv.values_message([1.0, 2.0], ["o0", "o1"], ST))
    asm.set_object_state(cv.values_message([1.0, 2.0, 3.0], ["o0", "o1", "o2"], Time(sec=5, nanosec=8)))
    assert asm.build(0.0) is None  # 1 ns apart, slop 0
    asm.set_object_state(cv.values_message([1.0, 2.0, 3.0], ["o0", "o1", "o2"], ST))
    obs = asm.build(5.0)
    assert obs.state.shape == (9,) and obs.env_state.tolist() == [1.0, 2.0, 3.0]


def test_bootstrap_reexecs_with_the_library_path(tmp_path):
    """With the wheel hook's guard inherited and no library path, plain ``import rclpy`` fails but the
    node entry-point bootstrap re-executes the interpreter and succeeds."""
    from embodied_steer.ros.bootstrap import wheel_library_dirs

    if not wheel_library_dirs():
        pytest.skip("rclpy is not from the pip wheels (system ROS): nothing to bootstrap")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "EMBODIED_STEER_ROS_REEXEC")}
    env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"  # as if inherited from another environment
    env["ROS_LOG_DIR"] = str(tmp_path)
    plain = subprocess.run([sys.executable, "-c", "import rclpy._rclpy_pybind11"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert plain.returncode != 0
    code = ("from embodied_steer.ros.bootstrap import ensure_ros_environment; ensure_ros_environment(); "
            "import rclpy._rclpy_pybind11, os; print('OK', os.environ['EMBODIED_STEER_ROS_REEXEC'])")
    boot = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert boot.returncode == 0, boot.stderr
    assert boot.stdout.strip() == "OK 1"


def test_arm_description_and_keypoints_are_validated():
    """What guidance needs at the policy server arrives as messages: malformed ones are refused with
    the reason, stale keypoints make the chunk fall back to unguided sampling."""
    from builtin_interfaces.msg import Time

    from embodied_steer.ros.scene import (
        ArmDescriptionError,
        KeypointStore,
        keypoints_from_message,
        keypoints_message,
        parse_arm_description,
    )
    from embodied_steer.vls.guidance import RewardFailure

    good = {"task": "Lift", "state_names": ["eef_pos_x"], "control_hz": 20.0,
            "spec_extra": {"controller_config": {}}, "keypoint_names": ["cube", "table"]}
    assert parse_arm_description(json.dumps(good))["task"] == "Lift"
    for bad, match in (("{not json", "JSON/YAML"), ("[1, 2]", "mapping"),
                       (json.dumps({"task": "Lift"}), "lacks"),
                       (json.dumps({**good, "control_hz": -1}), "control_hz"),
                       (json.dumps({**good, "state_names": "eef"}), "state_names")):
        with pytest.raises(ArmDescriptionError, match=match):
            parse_arm_description(bad)

    points = np.array([[0.1, -0.2, 0.83], [0.0, 0.0, 0.8]])
    msg = keypoints_message(points, Time(sec=5), "world")
    np.testing.assert_allclose(keypoints_from_message(msg, 2), points, atol=1e-6)
    with pytest.raises(UnsafeInput, match="legend has 3"):
        keypoints_from_message(msg, 3)
    for bad_points, match in (([[float("nan"), 0, 0]], "NaN"), ([[1e4, 0, 0]], "beyond"), (np.zeros((0, 3)), "0 poses")):
        with pytest.raises(UnsafeInput, match=match):
            keypoints_from_message(keypoints_message(np.asarray(bad_points, float), Time(sec=5), "world"))

    store = KeypointStore(max_age_s=0.5)
    with pytest.raises(RewardFailure, match="no keypoints"):
        store.for_observation(5.0)
    store.update(5_000_000_000, points)
    np.testing.assert_allclose(store.for_observation(5.2).numpy(), points, atol=1e-6)
    with pytest.raises(RewardFailure, match="older"):
        store.for_observation(6.0)
    with pytest.raises(RewardFailure, match="newer"):
        store.for_observation(4.0)
    with pytest.raises(UnsafeInput, match="backwards"):
        store.update(4_000_000_000, points)
