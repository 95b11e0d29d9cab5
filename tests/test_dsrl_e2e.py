"""DSRL end to end on the toy goal problem: learning beats the base policy, checkpoints resume, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from embodied_steer.core.errors import ConfigError
from embodied_steer.dsrl.progress import read_curve
from embodied_steer.dsrl.toy import ToyFlowPolicy, ToyGoalEnv
from embodied_steer.dsrl.train import AdaptConfig, run_adapt

REPO = Path(__file__).resolve().parents[1]


def base_success(episodes: int, seed: int) -> float:
    """The toy base policy's success rate with its own standard-normal noise, on the eval seeds."""
    from embodied_steer.eval.runner import run_episode

    env, policy = ToyGoalEnv(), ToyFlowPolicy()
    return float(np.mean([run_episode(env, policy, episode=i, seed=seed + i).success for i in range(episodes)]))


def toy_config(out: Path, algo: str, **kw) -> AdaptConfig:
    values = dict(algo=algo, output_dir=str(out), total_env_steps=1600, eval_every=800, eval_episodes=20,
                  checkpoint_every=400, log_every=400, latent_mode="tile", hidden=[64, 64], batch_size=64, utd=1,
                  learning_starts=50, lr=1e-3, na_decode_batch=32)
    values.update(kw)
    return AdaptConfig(**values)


@pytest.mark.slow
def test_dsrl_sac_beats_the_base_policy_on_the_toy_problem(tmp_path):
    final = run_adapt(toy_config(tmp_path / "run", "dsrl_sac"), ToyGoalEnv, ToyFlowPolicy())
    base = base_success(20, 100_000)
    assert final["env_steps"] >= 1600
    assert final["success_rate"] >= base + 0.5, (final, base)
    assert (tmp_path / "run" / "curve.png").is_file() and (tmp_path / "run" / "adapter" / "actor.safetensors").is_file()
    assert any((tmp_path / "run" / "tb").rglob("events.out.tfevents*"))


@pytest.mark.slow
def test_dsrl_na_beats_the_base_policy_on_the_toy_problem(tmp_path):
    # NA learns through two critics (action space, then distilled to noise space): more steps, UTD 2
    final = run_adapt(toy_config(tmp_path / "run", "dsrl_na", total_env_steps=2400, utd=2), ToyGoalEnv, ToyFlowPolicy())
    assert final["success_rate"] >= base_success(20, 100_000) + 0.4, final


def _spy_on_evaluation(monkeypatch) -> list[bool]:
    """Wrap ``Progress.run_eval`` so that code can tell whether it runs inside an evaluation: the
    returned list is non-empty exactly while one runs."""
    from embodied_steer.dsrl.progress import Progress

    in_eval: list[bool] = []
    run_eval = Progress.run_eval

    def spy_eval(self, policy_act):
        in_eval.append(True)
        try:
            return run_eval(self, policy_act)
        finally:
            in_eval.pop()

    monkeypatch.setattr(Progress, "run_eval", spy_eval)
    return in_eval


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_na_training_episodes_act_with_the_deployed_latent_at_the_given_share(tmp_path, monkeypatch, share):
    from embodied_steer.dsrl import na
    from embodied_steer.dsrl.progress import Progress

    seen: list[tuple[int, bool]] = []  # (training episode, acted with the deterministic latent)
    in_eval = _spy_on_evaluation(monkeypatch)
    act, record = na.DSRLNA.act, Progress.record_step
    episode = [0]

    def spy_act(self, obs, deterministic, select=1, deployed=False):
        if not in_eval:
            seen.append((episode[0], deterministic))
            assert deployed == deterministic  # the deployed-latent episodes act as evaluation does
        return act(self, obs, deterministic, select, deployed)

    def spy_record(self, env_steps, end, success, episode_return):
        record(self, env_steps, end, success, episode_return)
        episode[0] = self.c.episodes

    monkeypatch.setattr(na.DSRLNA, "act", spy_act)
    monkeypatch.setattr(Progress, "record_step", spy_record)
    run_adapt(toy_config(tmp_path / "run", "dsrl_na", total_env_steps=800, eval_episodes=2, seed=3,
                         na_explore_deployed_share=share), ToyGoalEnv, ToyFlowPolicy())
    greedy = {e: d for e, d in seen}
    assert len(greedy) >= 20 and all(d == greedy[e] for e, d in seen)  # one choice per episode
    assert greedy == {e: na.acts_with_deployed_latent(3, e, share) for e in greedy}
    if share == 0.0:
        assert not any(greedy.values())
    elif share == 1.0:
        assert all(greedy.values())
    else:
        assert 0.2 < np.mean(list(greedy.values())) < 0.8


