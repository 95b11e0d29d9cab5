"""The always-on safety layer (pure Python, no ROS): clamping, validation, watchdog, e-stop."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_steer.ros.safety import (EefLimits, EStop, JointLimits, SafetyFilter, StampOrder, UnsafeInput,
                                       Watchdog)

INSIDE = np.array([0.0, 0.0, 1.0])


def test_eef_box_speed_and_workspace_clamps():
    f = SafetyFilter(EefLimits(max_linear_speed=0.5, max_angular_speed=2.0))
    safe, rep = f.filter_eef(np.array([3.0, 0, 0, 0, 0, 0, 5.0]), INSIDE)
    assert safe[0] == pytest.approx(0.5) and safe[6] == 1.0  # box -> 1, then 0.5 m/s = 0.5 * 0.05 m * 20 Hz
    assert set(rep.reasons) >= {"action box", "linear speed"}
    safe, rep = f.filter_eef(np.array([0, 0, 0, 1.0, 1.0, 0, 0]), INSIDE)
    assert np.linalg.norm(safe[3:6]) * 0.5 * 20 == pytest.approx(2.0, rel=1e-5)
    # 1 cm above the floor of the workspace: a full step down stops at the boundary
    near_floor = np.array([0.0, 0.0, 0.81])
    safe, rep = f.filter_eef(np.array([0, 0, -0.4, 0, 0, 0, 0]), near_floor)
    assert near_floor[2] + safe[2] * 0.05 == pytest.approx(0.80, abs=1e-6) and "workspace" in rep.reasons


def test_outside_workspace_may_only_move_back_in():
    f = SafetyFilter()
    below = np.array([0.0, 0.0, 0.5])
    safe, _ = f.filter_eef(np.array([0, 0, -1.0, 0, 0, 0, 0]), below)
    assert safe[2] == 0.0
    safe, _ = f.filter_eef(np.array([0, 0, 0.5, 0, 0, 0, 0]), below)
    assert safe[2] == pytest.approx(0.5)


def test_unknown_position_zeroes_translation_and_bad_input_is_rejected():
    f = SafetyFilter()
    safe, rep = f.filter_eef(np.array([0.3, 0.3, 0.3, 0.1, 0, 0, 1]), None)
    assert np.all(safe[:3] == 0) and safe[3] == pytest.approx(0.1) and rep.clamped
    for bad in (np.full(7, np.nan), np.array([0, 0, np.inf, 0, 0, 0, 0]), np.zeros(6), np.zeros(8)):
        with pytest.raises(UnsafeInput):
            f.filter_eef(bad, INSIDE)
    with pytest.raises(UnsafeInput):
        f.filter_eef(np.zeros(7), np.array([np.nan, 0, 1]))


def test_random_commands_are_always_safe_after_filtering(rng):
    f = SafetyFilter(EefLimits(max_linear_speed=0.7, max_angular_speed=3.0))
    for _ in range(2000):
        action = rng.normal(scale=3.0, size=7)
        pos = rng.uniform(-1.0, 2.0, size=3)
        safe, _ = f.filter_eef(action, pos)
        assert f.is_safe_eef(safe, pos), (action, pos, safe)
    assert not f.is_safe_eef(np.array([0, 0, -1.0, 0, 0, 0, 0]), np.array([0, 0, 0.80]))
    assert not f.is_safe_eef(np.array([np.nan] * 7), INSIDE)


def test_joint_limits_and_velocity():
    lim = JointLimits(["a", "b"], [-1.0, -1.0], [1.0, 1.0], [0.2, 0.2], control_hz=10.0)
    f = SafetyFilter(joints=lim)
    safe, rep = f.filter_joints(np.array([5.0, -0.01]), current=np.array([0.0, 0.0]))
    assert safe.tolist() == pytest.approx([0.02, -0.01]) and "joint velocity" in rep.reasons
    safe, _ = f.filter_joints(np.array([5.0, 0.0]), current=None)  # relative to the last command
    assert safe[0] == pytest.approx(0.04)
    with pytest.raises(UnsafeInput):
        f.filter_joints(np.array([np.nan, 0.0]), None)
    with pytest.raises(UnsafeInput):
        f.filter_joints(np.zeros(3), None)
    with pytest.raises(ValueError):
        JointLimits(["a"], [1.0], [0.0], [1.0])


def test_watchdog_stale_and_overrun():
    w = Watchdog(obs_timeout_s=0.5, max_inference_s=0.2)
    assert not w.status(0.0).ok
    w.observation(1.0)
    assert w.status(1.4).ok and not w.status(1.6).ok
    assert "stale" in w.status(1.6).reason
    assert not w.inference(1.0, 1.3)
    assert not w.status(1.31).ok and "overrun" in w.status(1.31).reason
    w.observation(1.35)
    assert w.status(1.36).ok


def test_estop_latches_and_stamps_must_not_go_backwards():
    e = EStop()
    e.engage("topic")
    e.engage("again")
    assert e.engaged
    e.release()
    assert not e.engaged
    order = StampOrder()
    order.check("pose", 10)
    order.check("pose", 10)
    with pytest.raises(UnsafeInput):
        order.check("pose", 9)
    with pytest.raises(UnsafeInput):
        order.check("joints", 0)


def test_limits_validate_their_configuration():
    with pytest.raises(ValueError):
        EefLimits(workspace_low=(0, 0, 2), workspace_high=(1, 1, 1))
    with pytest.raises(ValueError):
        EefLimits(max_linear_speed=float("nan"))
    with pytest.raises(ValueError):
        EefLimits(action_low=(-1,) * 6)
