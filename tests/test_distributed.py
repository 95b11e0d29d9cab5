"""Distributed evaluation on Ray: local Ray on loopback, sweeps, a killed worker, resume == uninterrupted.

One Ray instance and one worker pool are shared by the module (Ray start-up is slow on 2 cores);
the module finalizer shuts Ray down and checks that none of its processes is left.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from embodied_steer.cli import compose, main
from embodied_steer.core.errors import ConfigError
from embodied_steer.distributed import ExecutorSettings, WorkerPool, ray_session
from embodied_steer.eval.runner import EpisodeResult, ResultSink, read_results
from embodied_steer.eval.sweep import build_cells, grid_points, run_sweep

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "lift_diffusion"
# 2 settings (noise scale 1.0 and 0.5: the second uses the act function's own noise stream) x 4
# short episodes of the shipped Lift policy (16 steps = 2 chunks each).
SWEEP = ["episodes=4", "grid.intervention.noise_scale=[1.0,0.5]", 'overrides=["env.horizon=16"]']
pytestmark = pytest.mark.skipif(not SHIPPED.exists(), reason="shipped checkpoint missing")


def _ray_processes() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)]


@pytest.fixture(scope="module")
def ray_pool():
    settings = ExecutorSettings(kind="ray", workers=2)
    with ray_session(settings, num_cpus=4):  # room for the CLI test's own pool next to the shared one
        started = _ray_processes()
        with WorkerPool(2, torch_threads=1) as pool:
            yield pool, started
    deadline = time.time() + 30
    alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    while alive and time.time() < deadline:
        time.sleep(0.5)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"Ray processes left after shutdown: {[(p.pid, p.name()) for p in alive]}"


def sweep_cfg(tmp: Path, *extra: str, kind: str = "ray"):
    return compose("sweep", [*SWEEP, f"output_dir={tmp}", f"executor.kind={kind}", *extra])


def outcomes(folder: Path) -> dict[str, list[tuple]]:
    """Cell name → [(episode, seed, success, steps, reward, status)] read from its episodes.jsonl."""
    found = {}
    for records in sorted(folder.glob("*/episodes.jsonl")):
        lines = [json.loads(x) for x in records.read_text().splitlines()]
        assert len({r["episode"] for r in lines}) == len(lines), f"an episode counted twice in {records}"
        found[records.parent.name] = sorted((r["episode"], r["seed"], r["success"], r["steps"], r["reward"],
                                             r["status"]) for r in lines)
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep run uninterrupted, in this process (the classic evaluator)."""
    out = tmp_path_factory.mktemp("reference")
    rows, counts = run_sweep(sweep_cfg(out, kind="inprocess"), progress=False)
    assert counts["cells"] == 2 and [r.episodes for r in rows] == [4, 4]
    return outcomes(out)


def test_local_ray_is_loopback_only_without_usage_stats(ray_pool):
    pool, started = ray_pool
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert any("raylet" in p.name() or "gcs_server" in p.name() for p in started)
    listening = []
    for proc in _ray_processes():
        try:
            listening += [c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    assert listening, "found no listening Ray socket to check"
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in listening), listening
    workers = pool.describe()
    assert len({w["pid"] for w in workers}) == 2
    import embodied_steer

    assert all(w["module"] == embodied_steer.__file__ and w["torch_threads"] == 1 for w in workers)


def test_sweep_survives_a_killed_worker_and_counts_every_episode_once(ray_pool, reference, tmp_path):
    pool, _ = ray_pool
    victim = pool.describe()[0]["pid"]
    killed = []

    def kill_once(cell, result):
        if not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    rows, counts = run_sweep(sweep_cfg(tmp_path), on_result=kill_once, progress=False, pool=pool)
    assert killed == [victim]
    assert counts["worker_deaths"] == 1 and counts["retried"] >= 1
    assert counts["executed"] == 8 and [r.episodes for r in rows] == [4, 4]
    assert outcomes(tmp_path) == reference  # retried episodes give the same results, each once
    assert victim not in {w["pid"] for w in pool.describe()}  # the dead worker was replaced
    for cell in tmp_path.glob("*-seed1000"):
        summary = json.loads((cell / "summary.json").read_text())
        assert summary["episodes"] == 4 and summary["env"] == "lift" and summary["policy"] == "lift_diffusion"
        assert (cell / "plot.png").exists() and (cell / "episodes.csv").exists()
    assert (tmp_path / "sweep.png").exists() and len(list((tmp_path / "settings").glob("*.png"))) == 2
    assert "noise_scale" in (tmp_path / "summary.md").read_text()