def test_the_share_of_deployed_latent_episodes_is_fixed_per_seed_and_episode():
    from embodied_steer.dsrl.na import acts_with_deployed_latent

    draws = [acts_with_deployed_latent(1, e, 0.25) for e in range(4000)]
    assert draws == [acts_with_deployed_latent(1, e, 0.25) for e in range(4000)]  # a resume chooses the same
    assert abs(np.mean(draws) - 0.25) < 0.03
    assert draws != [acts_with_deployed_latent(2, e, 0.25) for e in range(4000)]
    assert not any(acts_with_deployed_latent(1, e, 0.0) for e in range(100))


def test_na_actor_ema_is_what_the_adapter_and_evaluation_use(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from embodied_steer.dsrl import na

    evaluated_with: list[bool] = []
    act = na.DSRLNA.act
    in_eval = _spy_on_evaluation(monkeypatch)

    def spy_act(self, obs, deterministic, select=1, deployed=False):
        if in_eval:
            evaluated_with.append(deployed)
        return act(self, obs, deterministic, select, deployed)

    monkeypatch.setattr(na.DSRLNA, "act", spy_act)
    out = tmp_path / "run"
    run_adapt(toy_config(out, "dsrl_na", total_env_steps=200, checkpoint_every=100, eval_every=100, eval_episodes=2,
                         learning_starts=4, batch_size=8, na_decode_batch=8, hidden=[16], na_actor_ema=0.05),
              ToyGoalEnv, ToyFlowPolicy())
    assert evaluated_with and all(evaluated_with)
    nets = load_file(str(out / "checkpoint" / "networks.safetensors"))
    adapter = load_file(str(out / "adapter" / "actor.safetensors"))
    averaged = {k[len("actor_ema."):]: v for k, v in nets.items() if k.startswith("actor_ema.")}
    trained = {k[len("actor."):]: v for k, v in nets.items() if k.startswith("actor.")}
    assert averaged.keys() == adapter.keys() == trained.keys()
    assert all(torch.equal(adapter[k], averaged[k]) for k in adapter)
    assert not all(torch.equal(adapter[k], trained[k]) for k in adapter)


def _counters(out: Path) -> dict:
    return json.loads((out / "checkpoint" / "counters.json").read_text())


def test_na_resumes_with_counters_and_buffer_intact(tmp_path):
    out = tmp_path / "run"
    cfg = toy_config(out, "dsrl_na", total_env_steps=64, checkpoint_every=32, eval_every=1000, eval_episodes=2,
                     learning_starts=4, batch_size=8, na_decode_batch=8, hidden=[16])
    run_adapt(cfg, ToyGoalEnv, ToyFlowPolicy())
    first = _counters(out)["progress"]
    assert first["env_steps"] >= 64
    with np.load(out / "checkpoint" / "replay_buffer.npz") as z:
        assert int(z["size"]) == first["agent_steps"]
    cfg.total_env_steps, cfg.resume = 128, True
    run_adapt(cfg, ToyGoalEnv, ToyFlowPolicy())
    second = _counters(out)["progress"]
    assert second["env_steps"] >= 128 and second["agent_steps"] > first["agent_steps"]
    assert second["updates"] > first["updates"]
    with np.load(out / "checkpoint" / "replay_buffer.npz") as z:
        assert int(z["size"]) == second["agent_steps"]  # the old transitions were kept, new ones appended


@pytest.mark.parametrize("algo", ["dsrl_na", "dsrl_sac"])
def test_sensitivity_basis_is_computed_once_saved_with_the_adapter_and_reused_on_resume(tmp_path, monkeypatch, algo):
    from embodied_steer.dsrl import sensitivity
    from embodied_steer.dsrl.policy import load_noise_adapter

    out = tmp_path / "run"
    cfg = toy_config(out, algo, total_env_steps=48, checkpoint_every=24, eval_every=1000, eval_episodes=2,
                     learning_starts=4, batch_size=8, na_decode_batch=8, hidden=[16], latent_mode="project",
                     latent_dim=3, latent_basis="sensitivity", latent_basis_states=4)
    calls = []
    compute = sensitivity.compute_latent_map
    monkeypatch.setattr(sensitivity, "compute_latent_map", lambda *a, **kw: calls.append(a[1].shape) or compute(*a, **kw))
    run_adapt(cfg, ToyGoalEnv, ToyFlowPolicy())
    assert calls == [(4, 4)]  # four reset observations (no dataset): state 2 + goal 2
    saved = json.loads((out / "latent.json").read_text())
    assert saved["basis"] == "sensitivity" and np.array(saved["rows"]).shape == (3, 8)
    adapter = load_noise_adapter(out / "adapter")
    assert adapter.latent.basis == "sensitivity"
    assert torch.equal(adapter.latent.rows, torch.tensor(saved["rows"], dtype=torch.float32))
    # the toy's chunk moves entry by entry with its noise, so every latent direction moves the actions
    assert torch.allclose(adapter.latent.rows @ adapter.latent.rows.T, torch.eye(3), atol=1e-5)

    cfg.total_env_steps, cfg.resume = 96, True
    run_adapt(cfg, ToyGoalEnv, ToyFlowPolicy())
    assert calls == [(4, 4)]  # read back, not computed again
    assert _counters(out)["progress"]["env_steps"] >= 96
    assert load_noise_adapter(out / "adapter").latent.to_dict() == saved
    assert saved["scales"] and adapter.latent.scales is not None  # whitened by default

    cfg.total_env_steps, cfg.latent_basis_scale = 144, "unit"  # a different basis would change what the actor means
    with pytest.raises(ConfigError, match="latent_basis_scale=unit"):
        run_adapt(cfg, ToyGoalEnv, ToyFlowPolicy())
    assert _counters(out)["progress"]["env_steps"] < 144


def test_training_horizon_shortens_training_episodes_but_not_evaluation(tmp_path):
    out = tmp_path / "run"
    cfg = toy_config(out, "dsrl_na", total_env_steps=64, checkpoint_every=64, eval_every=1000, eval_episodes=2,
                     learning_starts=4, batch_size=8, na_decode_batch=8, hidden=[16], na_mc_bound=True,
                     train_horizon=6, train_horizon_cut="fail")
    run_adapt(cfg, ToyGoalEnv, ToyFlowPolicy())
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    lengths = np.diff([0] + [r["env_steps"] for r in rows])
    assert len(rows) >= 64 // 6 and lengths.max() == 6  # cut at 6 of the toy env's 16 steps
    with np.load(out / "checkpoint" / "replay_buffer.npz") as z:
        size, terminal, mc = int(z["size"]), z["terminal"], z["mc_return"]
    ended = int(terminal[:size].sum())
    assert ended >= len(rows)  # every cut is a terminal transition, so every finished episode's return is known
    assert np.isfinite(mc[:size]).sum() >= 2 * ended
    evals = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    assert max(e["mean_length"] for e in evals) > 6  # evaluation episodes still run to the env's 16 steps


def _short_run_keeping_adapters(out: Path, algo: str, eval_every: int, eval_episodes: int) -> Path:
    """A 64-step toy run with ``keep_eval_adapters=true``; its output folder."""
    run_adapt(toy_config(out, algo, total_env_steps=64, checkpoint_every=64, eval_every=eval_every,
                         eval_episodes=eval_episodes, learning_starts=4, batch_size=8, na_decode_batch=8, hidden=[16],
                         keep_eval_adapters=True), ToyGoalEnv, ToyFlowPolicy())
    return out


@pytest.mark.parametrize("algo", ["dsrl_na", "dsrl_sac"])
def test_keep_eval_adapters_saves_one_adapter_per_evaluation_and_resume_drops_later_ones(tmp_path, algo):
    from embodied_steer.dsrl.policy import load_noise_adapter
    from embodied_steer.dsrl.progress import truncate_logs

    out = _short_run_keeping_adapters(tmp_path / "run", algo, eval_every=24, eval_episodes=2)
    steps = [row["env_steps"] for row in read_curve(out)]
    saved = sorted((out / "adapters").iterdir())
    assert [int(p.name.removeprefix("step_")) for p in saved] == steps and len(steps) >= 3
    first, last = (load_noise_adapter(p) for p in (saved[0], saved[-1]))
    assert any(not torch.equal(first.actor.state_dict()[k], v) for k, v in last.actor.state_dict().items())
    (out / "adapters" / "step_00000099.tmp").mkdir()  # a write cut short by a kill
    truncate_logs(out, steps[1])  # what resuming from a checkpoint at the second evaluation does
    assert sorted(p.name for p in (out / "adapters").iterdir()) == [p.name for p in saved[:2]]


@pytest.mark.parametrize("algo", ["dsrl_na", "dsrl_sac"])
def test_best_adapter_is_the_snapshot_of_the_best_evaluation(tmp_path, algo):
    from embodied_steer.dsrl.policy import load_noise_adapter
    from embodied_steer.dsrl.progress import is_better, read_selection

    out = _short_run_keeping_adapters(tmp_path / "run", algo, eval_every=16, eval_episodes=4)
    curve = read_curve(out)
    best = None
    for row in curve:
        best = row if is_better(row, best) else best
    selection = read_selection(out)
    assert selection["env_steps"] == best["env_steps"] and selection["success_rate"] == best["success_rate"]
    assert selection["eval_seed"] == AdaptConfig.eval_seed and selection["eval_episodes"] == 4
    chosen = load_noise_adapter(out / "adapter_best").actor.state_dict()
    snapshot = load_noise_adapter(out / "adapters" / f"step_{best['env_steps']:08d}").actor.state_dict()
    assert all(torch.equal(chosen[k], v) for k, v in snapshot.items())


def _fake_run(out: Path, rates: list[float], best_at: int, keep: bool) -> list[int]:
    """A run folder with evaluations at 10, 20, … env steps of the given success rates, a best adapter
    chosen at ``best_at`` and, with ``keep``, one (marker) snapshot per evaluation."""
    steps = [10 * (i + 1) for i in range(len(rates))]
    out.mkdir(parents=True)
    (out / "curve.jsonl").write_text("".join(json.dumps({"env_steps": s, "success_rate": r}) + "\n"
                                             for s, r in zip(steps, rates)))
    for s in steps if keep else []:
        (out / "adapters" / f"step_{s:08d}").mkdir(parents=True)
        (out / "adapters" / f"step_{s:08d}" / "adapter.json").write_text(json.dumps({"marker": s}))
    (out / "adapter_best").mkdir()
    (out / "adapter_best" / "adapter.json").write_text(json.dumps({"marker": best_at}))
    (out / "adapter_best" / "selection.json").write_text(json.dumps({"env_steps": best_at, "eval_seed": 7,
                                                                     "success_rate": rates[steps.index(best_at)]}))
    return steps


def test_resume_restores_the_best_adapter_of_the_evaluations_it_keeps(tmp_path):
    from embodied_steer.dsrl.progress import read_selection, truncate_logs

    out = tmp_path / "run"
    _fake_run(out, [0.5, 0.7, 0.7, 0.9], best_at=40, keep=True)
    (out / "adapter_best.tmp").mkdir()  # a best-adapter write that a kill cut short
    truncate_logs(out, 30)  # resuming from a checkpoint at 30 env steps: the 0.9 evaluation is redone
    selection = read_selection(out)
    assert selection["env_steps"] == 30 and selection["success_rate"] == 0.7 and selection["eval_seed"] == 7
    assert json.loads((out / "adapter_best" / "adapter.json").read_text()) == {"marker": 30}  # ties: the later
    assert not (out / "adapter_best.tmp").exists()
    truncate_logs(out, 30)  # idempotent: a best at or before the checkpoint stays
    assert read_selection(out)["env_steps"] == 30


def test_resume_drops_a_later_best_adapter_it_cannot_rebuild(tmp_path, caplog):
    from embodied_steer.dsrl.progress import read_selection, truncate_logs

    out = tmp_path / "run"
    _fake_run(out, [0.5, 0.9], best_at=20, keep=False)
    truncate_logs(out, 10)
    assert read_selection(out) is None and not (out / "adapter_best").exists()
    assert "keep_eval_adapters=false" in caplog.text


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    from embodied_steer.core.errors import ConfigError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "something").write_text("x")
    with pytest.raises(ConfigError, match="resume=true"):
        run_adapt(toy_config(tmp_path / "run", "dsrl_sac"), ToyGoalEnv, ToyFlowPolicy())


