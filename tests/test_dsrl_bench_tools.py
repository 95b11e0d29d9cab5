"""The helpers of the DSRL diagnosis benchmarks (benchmarks/bench_dsrl_actor_drift.py, bench_dsrl_random_actor.py,
bench_dsrl_snapshots.py, …)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_dsrl_actor_drift import buffer_states  # noqa: E402
from bench_dsrl_latent_landscape import LatentOverride  # noqa: E402
from bench_dsrl_random_actor import latent_norm, scaled_random_actor  # noqa: E402
from bench_dsrl_snapshot_average import average_actors  # noqa: E402
from bench_dsrl_snapshots import picked_step, pooled_line, targets  # noqa: E402

from embodied_steer.core.policy import NoiseSpec  # noqa: E402
from embodied_steer.dsrl.features import ObsFeatures  # noqa: E402
from embodied_steer.dsrl.latent import LatentNoiseMap  # noqa: E402
from embodied_steer.dsrl.networks import NoiseActor  # noqa: E402
from embodied_steer.dsrl.policy import load_noise_adapter, save_adapter  # noqa: E402


def _buffer(run: Path, obs: np.ndarray, size: int) -> None:
    (run / "checkpoint").mkdir(parents=True)
    np.savez(run / "checkpoint" / "replay_buffer.npz", obs=obs, size=np.int64(size))


def test_buffer_states_takes_only_the_filled_rows_evenly(tmp_path):
    obs = np.arange(100, dtype=np.float32)[:, None].repeat(3, 1)
    _buffer(tmp_path, obs, size=40)  # rows 40.. are unfilled capacity
    got = buffer_states(tmp_path, 5)
    assert got.shape == (5, 3)
    assert got[:, 0].tolist() == [0, 9, 19, 29, 39]
    assert buffer_states(tmp_path, 1000).shape == (40, 3)


def test_buffer_states_names_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="replay_buffer.npz"):
        buffer_states(tmp_path, 10)
    _buffer(tmp_path, np.zeros((4, 3), np.float32), size=0)
    with pytest.raises(SystemExit, match="holds no transitions"):
        buffer_states(tmp_path, 10)


@pytest.mark.parametrize("norm", [0.3, 2.5, 5.0])
def test_random_actor_is_scaled_to_the_asked_latent_norm(norm):
    torch.manual_seed(0)
    like = NoiseActor(6, 40, [32, 32], bound=1.0, layernorm=True)
    obs = torch.randn(256, 6)
    actor = scaled_random_actor(like, obs, norm, seed=3)
    assert latent_norm(actor, obs) == pytest.approx(norm, rel=0.01)
    # a random actor, not the trained one rescaled, and its latent still depends on the state
    assert not torch.allclose(actor.trunk[0].weight, like.trunk[0].weight)
    assert actor.deterministic(obs).std(0).mean() > 0.01
    again = scaled_random_actor(like, obs, norm, seed=3)
    assert torch.equal(actor.deterministic(obs), again.deterministic(obs))


def test_random_actor_refuses_a_norm_the_box_cannot_hold():
    like = NoiseActor(6, 4, [8], bound=1.0)
    with pytest.raises(SystemExit, match="--norm must be in"):
        scaled_random_actor(like, torch.randn(16, 6), 2.0, seed=0)  # 4 dims in ±1 reach at most 2


def _saved(folder: Path, hidden: list[int], seed: int):
    torch.manual_seed(seed)
    features = ObsFeatures(2, 2, 1)
    latent = LatentNoiseMap(NoiseSpec((4, 3), 3), "full", bound=1.5)
    actor = NoiseActor(features.dim, int(latent.latent_dim), hidden, latent.bound, layernorm=True)
    save_adapter(folder, actor, latent, features, hidden=hidden, base_config=None, algo="dsrl_na")
    return load_noise_adapter(folder)


def test_average_of_snapshots_is_the_parameter_mean(tmp_path):
    a, b, c = (_saved(tmp_path / f"s{i}", [8, 8], seed=i) for i in range(3))
    mean = average_actors([a, b, c])
    for name, value in mean.state_dict().items():
        expected = (a.actor.state_dict()[name] + b.actor.state_dict()[name] + c.actor.state_dict()[name]) / 3
        assert torch.allclose(value, expected, atol=1e-6), name
    assert mean.bound == a.actor.bound
    assert not mean.training
    assert torch.equal(average_actors([a]).mu.weight, a.actor.mu.weight)


def test_average_refuses_snapshots_of_another_layout(tmp_path):
    a, b = _saved(tmp_path / "a", [8, 8], seed=0), _saved(tmp_path / "b", [8, 16], seed=1)
    with pytest.raises(SystemExit, match="another actor layout"):
        average_actors([a, b])
    with pytest.raises(SystemExit, match="no snapshots"):
        average_actors([])


def test_failure_modes_classify_and_read_a_scripted_grasp():
    import logging

    from bench_lift_failure_modes import classify, run

    assert classify(True, 0.5, 0, 0.02) == "success"
    assert classify(False, 0.05, 0, 0.02) == "never_near"
    assert classify(False, 0.01, 0, 0.02) == "near_no_grasp"
    assert classify(False, 0.01, 3, 0.02) == "grasped_dropped"
    result = run("expert", ["policy=scripted_lift"], episodes=1, seed=0, near=0.02, log=logging.getLogger("test"))
    (episode,) = result["episodes_detail"]
    assert result["counts"]["success"] == 1 and episode["class"] == "success"
    assert episode["grasp_steps"] > 0 and episode["min_dist"] < 0.02 and episode["max_lift"] > 0.01
    # the eval config's episode settings are honoured: cut at 10 steps the expert is still on its way
    short = run("short", ["policy=scripted_lift", "max_steps=10"], episodes=1, seed=0, near=0.02,
                log=logging.getLogger("test"))["episodes_detail"][0]
    assert short["steps"] == 10 and short["class"] == "never_near"


def _run_with_best(run: Path, rates: list[float], best_at: int) -> None:
    run.mkdir(parents=True)
    (run / "curve.jsonl").write_text("".join(json.dumps({"env_steps": 10 * (i + 1), "success_rate": r}) + "\n"
                                             for i, r in enumerate(rates)))
    for i in range(len(rates)):
        (run / "adapters" / f"step_{10 * (i + 1):08d}").mkdir(parents=True)
        (run / "adapters" / f"step_{10 * (i + 1):08d}" / "adapter.json").write_text("{}")
    (run / "adapter_best").mkdir()
    (run / "adapter_best" / "selection.json").write_text(json.dumps({"env_steps": best_at,
                                                                     "success_rate": rates[best_at // 10 - 1]}))


def test_snapshot_targets_pick_the_best_adapter_and_agree_with_top_one(tmp_path):
    run = tmp_path / "run"
    _run_with_best(run, [0.4, 0.8, 0.8, 0.6], best_at=30)
    assert targets(run, None, False, best=True) == [(30, 0.8, run / "adapter_best")]
    assert targets(run, None, True, best=True) == [(30, 0.8, run / "adapter_best"),
                                                   (40, 0.6, run / "adapters" / "step_00000040")]
    # the rule adapt chose by is --top 1's: the same env steps
    assert [t[0] for t in targets(run, 1, False, best=False)] == [30]
    with pytest.raises(SystemExit, match="adapter_best"):
        targets(tmp_path / "missing", None, False, best=True)


def test_latent_override_acts_with_the_mean_latent_of_its_actors_plus_clipped_noise():
    from embodied_steer.dsrl.toy import ToyFlowPolicy, ToyGoalEnv
    from embodied_steer.sim.base import to_observation

    base = ToyFlowPolicy()
    latent = LatentNoiseMap(base.noise_spec, "tile", 1.5)
    features = ObsFeatures(2, 2, 1)
    torch.manual_seed(0)
    actors = [NoiseActor(4, 2, [16], 1.5) for _ in range(3)]
    history = [to_observation(ToyGoalEnv().reset(seed=5)[0])] * base.history_length
    vec = torch.as_tensor(features.from_history(history))[None]
    policy = LatentOverride(base, actors[0], latent, features)
    policy.set_actors(actors, 0.0, torch.Generator().manual_seed(0))
    expected = torch.stack([a.deterministic(vec) for a in actors]).mean(0)
    assert torch.allclose(policy.latent_for(history), expected)
    policy.set_actors(actors[:1], 0.0, torch.Generator().manual_seed(0))
    assert torch.allclose(policy.latent_for(history), actors[0].deterministic(vec))
    policy.set_actors(actors, 100.0, torch.Generator().manual_seed(0))  # huge noise: every entry on the box
    noisy = policy.latent_for(history)
    assert torch.all(noisy.abs() == 1.5) and not torch.equal(noisy, policy.latent_for(history))


def test_the_pick_is_the_selection_or_the_top_one_rule(tmp_path):
    run = tmp_path / "run"
    _run_with_best(run, [0.4, 0.8, 0.8, 0.6], best_at=20)  # selection.json names 20, the --top 1 rule 30
    assert picked_step(run) == 20
    (run / "adapter_best" / "selection.json").unlink()  # a run made before adapter_best/: the same rule
    assert picked_step(run) == 30


def test_pooled_line_sums_successes_and_episodes_with_a_wilson_interval():
    line = pooled_line("picks", [{"successes": 39, "episodes": 50}, {"successes": 34, "episodes": 50}])
    assert line == "pooled, picks: 73/100 (0.73, 95 % interval 0.64–0.81)"


def test_critic_rollout_scores_every_planned_chunk_of_the_deployed_adapter(tmp_path):
    from bench_dsrl_critic_fit import RecordingDSRLPolicy, load_critic, rollout_report

    from embodied_steer.dsrl.policy import DSRLPolicy
    from embodied_steer.dsrl.toy import ToyFlowPolicy, ToyGoalEnv
    from embodied_steer.dsrl.train import AdaptConfig, run_adapt
    from embodied_steer.eval.runner import run_episode

    run = tmp_path / "run"
    run_adapt(AdaptConfig(algo="dsrl_na", output_dir=str(run), total_env_steps=120, eval_every=1000, eval_episodes=2,
                          checkpoint_every=60, latent_mode="tile", hidden=[16], batch_size=8, na_decode_batch=8,
                          learning_starts=4, utd=1, gamma=0.9),
              ToyGoalEnv, ToyFlowPolicy(), base_config={"_target_": "embodied_steer.dsrl.toy.ToyFlowPolicy"})
    env, episodes, seed = ToyGoalEnv(), 6, 500
    got = rollout_report(run, env, episodes, seed)
    # the same adapter, run plainly: the recorder changes nothing about the episodes
    plain = DSRLPolicy.from_adapter(run / "adapter")
    results = [run_episode(env, plain, episode=i, seed=seed + i) for i in range(episodes)]
    assert got["successes"] == sum(r.success for r in results)
    first = got["by_index"][0]
    assert (first["from"], first["to"], first["n"]) == (0, 1, episodes)  # one first chunk per episode
    k = plain.info.execute_steps
    expected = np.mean([0.9 ** (r.steps - 1) if r.success else 0.0 for r in results])
    assert first["mc_all"] == pytest.approx(expected)
    # the first chunk's value is Q_W at the latent the adapter acted with there
    recorder = RecordingDSRLPolicy.from_adapter(run / "adapter")
    critic = load_critic(run, "q_w", int(recorder.latent.latent_dim), int(recorder.features.dim))
    q0 = []
    for i, r in enumerate(results):
        recorder.start_recording()
        run_episode(env, recorder, episode=i, seed=seed + i)
        assert len(recorder.recorded) == -(-r.steps // k)  # one latent per planned chunk
        obs, w = recorder.recorded[0]
        with torch.no_grad():
            np.testing.assert_allclose(w, plain.actor.deterministic(torch.as_tensor(obs)[None])[0].numpy(), rtol=1e-6)
            q0.append(critic(torch.as_tensor(obs)[None], torch.as_tensor(w)[None]).min(0).values.item())
    assert first["q_all"] == pytest.approx(np.mean(q0), rel=1e-5)
