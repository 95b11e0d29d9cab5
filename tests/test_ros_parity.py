"""Through ROS the shipped policy must do exactly what it does in-process: the simulated arm (lockstep)
seeds the policy server per episode, so each episode's outcome and length equal
``embodied-steer eval``'s with the same seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from embodied_steer.ros.layout import install, plan_launch  # noqa: E402
from embodied_steer.ros.netenv import loopback_env  # noqa: E402
from embodied_steer.ros.processes import NodeProcess, next_domain_id, shm_entries  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
SEED, EPISODES = 1005, 3  # in-process: three successes after 43, 56 and 28 steps — a shifted action would show


def in_process(episodes: int, seed: int) -> list[tuple[bool, int]]:
    import torch

    from embodied_steer.cli import compose, instantiate_env, instantiate_policy
    from embodied_steer.eval.runner import run_episode

    torch.set_num_threads(1)
    cfg = compose("eval", ["env=lift", "policy=lift_diffusion"])
    env = instantiate_env(cfg.env)
    policy = instantiate_policy(cfg.policy, env)
    try:
        return [(r.success, r.steps) for r in (run_episode(env, policy, episode=i, seed=seed + i)
                                               for i in range(episodes))]
    finally:
        env.close()


def test_episodes_through_ros_equal_in_process(tmp_path):
    shm_before = shm_entries()
    env = loopback_env(tmp_path, next_domain_id())
    planned = plan_launch(ROOT / "launch" / "sim_loop.launch.xml", [install(tmp_path / "install")],
                          {"episodes": str(EPISODES), "seed": str(SEED)})
    nodes = {n.name: NodeProcess(n.name, n.argv(), env, cwd=str(tmp_path)) for n in planned}
    try:
        nodes["sim_arm"].wait_for("DONE", timeout=600)
        through_ros = [json.loads(line[len("EPISODE "):]) for line in nodes["sim_arm"].find("EPISODE")]
    finally:
        for node in nodes.values():
            node.stop()
    assert all(not n.group_alive() for n in nodes.values())
    assert shm_entries() - shm_before == set()
    expected = in_process(EPISODES, SEED)
    got = [(r["success"], r["steps"]) for r in through_ros]
    assert [r["seed"] for r in through_ros] == [SEED + i for i in range(EPISODES)]
    assert got == expected, f"through ROS {got} != in-process {expected}"
