"""OOD task variants for VLS: an obstacle in the arena (env wrapper, contact metric, keypoint, its
reward program) and the PickPlaceCan program's stages."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from embodied_steer.core import ConfigError
from embodied_steer.eval.runner import _episode_info
from embodied_steer.sim.robosuite_env import Obstacle, RobosuiteEnv
from embodied_steer.vls.configure import guide_from_settings, load_program
from embodied_steer.vls.defaults import default_program, default_program_source, env_variant
from embodied_steer.vls.keypoints import keypoints_for

REPO = Path(__file__).resolve().parents[1]
LIFT_OBSTACLE_YAML = REPO / "envs" / "lift_obstacle.yaml"


def _yaml_env_kwargs() -> dict:
    cfg = yaml.safe_load(LIFT_OBSTACLE_YAML.read_text())
    keys = ("task", "horizon", "placement", "obstacles", "name")
    return {k: cfg[k] for k in keys}


@pytest.fixture(scope="module")
def obstacle_env():
    env = RobosuiteEnv(**_yaml_env_kwargs())
    yield env
    env.close()


def _obstacle(env) -> dict:
    return env.spec_info.extra["obstacles"][0]


# ------------------------------------------------------------------------------- env wrapper
def test_obstacle_is_a_fixed_body_the_keypoints_see(obstacle_env):
    env = obstacle_env
    spec = _obstacle(env)
    env.reset(seed=1)
    names, points = keypoints_for(env, extra_bodies=[spec["name"]])
    assert names == ("cube", "table", "obstacle")
    np.testing.assert_allclose(points[2].numpy(), spec["pos"], atol=1e-6)
    sim = env.unwrapped_robosuite.sim
    geom = sim.model.geom_name2id("obstacle_geom")
    np.testing.assert_allclose(sim.model.geom_size[geom], spec["size"])
    # welded to the world: it has no joint, and it stays where it is after steps
    body = sim.model.body_name2id("obstacle")
    assert sim.model.body_jntnum[body] == 0
    for _ in range(5):
        env.step(np.zeros(7, np.float32))
    np.testing.assert_allclose(keypoints_for(env, extra_bodies=["obstacle"])[1][2].numpy(), spec["pos"], atol=1e-6)


def test_contact_with_the_obstacle_is_detected_and_counted_per_episode(obstacle_env):
    env = obstacle_env
    obs, info = env.reset(seed=1)
    assert info["obstacle_contact"] is False and env.episode_info() == {"obstacle_contact_steps": 0,
                                                                          "obstacle_collision": False}
    bar = np.asarray(_obstacle(env)["pos"])
    touched_at = None
    for t in range(80):  # drive the end effector at the bar's height into its back face
        eef = obs["state"][:3]
        action = np.zeros(7, np.float32)
        action[0] = 0.4
        action[2] = np.clip((bar[2] - eef[2]) / 0.05, -0.5, 0.5)
        action[6] = -1.0
        obs, _, _, _, info = env.step(action)
        if info["obstacle_contact"]:
            touched_at = t
            break
    assert touched_at is not None, "pushing the gripper into the bar never touched it"
    assert obs["state"][0] < bar[0], "the end effector went through the bar"
    for _ in range(3):  # keep pushing: still in contact, counted per step
        obs, _, _, _, info = env.step(action)
    report = env.episode_info()
    assert report["obstacle_collision"] is True and report["obstacle_contact_steps"] >= 2
    env.reset(seed=1)
    assert env.episode_info()["obstacle_contact_steps"] == 0


def test_contact_free_motion_is_not_a_collision(obstacle_env):
    env = obstacle_env
    env.reset(seed=2)
    for _ in range(10):  # straight up, away from the bar
        _, _, _, _, info = env.step(np.array([0, 0, 0.5, 0, 0, 0, -1], np.float32))
        assert info["obstacle_contact"] is False
    assert env.episode_info()["obstacle_collision"] is False


def test_env_without_obstacles_reports_nothing():
    env = RobosuiteEnv("Lift", horizon=5)
    try:
        _, info = env.reset(seed=0)
        assert "obstacle_contact" not in info and env.episode_info() == {}
        assert env.spec_info.extra["obstacles"] == [] and env_variant(env) == (None, ())
    finally:
        env.close()


@pytest.mark.parametrize("bad, message", [
    ({"name": "bar", "pos": [0, 0, 1], "size": [0.01, 0.0, 0.01]}, "must be > 0"),
    ({"name": "bar", "pos": [0, 0], "size": [0.01, 0.01, 0.01]}, "3 finite numbers"),
    ({"name": "bar", "pos": [0, 0, "x"], "size": [0.01, 0.01, 0.01]}, "list of 3 numbers"),
    ({"name": "bar", "pos": [0, 0, 1], "size": [0.01, 0.01, 0.01], "colour": [1, 0, 0, 1]}, "unknown keys"),
    ({"pos": [0, 0, 1], "size": [0.01, 0.01, 0.01]}, "missing"),
    ({"name": "a bar", "pos": [0, 0, 1], "size": [0.01, 0.01, 0.01]}, "letters, digits"),
    ({"name": "bar", "pos": [0, 0, 1], "size": [0.01, 0.01, 0.01], "rgba": [2, 0, 0, 1]}, "in \\[0, 1\\]"),
    ("bar", "must be a mapping"),
])
def test_bad_obstacle_configs_are_rejected(bad, message):
    with pytest.raises(ConfigError, match=message):
        Obstacle.from_config(bad, 0)


def test_obstacle_name_clashing_with_the_task_model_is_rejected():
    with pytest.raises(ConfigError, match="clash"):
        RobosuiteEnv("Lift", horizon=5, obstacles=[{"name": "cube_main", "pos": [0, 0, 1.2], "size": [0.01] * 3}])


def test_runner_merges_the_environment_report_into_the_episode_info():
    class Act:
        def episode_info(self):
            return {"chunks": 3}

    class Env:
        def __init__(self, report):
            self.report = report

        def episode_info(self):
            return self.report

    assert _episode_info(Act(), Env({"obstacle_collision": True})) == {"chunks": 3, "obstacle_collision": True}
    assert _episode_info(Act(), Env({})) == {"chunks": 3}
    assert _episode_info(lambda p, o: None, Env({})) is None
    assert _episode_info(lambda p, o: None, Env({"obstacle_contact_steps": 0})) == {"obstacle_contact_steps": 0}
    assert _episode_info(lambda p, o: None, object()) is None


# ------------------------------------------------------------------------------- the obstacle program
def _program_constants() -> dict[str, float]:
    tree = ast.parse(default_program_source("Lift", "obstacle"))
    return {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)}


def test_obstacle_program_matches_the_env_config():
    consts = _program_constants()
    size = yaml.safe_load(LIFT_OBSTACLE_YAML.read_text())["obstacles"][0]["size"]
    assert [consts["OBSTACLE_HALF_X"], consts["OBSTACLE_HALF_Y"], consts["OBSTACLE_HALF_Z"]] == size


def test_env_with_obstacles_gets_the_obstacle_program_and_keypoint(obstacle_env):
    assert env_variant(obstacle_env) == ("obstacle", ("obstacle",))
    program = load_program("default", obstacle_env)
    assert program.source == default_program_source("Lift", "obstacle") and program.num_stages() == 2
    with pytest.raises(ConfigError, match="variant 'obstacle'"):
        default_program("PickPlaceCan", variant="obstacle")


def test_guide_for_the_obstacle_env_passes_the_obstacle_as_third_keypoint(obstacle_env, monkeypatch):
    from embodied_steer.core.policy import InterventionPoint

    class Policy:  # only what guide_from_settings touches before acting
        def require(self, point, what):
            assert point is InterventionPoint.DENOISING_STEP

        def reset(self, seed=None):
            pass

    obstacle_env.reset(seed=3)
    guide = guide_from_settings({"num_particles": 2}, Policy(), obstacle_env)
    points = guide.keypoints(None)
    assert tuple(points.shape) == (3, 3)
    np.testing.assert_allclose(points[2].numpy(), _obstacle(obstacle_env)["pos"], atol=1e-6)


KP = torch.tensor([[0.11, 0.0, 0.83], [0.0, 0.0, 0.80], [0.0, 0.0, 0.93]])  # cube, table, bar (lift_obstacle)
START = torch.tensor([-0.09, 0.0, 1.02])


def _path(*points: torch.Tensor, steps: int = 8) -> torch.Tensor:
    legs = []
    for a, b in zip(points[:-1], points[1:]):
        w = torch.linspace(0, 1, steps + 1)[1:, None]
        legs.append(a + w * (b - a))
    return torch.cat(legs)


def test_obstacle_program_prefers_going_over_the_bar_to_going_through_it():
    program = default_program("Lift", variant="obstacle")
    plain = default_program("Lift")
    through = _path(START, KP[0], steps=16)                                       # straight line: crosses the bar
    over = _path(START, torch.tensor([0.11, 0.0, 1.02]), KP[0])                   # forward above it, then down
    batch = torch.stack([through, over])
    reward = program(0, KP, batch)
    assert reward[1] > reward[0] + 0.05
    # the plain Lift program cannot tell them apart by the obstacle (it prefers the shorter line)
    assert plain(0, KP[:2], batch)[0] >= plain(0, KP[:2], batch)[1]
    # stage 2 (lift): a lift that sweeps back through the bar scores lower than a straight one
    up = _path(KP[0], KP[0] + torch.tensor([0.0, 0.0, 0.2]), steps=16)
    back = _path(KP[0], torch.tensor([0.0, 0.0, 0.93]), KP[0] + torch.tensor([0.0, 0.0, 0.2]))
    lifts = torch.stack([up, back])
    assert program(1, KP, lifts)[0] > program(1, KP, lifts)[1] + 0.05


def _ascend(program, traj: torch.Tensor, steps: int = 300, lr: float = 0.002) -> torch.Tensor:
    traj = traj[None].clone().requires_grad_(True)
    for _ in range(steps):
        (grad,) = torch.autograd.grad(program(0, KP, traj).sum(), traj)
        traj = (traj + lr * grad / grad.norm().clamp_min(1e-9)).detach().requires_grad_(True)
    return traj.detach()[0]


def _under_clearance(traj: torch.Tensor, slack: float = 0.005) -> int:
    """Points over the obstacle's grown footprint more than ``slack`` below its clearance height."""
    c = _program_constants()
    off = traj - KP[2]
    over = (off[:, 0].abs() < c["OBSTACLE_HALF_X"] + c["SIDE_MARGIN"]) & \
           (off[:, 1].abs() < c["OBSTACLE_HALF_Y"] + c["SIDE_MARGIN"])
    low = off[:, 2] < c["OBSTACLE_HALF_Z"] + c["ABOVE_MARGIN"] - slack
    return int((over & low).sum())