@pytest.mark.parametrize("bad, message", [({"target_entropy": "high"}, "target_entropy"),
                                          ({"algo": "ppo"}, "algo"), ({"utd": 0}, "utd"),
                                          ({"na_select": 4}, "na_select"), ({"na_select_explore": 2}, "na_select_explore"),
                                          ({"na_act": "sample"}, "na_act"), ({"algo": "dsrl_na", "na_act": "median"}, "na_act"),
                                          ({"train_horizon": 0}, "train_horizon"),
                                          ({"train_horizon_cut": "drop"}, "train_horizon_cut"),
                                          ({"algo": "raw_sac", "keep_eval_adapters": True}, "keep_eval_adapters"),
                                          ({"na_actor_init": "zero_mean"}, "na_actor_init"),
                                          ({"algo": "dsrl_na", "na_actor_init": "zeros"}, "na_actor_init"),
                                          ({"na_actor_lr": 1e-4}, "na_actor_lr"),
                                          ({"algo": "dsrl_na", "na_actor_lr": 0}, "na_actor_lr"),
                                          ({"algo": "dsrl_na", "na_actor_lr": "slow"}, "na_actor_lr"),
                                          ({"algo": "dsrl_na", "na_explore_deployed_share": 1.5},
                                           "na_explore_deployed_share"),
                                          ({"na_explore_deployed_share": 0.5}, "na_explore_deployed_share"),
                                          ({"algo": "dsrl_na", "na_mc_mix": 0.5, "na_mc_bound": True}, "na_mc_mix"),
                                          ({"algo": "dsrl_na", "na_mc_mix": -0.1}, "na_mc_mix"),
                                          ({"na_mc_mix": 0.5}, "na_mc_mix"),
                                          ({"algo": "dsrl_na", "na_actor_ema": 1.0}, "na_actor_ema"),
                                          ({"na_actor_ema": 0.01}, "na_actor_ema"),
                                          ({"algo": "dsrl_na", "na_actor_ema_warmup": True}, "na_actor_ema_warmup"),
                                          ({"algo": "dsrl_na", "na_actor_ema": 0.01, "na_actor_ema_warmup": "yes"},
                                           "na_actor_ema_warmup"),
                                          ({"algo": "dsrl_na", "na_critic_dropout": 1.0}, "na_critic_dropout"),
                                          ({"na_critic_dropout": 0.1}, "na_critic_dropout"),
                                          ({"reward_shaping": "dense"}, "reward_shaping"),
                                          ({"reward_shaping": "lift", "shaping_scale": 2.0}, "shaping_scale"),
                                          ({"reward_shaping": "lift"}, "env_state"),
                                          ({"latent_basis": "pca"}, "latent_basis"),
                                          ({"latent_basis_scale": "max"}, "latent_basis_scale"),
                                          ({"latent_basis": "sensitivity"}, "latent_mode=project"),
                                          ({"latent_basis": "sensitivity", "latent_mode": "project", "latent_dim": 2,
                                            "latent_basis_states": 0}, "latent_basis_states")])
