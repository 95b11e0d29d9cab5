"""The evaluation main job: runner, results folder, command line, and its errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embodied_steer.cli import main
from embodied_steer.core import ActionChunk, InterventionPoint, PolicyInfo, SteerablePolicy
from embodied_steer.core.types import ActionBounds
from embodied_steer.eval.runner import evaluate
from embodied_steer.sim.robosuite_env import RobosuiteEnv

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "lift_diffusion"


class FlakyPolicy(SteerablePolicy):
    """Moves up; produces NaN in the episodes listed in ``bad`` (to test crash handling)."""

    def __init__(self, bad=()):
        super().__init__(PolicyInfo("flaky", chunk_size=4, execute_steps=4, action_bounds=ActionBounds.symmetric(7)))
        self.bad, self.episode, self.calls = set(bad), -1, 0

    def reset(self, seed=None):
        super().reset(seed)
        self.episode += 1

    def _generate(self, history, n, noise, cb):
        self.calls += 1
        a = np.zeros((n, 4, 7), np.float32)
        a[..., 2] = 0.3
        if self.episode in self.bad:
            a[0, 0, 0] = np.nan
        return a


@pytest.fixture(scope="module")
def lift():
    env = RobosuiteEnv("Lift", horizon=12)
    yield env
    env.close()


def test_results_folder_and_crash_recorded_without_losing_other_episodes(lift, tmp_path):
    summary = evaluate(lift, FlakyPolicy(bad={1}), episodes=3, seed=5, output_dir=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in records] == [0, 1, 2] and [r["seed"] for r in records] == [5, 6, 7]
    assert records[1]["status"] == "crashed" and "NaN" in records[1]["error"]
    assert records[0]["status"] == records[2]["status"] == "ok" and records[0]["steps"] == 12
    assert summary.crashed == 1 and summary.episodes == 3 and summary.successes == 0
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["render_settings"]["shadow_size"] == 4096 and saved["ci95"][0] == 0.0
    assert (tmp_path / "plot.png").stat().st_size > 1000 and (tmp_path / "episodes.csv").exists()


def test_chunks_are_executed_for_execute_steps_before_replanning(lift, tmp_path):
    policy = FlakyPolicy()
    evaluate(lift, policy, episodes=1, seed=0, output_dir=tmp_path, execute_steps=3)
    assert policy.calls == 4  # 12 steps / 3 actions per chunk


def test_resume_skips_finished_episodes(lift, tmp_path):
    evaluate(lift, FlakyPolicy(), episodes=2, seed=0, output_dir=tmp_path)
    policy = FlakyPolicy()
    summary = evaluate(lift, policy, episodes=3, seed=0, output_dir=tmp_path, resume=True)
    assert summary.episodes == 3 and policy.episode == 0  # only the third episode was run
    lines = (tmp_path / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(x)["episode"] for x in lines] == [0, 1, 2]


def run_cli(*args: str) -> int:
    return main(["eval", *args])


@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped checkpoint missing")
def test_cli_eval_on_the_shipped_policy_writes_everything(tmp_path, capsys):
    rc = run_cli("episodes=2", "env.horizon=40", f"output_dir={tmp_path}", "torch_threads=1")
    out = capsys.readouterr().out
    assert rc == 0 and "success rate" in out and "lift_diffusion" in out
    for name in ("config.yaml", "episodes.jsonl", "episodes.csv", "summary.json", "plot.png"):
        assert (tmp_path / name).exists(), name
    assert "horizon: 40" in (tmp_path / "config.yaml").read_text()


@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped checkpoint missing")
def test_noise_scale_zero_makes_the_policy_deterministic(tmp_path):
    from embodied_steer.adapters.lerobot_diffusion import LeRobotDiffusionPolicy
    from embodied_steer.eval.interventions import make_act_fn
    from embodied_steer.sim.base import to_observation

    env = RobosuiteEnv("Lift", horizon=5)
    obs = to_observation(env.reset(seed=0)[0], env.instruction)
    env.close()
    outs = []
    for seed in (0, 1):
        policy = LeRobotDiffusionPolicy.from_pretrained(SHIPPED, seed=seed)
        act = make_act_fn({"noise_scale": 0.0, "noise_seed": seed}, policy)
        outs.append(act(policy, obs).actions)
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
    with pytest.raises(ValueError, match="unknown intervention settings \\['nosie_scale'\\]"):
        make_act_fn({"nosie_scale": 0.5}, policy)


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert run_cli("env=no_such_env") == 2
    err = capsys.readouterr().err
    assert "no_such_env" in err and "available env options" in err and "lift" in err
    assert run_cli("policy=lift_diffusion", f"policy.path_or_hub_id={tmp_path}/missing") == 2
    assert "no checkpoint folder at" in capsys.readouterr().err
    assert run_cli("policy=scripted_lift", "intervention.noise_scale=0.5", f"output_dir={tmp_path}/o") == 2
    assert "'noise' intervention point" in capsys.readouterr().err
    assert run_cli("env=pickplace_can", "policy=lift_diffusion", f"output_dir={tmp_path}/p") == 2
    assert "expects env_state of 10 values, env 'pickplace_can' gives 14" in capsys.readouterr().err


def test_state_size_mismatch_is_reported_before_running(tmp_path, capsys):
    from embodied_steer.cli import _check_compatible
    from embodied_steer.core import ConfigError

    class Wide(FlakyPolicy):
        def __init__(self):
            super().__init__()
            self.info.state_dim = 12

    env = RobosuiteEnv("Lift", horizon=2)
    with pytest.raises(ConfigError, match="expects state of 12 values, env 'lift' gives 9"):
        _check_compatible(env, Wide())
    env.close()


def test_console_script_lists_the_catalogues():
    exe = Path(sys.executable).with_name("embodied-steer")
    out = subprocess.run([str(exe), "list"], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "lift_diffusion" in out and "pickplace_can" in out and "scripted_lift" in out


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped checkpoint missing")
def test_shipped_policy_succeeds_where_the_untrained_one_does_not():
    """The shipped weights must beat the same network with random weights on the same seeds."""
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    from embodied_steer.adapters.lerobot_diffusion import LeRobotDiffusionPolicy
    from embodied_steer.eval.runner import run_episode

    env = RobosuiteEnv("Lift", horizon=200)
    trained = LeRobotDiffusionPolicy.from_pretrained(SHIPPED)
    untrained = LeRobotDiffusionPolicy(DiffusionPolicy(trained.policy.config), trained.preprocessor,
                                       trained.postprocessor, name="untrained")
    won = [run_episode(env, trained, episode=i, seed=1000 + i).success for i in range(12)]
    lost = [run_episode(env, untrained, episode=i, seed=1000 + i, max_steps=100).success for i in range(4)]
    env.close()
    assert sum(won) >= 3 and sum(lost) == 0  # measured: 7 of these 12 (44% over 50 episodes)


@pytest.mark.slow
def test_videos_are_written_for_camera_envs(tmp_path):
    env = RobosuiteEnv("Lift", cameras=["agentview"], image_size=(64, 64), shadow_size=512,
                       offscreen_samples=0, horizon=8)
    try:
        evaluate(env, FlakyPolicy(), episodes=2, seed=0, output_dir=tmp_path, video_every=2)
    finally:
        env.close()
    records = [json.loads(x) for x in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert records[0]["video"].endswith("episode_0000.mp4") and records[1]["video"] is None
    import imageio.v3 as iio

    frames = iio.imread(records[0]["video"], plugin="pyav")
    assert frames.shape[0] == 8 and frames.shape[1:3] == (64, 64)


def test_videos_need_cameras(lift, tmp_path):
    with pytest.raises(ValueError, match="videos need an environment that renders cameras"):
        evaluate(lift, FlakyPolicy(), episodes=1, seed=0, output_dir=tmp_path, video_every=1)


def test_resumed_evaluation_equals_an_uninterrupted_one(lift, tmp_path):
    """A stochastic policy re-seeded per episode gives the same episodes whether or not the run was split."""
    from helpers import tiny_diffusion_policy

    def outcomes(folder):
        rows = [json.loads(x) for x in (folder / "episodes.jsonl").read_text().splitlines()]
        return [(r["episode"], r["seed"], r["steps"], r["reward"], r["success"]) for r in rows]

    actions = {}

    def recording_act(tag):
        def act(policy, obs):
            chunk = policy.act(obs)
            actions.setdefault(tag, []).append(chunk.actions.copy())
            return chunk
        return act

    evaluate(lift, tiny_diffusion_policy(), episodes=3, seed=0, output_dir=tmp_path / "full", act=recording_act("full"))
    evaluate(lift, tiny_diffusion_policy(), episodes=2, seed=0, output_dir=tmp_path / "split", act=recording_act("a"))
    evaluate(lift, tiny_diffusion_policy(), episodes=3, seed=0, output_dir=tmp_path / "split", resume=True,
             act=recording_act("b"))
    assert outcomes(tmp_path / "full") == outcomes(tmp_path / "split")
    np.testing.assert_array_equal(np.stack(actions["full"]), np.stack(actions["a"] + actions["b"]))