def test_gradient_ascent_on_the_obstacle_program_goes_over_the_bar():
    program = default_program("Lift", variant="obstacle")
    through = _path(START, KP[0], steps=16)
    assert _under_clearance(through) > 0
    traj = _ascend(program, through)
    assert _under_clearance(traj) == 0
    assert torch.linalg.norm(traj[-1] - KP[0]) < 0.05  # and it still ends near the cube


def test_obstacle_program_lifts_a_gripper_caught_behind_and_under_the_bar():
    """From low behind the bar, the way to the cube is up and over, not back (a keep-out box whose
    penalty pushed out through the nearest face held the gripper there in the first version)."""
    program = default_program("Lift", variant="obstacle")
    low_behind = _path(torch.tensor([-0.07, 0.0, 0.84]), KP[0], steps=16)[None].requires_grad_(True)
    (grad,) = torch.autograd.grad(program(0, KP, low_behind).sum(), low_behind)
    c = _program_constants()
    under = (low_behind[0, :, 0] - KP[2, 0]).abs().detach() < c["OBSTACLE_HALF_X"] + c["SIDE_MARGIN"]
    assert int(under.sum()) >= 3
    assert bool((grad[0, under, 2] > 0).all())      # up ...
    assert bool((grad[0, under, 0] >= 0).all())     # ... and never back towards the robot
    raised = _ascend(program, low_behind.detach()[0], steps=1500)
    assert _under_clearance(raised) == 0