def test_bad_settings_are_named(tmp_path, bad, message):
    from embodied_steer.core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        run_adapt(toy_config(tmp_path / "run", **({"algo": "dsrl_sac"} | bad)), ToyGoalEnv, ToyFlowPolicy())
    assert not (tmp_path / "run").exists()  # nothing written for a refused config


@pytest.mark.slow
def test_killed_sac_run_resumes_from_its_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import torch; torch.set_num_threads(1)
        from embodied_steer.dsrl.train import AdaptConfig, run_adapt
        from embodied_steer.dsrl.toy import ToyFlowPolicy, ToyGoalEnv
        cfg = AdaptConfig(algo="dsrl_sac", output_dir={str(out)!r}, total_env_steps=10**6, eval_every=10**6,
                          eval_episodes=2, checkpoint_every=40, log_every=10**6, latent_mode="tile", hidden=[32],
                          batch_size=16, learning_starts=8)
        run_adapt(cfg, ToyGoalEnv, ToyFlowPolicy())
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            path = out / "checkpoint" / "counters.json"
            if path.is_file() and json.loads(path.read_text())["progress"]["env_steps"] >= 80:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        else:
            pytest.fail("no second checkpoint within 240 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = _counters(out)
    steps = saved["progress"]["env_steps"]
    cfg = AdaptConfig(algo="dsrl_sac", output_dir=str(out), total_env_steps=steps + 40, eval_every=10**6,
                      eval_episodes=2, checkpoint_every=40, log_every=10**6, latent_mode="tile", hidden=[32],
                      batch_size=16, learning_starts=8, resume=True)
    run_adapt(cfg, ToyGoalEnv, ToyFlowPolicy())
    after = _counters(out)
    assert after["progress"]["env_steps"] >= steps + 40
    assert after["num_timesteps"] > saved["num_timesteps"] and after["n_updates"] > saved["n_updates"]
    from stable_baselines3 import SAC

    from embodied_steer.dsrl.wrapper import LatentNoiseEnv

    model = SAC("MlpPolicy", LatentNoiseEnv(ToyGoalEnv(), ToyFlowPolicy(), latent_mode="tile"), buffer_size=1000)
    model.load_replay_buffer(out / "checkpoint" / "replay_buffer.pkl")
    assert model.replay_buffer.size() == after["num_timesteps"]  # every transition before the kill is still there
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in rows] == list(range(1, len(rows) + 1))  # no episode counted twice


