"""Through ROS a policy must do exactly what it does in-process: the simulated arm (lockstep) seeds the
policy server per episode, so each episode's outcome and length equal ``embodied-steer eval``'s with
the same seeds — for the untouched shipped policy, with the DSRL noise actor switched on through
``steering.settings``, and with reward-guided sampling fed by the arm description and keypoint topics."""

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

# (env, steering.settings, eval overrides, first seed, episodes)
CASES = {
    # in-process: three successes after 43, 56 and 28 steps — a shifted action would show
    "untouched": ("lift", "", [], 1005, 3),
    "dsrl": ("lift", {"dsrl": "checkpoints/lift_dsrl"}, ["intervention.dsrl=checkpoints/lift_dsrl"], 100000, 2),
    "guided": ("lift_ood", {"guide": "grad"}, ["guide=grad"], 1000, 1),
}


def in_process(env_name: str, overrides: list[str], episodes: int, seed: int) -> list[tuple[bool, int]]:
    import torch

    from embodied_steer.cli import build_act_fn, compose, instantiate_env, instantiate_policy
    from embodied_steer.eval.runner import run_episode

    torch.set_num_threads(1)
    cfg = compose("eval", [f"env={env_name}", "policy=lift_diffusion", *overrides])
    env = instantiate_env(cfg.env)
    policy = instantiate_policy(cfg.policy, env)
    act = build_act_fn(cfg, policy, env)
    try:
        return [(r.success, r.steps) for r in (run_episode(env, policy, episode=i, seed=seed + i, act=act)
                                               for i in range(episodes))]
    finally:
        env.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_episodes_through_ros_equal_in_process(tmp_path, case):
    env_name, settings, overrides, seed, episodes = CASES[case]
    params = tmp_path / "steering.yaml"
    params.write_text(json.dumps({"/policy_server": {"ros__parameters": {
        "steering.settings": json.dumps(settings) if settings else ""}}}))
    shm_before = shm_entries()
    env = loopback_env(tmp_path, next_domain_id())
    planned = plan_launch(ROOT / "launch" / "sim_loop.launch.xml", [install(tmp_path / "install")],
                          {"episodes": str(episodes), "seed": str(seed), "env": env_name,
                           "steering_params": str(params)})
    nodes = {n.name: NodeProcess(n.name, n.argv(), env, cwd=str(tmp_path)) for n in planned}
    try:
        nodes["sim_arm"].wait_for("DONE", timeout=600)
        through_ros = [json.loads(line[len("EPISODE "):]) for line in nodes["sim_arm"].find("EPISODE")]
    finally:
        for node in nodes.values():
            node.stop()
    stats = nodes["policy_server"].find("STATS")
    assert all(not n.group_alive() for n in nodes.values())
    assert shm_entries() - shm_before == set()
    expected = in_process(env_name, overrides, episodes, seed)
    got = [(r["success"], r["steps"]) for r in through_ros]
    assert [r["seed"] for r in through_ros] == [seed + i for i in range(episodes)]
    assert got == expected, f"through ROS {got} != in-process {expected}\n{stats}"
    counters = dict(kv.split("=") for kv in stats[-1].split()[2:]) if stats else {}
    if case == "dsrl":
        assert int(counters["dsrl_chunks"]) == int(counters["chunks"]) > 0, counters
    if case == "guided":
        assert int(counters["guided_chunks"]) == int(counters["chunks"]) > 0, counters
        assert int(counters["guide_fallbacks"]) == 0, counters