class Interrupt(Exception):
    pass


def test_interrupted_then_resumed_sweep_equals_uninterrupted(ray_pool, reference, tmp_path):
    pool, _ = ray_pool
    seen = []

    def stop_after_three(cell, result):
        seen.append(result.episode)
        if len(seen) == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_sweep(sweep_cfg(tmp_path), on_result=stop_after_three, progress=False, pool=pool)
    assert sum(len(v) for v in outcomes(tmp_path).values()) == 3
    rows, counts = run_sweep(sweep_cfg(tmp_path), progress=False, pool=pool)
    assert counts["resumed"] == 3 and counts["executed"] == 5 and counts["duplicates_dropped"] == 0
    assert outcomes(tmp_path) == reference
    # nothing left to do: a third run executes nothing and summarises from disk
    rows, counts = run_sweep(sweep_cfg(tmp_path), progress=False, pool=pool)
    assert counts["executed"] == 0 and [r.episodes for r in rows] == [4, 4]


def test_resume_refuses_a_folder_of_another_configuration(ray_pool, tmp_path):
    pool, _ = ray_pool
    run_sweep(sweep_cfg(tmp_path, "episodes=1", "grid.intervention.noise_scale=[1.0]"), progress=False, pool=pool)
    with pytest.raises(ConfigError, match="different configuration"):
        run_sweep(sweep_cfg(tmp_path, "episodes=1", "grid.intervention.noise_scale=[1.0]",
                            'overrides=["env.horizon=12"]'), progress=False, pool=pool)


def test_a_cell_that_cannot_be_built_stops_the_sweep_with_its_error(ray_pool, tmp_path):
    from embodied_steer.distributed import DistributedError

    pool, _ = ray_pool
    with pytest.raises(DistributedError, match="expects env_state of 10 values"):
        run_sweep(sweep_cfg(tmp_path, "episodes=1", "grid.env=[pickplace_can]"), progress=False, pool=pool)


@pytest.mark.slow
def test_cli_eval_on_ray_writes_the_in_process_results_folder(ray_pool, tmp_path, capsys):
    args = ["episodes=2", "env.horizon=16", "torch_threads=1"]
    assert main(["eval", *args, f"output_dir={tmp_path}/inproc"]) == 0
    assert main(["eval", *args, "executor.kind=ray", f"output_dir={tmp_path}/ray"]) == 0
    assert "ray: 2 episodes run on 2 workers" in capsys.readouterr().out
    for name in ("config.yaml", "episodes.jsonl", "episodes.csv", "summary.json", "plot.png"):
        assert (tmp_path / "ray" / name).exists(), name

    def key(folder):
        return {i: (r.seed, r.success, r.steps, r.reward) for i, r in read_results(folder / "episodes.jsonl").items()}

    assert key(tmp_path / "ray") == key(tmp_path / "inproc") and len(key(tmp_path / "ray")) == 2


# ------------------------------------------------------------------------------ no Ray needed
def test_grid_is_the_product_of_its_lists_and_names_bad_axes():
    points = grid_points({"env": ["lift"], "policy": ["p"], "seed": [1, 2], "task": [None],
                          "intervention": {"noise_scale": [1.0, 0.5]}})
    assert [(p["seed"], p["intervention"]["noise_scale"]) for p in points] == [(1, 1.0), (1, 0.5), (2, 1.0), (2, 0.5)]
    with pytest.raises(ConfigError, match="unknown grid axes \\['suite'\\]"):
        grid_points({"env": ["lift"], "policy": ["p"], "seed": [1], "suite": ["x"]})
    with pytest.raises(ConfigError, match="grid.seed is empty"):
        grid_points({"env": ["lift"], "policy": ["p"], "seed": []})