@pytest.fixture
def toy_catalog(tmp_path, monkeypatch) -> Path:
    """A catalogue folder with the toy env (``env=toy_goal``, 16 steps) and policy (``policy=toy_flow``)."""
    catalog = tmp_path / "catalog"
    (catalog / "envs").mkdir(parents=True)
    (catalog / "policies").mkdir()
    (catalog / "envs" / "toy_goal.yaml").write_text("_target_: embodied_steer.dsrl.toy.ToyGoalEnv\nhorizon: 16\n")
    (catalog / "policies" / "toy_flow.yaml").write_text("_target_: embodied_steer.dsrl.toy.ToyFlowPolicy\n")
    monkeypatch.setenv("EMBODIED_STEER_CATALOG", str(catalog))
    return catalog


def test_adapt_and_eval_from_the_command_line(tmp_path, toy_catalog, capsys):
    from embodied_steer.cli import main

    out = tmp_path / "run"
    code = main(["adapt", "env=toy_goal", "policy=toy_flow", "total_env_steps=48", "eval_every=24", "eval_episodes=2",
                 "checkpoint_every=24", "learning_starts=4", "batch_size=8", "hidden=[16]", "latent_mode=tile",
                 f"output_dir={out}"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "adapter:" in printed and f"policy.adapter_path={out / 'adapter'}" in printed
    assert "best evaluation:" in printed and str(out / "adapter_best") in printed
    assert len(read_curve(out)) >= 2 and (out / "curve.png").is_file()
    for adapter in ("adapter", "adapter_best"):
        code = main(["eval", "env=toy_goal", "policy=dsrl", f"policy.adapter_path={out / adapter}", "episodes=2",
                     f"output_dir={tmp_path / ('eval_' + adapter)}"])
        assert code == 0
        summary = json.loads((tmp_path / ("eval_" + adapter) / "summary.json").read_text())
        assert summary["episodes"] == 2 and summary["policy"] == "toy_flow+dsrl"
    assert main(["adapt", "env=toy_goal", "policy=toy_flow", "algo=ppo"]) == 2
    assert "algo must be one of" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (Path(__file__).parents[1] / "embodied_steer" / "conf"
                                                            / "recipe").glob("*.yaml")))