# ------------------------------------------------------------------------------- PickPlaceCan program
CAN_KP = torch.tensor([[0.15, -0.45, 0.86], [0.20, 0.40, 0.80]])  # can (OOD half of the moved bin), target


def test_can_program_stages_reach_the_default_thresholds_when_done():
    """Each stage's reward must reach its switch threshold (guide/vls.yaml: -0.025, 0, 0) at its goal,
    or the stage tracker never moves on (a stage 2 that demands zero horizontal error never did)."""
    program = default_program("PickPlaceCan")
    consts = ast.parse(default_program_source("PickPlaceCan"))
    carry = [ast.literal_eval(n.value) for n in consts.body
             if isinstance(n, ast.Assign) and n.targets[0].id == "CARRY_HEIGHT"][0]
    at_can = CAN_KP[0].view(1, 1, 3)
    grasped_up = (CAN_KP[0] + torch.tensor([0.005, -0.004, 0.0])).clone()
    grasped_up[2] = CAN_KP[1, 2] + carry + 0.01
    assert program(0, CAN_KP, at_can).item() >= -0.025
    assert program(1, CAN_KP, grasped_up.view(1, 1, 3)).item() >= 0.0
    assert program(1, CAN_KP, at_can).item() < -0.1  # not lifted yet


def test_can_program_approaches_from_above():
    program = default_program("PickPlaceCan")
    start = torch.tensor([-0.03, -0.11, 1.03])
    low = _path(start, CAN_KP[0], steps=16)                                              # sideways, low: knocks it
    above = _path(start, CAN_KP[0] + torch.tensor([0.0, 0.0, 0.1]), CAN_KP[0])           # over it, then down
    reward = program(0, CAN_KP, torch.stack([low, above]))
    assert reward[1] > reward[0]
    # a chunk that ends beside the can at its height is worse than one that ends above it
    beside = _path(start, CAN_KP[0] + torch.tensor([0.0, 0.08, 0.0]))
    over = _path(start, CAN_KP[0] + torch.tensor([0.0, 0.08, 0.1]))
    ends = torch.stack([beside, over])
    assert program(0, CAN_KP, ends)[1] > program(0, CAN_KP, ends)[0]


# ------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_cli_eval_on_the_obstacle_variant_records_collisions(tmp_path):
    """The base policy runs into the bar and stays there; guidance with the obstacle program touches it
    less (seed 0, the first 40 steps)."""
    import json

    from embodied_steer.cli import main

    def run(name: str, *extra: str) -> dict:
        out = tmp_path / name
        code = main(["eval", "env=lift_obstacle", "policy=lift_diffusion", "episodes=1", "max_steps=40",
                     f"output_dir={out}", "torch_threads=1", *extra])
        assert code == 0
        return json.loads((out / "episodes.jsonl").read_text().splitlines()[0])["info"]

    base = run("base")
    assert base["obstacle_collision"] is True and base["obstacle_contact_steps"] > 0
    guided = run("guided", "guide=grad", "guide.num_particles=8")
    assert guided["fallbacks"] == 0 and guided["chunks"] == 5
    assert guided["obstacle_contact_steps"] < base["obstacle_contact_steps"]