def test_sweep_cells_compose_like_eval(tmp_path):
    cfg = compose("sweep", ["grid.task=[0,1]", "grid.env=[libero_spatial]", "grid.policy=[pi0]",
                            "grid.intervention.noise_scale=[0.5]", "episodes=3", f"output_dir={tmp_path}"])
    cells = build_cells(cfg, tmp_path)
    assert [c.name for c in cells] == ["libero_spatial-task0-pi0-noise_scale=0.5-seed1000",
                                       "libero_spatial-task1-pi0-noise_scale=0.5-seed1000"]
    assert [c.cfg["env"]["task"] for c in cells] == [0, 1] and cells[0].cfg["intervention"]["noise_scale"] == 0.5
    assert cells[0].episodes == 3 and cells[0].seed == 1000


def test_executor_settings_are_checked():
    with pytest.raises(ConfigError, match="executor.kind must be one of"):
        ExecutorSettings.from_config({"kind": "dask"})
    with pytest.raises(ConfigError, match="executor.workers must be >= 1"):
        ExecutorSettings.from_config({"kind": "ray", "workers": 0})
    with pytest.raises(ConfigError, match="unknown executor settings \\['nodes'\\]"):
        ExecutorSettings.from_config({"nodes": 3})


def test_results_reader_drops_torn_lines_and_duplicates(tmp_path):
    path = tmp_path / "episodes.jsonl"

    def row(i, steps):
        return EpisodeResult(episode=i, seed=i, success=False, steps=steps, reward=0.0, seconds=0.0,
                             inference_seconds=0.0)

    with ResultSink(path) as sink:
        sink.append(row(0, 5))
        sink.append(row(1, 6))
        sink.append(row(0, 99))  # a second copy of episode 0: the first one counts
    with open(path, "a") as f:
        f.write('{"episode": 2, "seed"')  # a write torn by a crash
    found = read_results(path)
    assert sorted(found) == [0, 1] and found[0].steps == 5


@pytest.mark.slow
def test_run_rollouts_returns_transitions_equal_to_in_process_episodes(ray_pool):
    """The generic collection primitive (what DSRL can use): N seeded rollouts on Ray workers."""
    import functools
    import sys

    import numpy as np
    import ray

    from embodied_steer.adapters.lerobot_diffusion import LeRobotDiffusionPolicy
    from embodied_steer.distributed import run_rollouts
    from embodied_steer.eval.runner import run_episode
    from embodied_steer.sim.robosuite_env import RobosuiteEnv

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test file
    make_env = functools.partial(RobosuiteEnv, "Lift", horizon=12)
    rollouts = run_rollouts(make_env, lambda env: LeRobotDiffusionPolicy.from_pretrained(SHIPPED),
                            seeds=[5, 6, 7], workers=2)
    assert [r.result.seed for r in rollouts] == [5, 6, 7]
    for r in rollouts:
        assert r.result.status == "ok" and r.actions.shape == (12, 7) and r.rewards.shape == (12,)
        assert len(r.observations) == 13 and len(r.act_info) == 2 and r.truncated[-1]
    from embodied_steer.distributed.rollouts import _Recorder

    env, policy = _Recorder(make_env()), LeRobotDiffusionPolicy.from_pretrained(SHIPPED)
    local = run_episode(env, policy, episode=0, seed=6)
    env.close()
    assert (local.steps, local.reward) == (rollouts[1].result.steps, rollouts[1].result.reward)
    # bit-identical trajectories across processes (needs RobosuiteEnv's model_seed: Lift's cube size)
    np.testing.assert_array_equal(np.stack(env.actions), rollouts[1].actions)
    for key in ("state", "env_state"):
        np.testing.assert_array_equal(env.observations[-1][key], rollouts[1].observations[-1][key])


def test_noise_intervention_noise_depends_only_on_the_episode_seed():
    """What makes distributed and resumed noise-scale runs equal: reset(seed) restarts the stream."""
    import torch

    from embodied_steer.eval.interventions import ScaledNoiseAct

    a, b = ScaledNoiseAct(0.5, noise_seed=3, shape=(4, 2)), ScaledNoiseAct(0.5, noise_seed=3, shape=(4, 2))
    torch.randn(10, generator=b.generator)  # b has run other episodes before
    a.reset(1001)
    b.reset(1001)
    first = torch.randn(8, generator=a.generator)
    assert torch.equal(first, torch.randn(8, generator=b.generator))
    a.reset(1002)
    assert not torch.equal(first, torch.randn(8, generator=a.generator))
    c = ScaledNoiseAct(0.5, noise_seed=4, shape=(4, 2))
    c.reset(1001)
    assert not torch.equal(first, torch.randn(8, generator=c.generator))