def test_recipes_only_set_known_adapt_settings_and_the_command_line_wins(recipe):
    import dataclasses

    from omegaconf import OmegaConf

    from embodied_steer.cli import CONF_DIR, compose

    fields = {f.name for f in dataclasses.fields(AdaptConfig)}
    keys = set(OmegaConf.load(CONF_DIR / "recipe" / f"{recipe}.yaml")) - {"defaults"}  # a recipe may build on another
    # adapt_config() keeps only AdaptConfig fields, so a misspelt recipe key would be dropped without a word.
    assert keys <= fields, f"recipe {recipe} sets unknown settings {sorted(keys - fields)}"
    plain, composed = compose("adapt", []), compose("adapt", [f"recipe={recipe}", "seed=7"])
    assert composed.seed == 7
    assert any(composed[k] != plain[k] for k in keys)
    assert composed.env == plain.env and composed.policy == plain.policy  # a recipe leaves env/policy to the user


def test_the_projected_latent_recipe_is_the_lift_recipe_with_only_the_latent_changed():
    from embodied_steer.cli import compose

    base, proj = compose("adapt", ["recipe=lift_dsrl_na"]), compose("adapt", ["recipe=lift_dsrl_na_proj16"])
    assert {k for k in base if base[k] != proj[k]} == {"latent_mode", "latent_dim"}
    assert (proj.latent_mode, proj.latent_dim) == ("project", 16)
    assert compose("adapt", ["recipe=lift_dsrl_na_proj16", "latent_dim=8"]).latent_dim == 8


def test_lift_recipe_without_its_demonstrations_is_refused_before_anything_is_written(tmp_path, toy_catalog, capsys):
    from embodied_steer.cli import main

    out = tmp_path / "run"
    code = main(["adapt", "env=toy_goal", "policy=toy_flow", "recipe=lift_dsrl_na",
                 f"offline_dataset={tmp_path / 'no_demos'}", f"output_dir={out}"])
    assert code == 2
    assert "no LeRobot dataset" in capsys.readouterr().err
    assert not out.exists()
