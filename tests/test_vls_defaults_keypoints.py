"""Shipped reward programs (offline defaults) and simulator keypoints with their camera image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied_steer.core.errors import ConfigError
from embodied_steer.vls.defaults import DEFAULT_PROGRAMS, default_program, default_program_source
from embodied_steer.vls.keypoints import (
    draw_keypoints,
    keypoint_image,
    keypoint_legend,
    keypoints_for,
    legend_text,
    project_points,
)
from embodied_steer.vls.sandbox import check_reward_program


def _straight(start: torch.Tensor, end: torch.Tensor, t: int = 8) -> torch.Tensor:
    w = torch.linspace(0, 1, t)[:, None]
    return start + w * (end - start)


@pytest.mark.parametrize("task", sorted(DEFAULT_PROGRAMS))
def test_default_programs_pass_the_static_sandbox_check(task):
    assert check_reward_program(default_program_source(task))
    assert default_program(task).num_stages() == {"Lift": 2, "PickPlaceCan": 3}[task]


def test_unknown_task_has_no_default_program():
    with pytest.raises(ConfigError, match="no default reward program"):
        default_program("Door")


LIFT_KP = torch.tensor([[0.05, -0.02, 0.83], [0.0, 0.0, 0.80]])
CAN_KP = torch.tensor([[0.21, -0.31, 0.86], [0.20, 0.40, 0.80]])
START = torch.tensor([-0.1, 0.0, 1.0])


@pytest.mark.parametrize("task, keypoints, stage, good_end, bad_end", [
    ("Lift", LIFT_KP, 0, LIFT_KP[0], START),                                           # reach the cube
    ("Lift", LIFT_KP, 1, LIFT_KP[0] + torch.tensor([0, 0, 0.2]), LIFT_KP[0]),          # then up
    ("PickPlaceCan", CAN_KP, 0, CAN_KP[0], START),                                     # reach the can
    ("PickPlaceCan", CAN_KP, 1, CAN_KP[0] + torch.tensor([0, 0, 0.2]), CAN_KP[0]),     # lift it
    ("PickPlaceCan", CAN_KP, 2, CAN_KP[1] + torch.tensor([0, 0, 0.06]),                # over the bin, lowered
     CAN_KP[0] + torch.tensor([0, 0, 0.2])),
])
def test_default_stage_rewards_prefer_the_stage_goal(task, keypoints, stage, good_end, bad_end):
    program = default_program(task)
    start = START if stage == 0 else keypoints[0] + torch.tensor([0, 0, 0.02])
    batch = torch.stack([_straight(start, good_end), _straight(start, bad_end)])
    reward = program(stage, keypoints, batch)
    assert reward[0] > reward[1]


@pytest.mark.parametrize("task, keypoints", [("Lift", LIFT_KP), ("PickPlaceCan", CAN_KP)])
def test_gradient_ascent_on_default_rewards_improves_them(task, keypoints):
    program = default_program(task)
    for stage in range(program.num_stages()):
        traj = _straight(START, START + torch.tensor([0.05, 0.05, 0.0]))[None].clone().requires_grad_(True)
        first = program(stage, keypoints, traj).item()
        for _ in range(50):
            (grad,) = torch.autograd.grad(program(stage, keypoints, traj).sum(), traj)
            traj = (traj + 0.02 * grad).detach().requires_grad_(True)
        assert program(stage, keypoints, traj).item() > first + 0.05


def test_legends_and_text():
    assert [k.name for k in keypoint_legend("Lift")] == ["cube", "table"]
    assert [k.name for k in keypoint_legend("PickPlaceCan", ["obstacle"])] == ["can", "bin", "obstacle"]
    assert legend_text(keypoint_legend("Lift")).splitlines()[0].startswith("0: cube")
    with pytest.raises(ConfigError, match="no keypoints defined"):
        keypoint_legend("Door")


def test_draw_keypoints_marks_the_points_and_keeps_the_input():
    image = np.full((64, 64, 3), 255, np.uint8)
    out = draw_keypoints(image, np.array([[32.0, 20.0], [-10.0, 200.0]]))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 255).all()  # input untouched
    red = (out[..., 0] > 150) & (out[..., 1] < 80)
    assert red[30:35, 18:23].any()  # the dot at the first point
    grey = (np.abs(out.astype(int) - 120).max(axis=-1) < 10)
    assert grey.any()  # the out-of-image point, clamped and grey


@pytest.fixture(scope="module")
def lift_env():
    from embodied_steer.sim.robosuite_env import RobosuiteEnv

    env = RobosuiteEnv(task="Lift")
    env.reset(seed=3)
    yield env
    env.close()


def test_keypoints_for_lift_match_the_simulator(lift_env):
    names, kp = keypoints_for(lift_env)
    assert names == ("cube", "table") and kp.shape == (2, 3) and kp.dtype == torch.float32
    np.testing.assert_allclose(kp[0].numpy(), lift_env.object_positions()["cube"], atol=1e-6)
    np.testing.assert_allclose(kp[1].numpy(), [0.0, 0.0, 0.8], atol=1e-6)
    names, kp = keypoints_for(lift_env, extra_bodies=["table"])
    assert names[-1] == "table" and kp.shape == (3, 3)
    with pytest.raises(ConfigError, match="no MuJoCo body"):
        keypoints_for(lift_env, extra_bodies=["no_such_body"])


def test_projection_lands_on_the_red_cube(lift_env):
    from embodied_steer.vls.keypoints import render_camera

    sim = lift_env.unwrapped_robosuite.sim
    _, kp = keypoints_for(lift_env)
    image = render_camera(sim, "agentview", 128, 128)
    (row, col), _ = project_points(sim, "agentview", kp.double().numpy(), 128, 128)
    patch = image[int(row) - 1:int(row) + 2, int(col) - 1:int(col) + 2].astype(int)
    assert (patch[..., 0] > patch[..., 1] + 40).all(), patch  # red cube under the projected centre
    # A point above the cube projects higher in the upright image (smaller row).
    above = project_points(sim, "agentview", (kp[0].double() + torch.tensor([0, 0, 0.2], dtype=torch.float64))[None].numpy(),
                           128, 128)
    assert above[0, 0] < row - 5


def test_keypoint_image(lift_env):
    image, names, kp = keypoint_image(lift_env, height=96, width=128)
    assert image.shape == (96, 128, 3) and image.dtype == np.uint8 and names == ("cube", "table")
    plain_row, plain_col = project_points(lift_env.unwrapped_robosuite.sim, "agentview", kp.double().numpy(), 96, 128)[1]
    assert 0 <= plain_row < 96 and 0 <= plain_col < 128


def test_guide_program_vlm_falls_back_to_the_default_when_the_endpoint_is_unreachable(lift_env, monkeypatch,
                                                                                         tmp_path, caplog):
    """``guide.program=vlm`` with an endpoint that does not answer: the evaluation goes on with the
    shipped default program for the task, and says so."""
    import logging
    import socket

    from embodied_steer.vls.configure import load_program
    from embodied_steer.vls.defaults import default_program

    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("EMBODIED_STEER_VLM_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("EMBODIED_STEER_VLM_MODEL", "m")
    monkeypatch.setenv("EMBODIED_STEER_VLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EMBODIED_STEER_VLM_TIMEOUT", "5")
    with caplog.at_level(logging.WARNING):
        program = load_program("vlm", lift_env)
    assert program.source == default_program("Lift").source
    assert "VLM request failed" in caplog.text
