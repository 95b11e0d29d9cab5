"""The online monitor beside a real (tiny, random) diffusion policy; logs, plots, bad samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embodied_steer.core.errors import UnsupportedIntervention
from embodied_steer.experts.scripted import LiftExpert
from embodied_steer.realm import AssistanceMonitor, AssistConfig, Mode, load_records, plot_assistance
from helpers import ACTION_DIM, lift_like_observation, tiny_diffusion_policy


@pytest.fixture(scope="module")
def policy():
    return tiny_diffusion_policy()


def test_monitor_with_tiny_diffusion_policy(policy, tmp_path):
    monitor = AssistanceMonitor(policy, AssistConfig(), samples=20, log_path=tmp_path / "assist.jsonl")
    rng = np.random.default_rng(0)
    policy.reset()
    for _ in range(4):
        rec = monitor.step(lift_like_observation(rng))
        assert rec.status == "ok"
        assert rec.recommended in {m.value for m in Mode}
        assert len(rec.entropy_steps) == policy.info.chunk_size
        assert rec.expected["teleop"] <= rec.expected["none"] + 1e-9
        assert len(rec.direction) == ACTION_DIM
        assert rec.sample_ms > 0 and rec.estimate_ms > 0
    lines = (tmp_path / "assist.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["step"] == 0
    records = load_records(tmp_path / "assist.jsonl")
    assert [r.step for r in records] == [0, 1, 2, 3]
    out = plot_assistance(records, tmp_path / "assist.png", title="tiny")
    assert out.stat().st_size > 1000
    summary = monitor.summary()
    assert summary["queries"] == 4 and sum(summary["recommended"].values()) == 4


def test_wrap_keeps_act_and_resets_per_episode(policy):
    from embodied_steer.eval.runner import default_act

    monitor = AssistanceMonitor(policy, samples=8)
    act = monitor.wrap(default_act)
    rng = np.random.default_rng(1)
    policy.reset()
    for episode in range(2):
        for t in range(3):
            obs = lift_like_observation(rng)
            obs = type(obs)(state=obs.state, env_state=obs.env_state, instruction=obs.instruction, timestamp=0.1 * t)
            chunk = act(policy, obs)
            assert chunk.actions.shape == (policy.info.chunk_size, ACTION_DIM)
    assert [r.episode for r in monitor.records] == [0, 0, 0, 1, 1, 1]
    assert [r.step for r in monitor.records] == [0, 1, 2, 0, 1, 2]


def test_bad_samples_never_raise(policy):
    monitor = AssistanceMonitor(policy, samples=8)
    good = np.random.default_rng(0).normal(0, 0.5, (8, 4, ACTION_DIM))
    first = monitor.estimate(good)
    bad = good.copy()
    bad[0, 0, 0] = np.nan
    rec = monitor.estimate(bad)
    assert rec.status.startswith("invalid") and "NaN" in rec.status
    assert rec.recommended == first.recommended  # recommendation held
    assert rec.entropy == pytest.approx(monitor.limits(ACTION_DIM).total_floor)
    assert monitor.estimate(good[:1]).status.startswith("invalid")
    same = monitor.estimate(np.zeros((8, 4, ACTION_DIM)))
    assert same.status == "ok" and same.best == "none"
    assert monitor.summary()["invalid"] == 2


def test_monitor_needs_samples_point():
    with pytest.raises(UnsupportedIntervention, match="samples"):
        AssistanceMonitor(LiftExpert(seed=0))


def test_assist_settings_reach_the_option_rules(policy, tmp_path):
    from embodied_steer.realm.monitor import monitor_from_settings

    m = monitor_from_settings({"enabled": True, "silhouette_min": 0.7, "option_gap_min": 5.0}, policy, tmp_path)
    assert m.config.silhouette_min == 0.7 and m.config.option_gap_min == 5.0
    with pytest.raises(ValueError, match="option_gap_min"):
        monitor_from_settings({"enabled": True, "option_gap_min": -1.0}, policy, tmp_path)


@pytest.mark.slow
def test_cli_eval_logs_assist(tmp_path):
    """`embodied-steer eval ... assist.enabled=true` writes assist.jsonl, a summary and plots."""
    from embodied_steer.cli import main

    out = tmp_path / "eval"
    rc = main(["eval", "env=nav_ambiguity", "policy=nav_diffusion", "episodes=1", "max_steps=24",
               "assist.enabled=true", "assist.samples=12", "torch_threads=1", f"output_dir={out}"])
    assert rc == 0
    lines = (out / "assist.jsonl").read_text().splitlines()
    assert len(lines) >= 3
    rec = json.loads(lines[0])
    assert rec["recommended"] in {m.value for m in Mode} and rec["status"] == "ok"
    assert json.loads((out / "assist_summary.json").read_text())["queries"] == len(lines)
    assert (out / "assist_episode_0000.png").is_file()
    assert main(["eval", "env=nav_ambiguity", "policy=nav_diffusion", "episodes=1", "+assist.bogus=1",
                 f"output_dir={tmp_path}/bad"]) == 2


def test_nav_env_and_demonstrator_ground_truth():
    from embodied_steer.sim.base import to_observation
    from embodied_steer.sim.nav_env import LABELS, NavAmbiguityEnv, NavDemonstrator, ground_truth

    env = NavAmbiguityEnv()
    demo = NavDemonstrator(seed=0)
    seen, branches = set(), set()
    for ep in range(10):
        obs, info = env.reset(seed=ep)
        demo.reset()
        for _ in range(env.horizon):
            seen.add(info["ground_truth"])
            obs, _, term, trunc, info = env.step(demo.act(to_observation(obs)).actions[0])
            if 1.1 < obs["state"][0] < 1.3:
                branches.add(float(np.sign(obs["state"][1])))
            if term or trunc:
                break
        assert info["is_success"]
    assert set(LABELS) <= seen and branches == {-1.0, 1.0}
    assert ground_truth(np.array([0.1, 0.0])) == "none"
    assert ground_truth(np.array([0.85, 0.0])) == "discrete"
    assert ground_truth(np.array([2.1, 0.0])) == "correction"
    assert ground_truth(np.array([3.15, 0.0])) == "teleop"
    assert ground_truth(np.array([1.9, 0.0])) == "transition"


def test_nav_range_sensor():
    """The forward range sensor (env_state[2]) reads the distance to the obstacle disc along +x."""
    from embodied_steer.sim.nav_env import NavAmbiguityEnv, NavLayout

    L = NavLayout()
    assert L.range_reading(0.1, 0.0) == pytest.approx(L.sensor_range)  # out of range
    assert L.range_reading(L.fork_x - 0.1, 0.0) == pytest.approx(0.1)  # disc front at fork_x
    assert L.range_reading(L.fork_x - 0.1, 0.2) == pytest.approx(L.fork_x + L.obstacle_r - np.sqrt(0.25**2 - 0.04) - (L.fork_x - 0.1))
    assert L.range_reading(L.fork_x + 0.05, 0.0) == 0.0  # touching / inside
    assert L.range_reading(L.fork_x - 0.1, 0.3) == pytest.approx(L.sensor_range)  # the ray misses
    assert L.range_reading(L.fork_x + L.obstacle_r + 0.01, 0.0) == pytest.approx(L.sensor_range)  # past it
    env = NavAmbiguityEnv()
    obs, _ = env.reset(seed=0)
    assert obs["env_state"].shape == (3,) and env.observation_space["env_state"].contains(obs["env_state"])
