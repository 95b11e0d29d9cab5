"""The small token VLA: tokenisation, the shipped checkpoint, its module map, sampling, retraining."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from embodied_steer.adapters.token_vla import (
    N_BINS,
    TokenVLAPolicy,
    VLAConfig,
    VLATokenizer,
    build_tokenizer,
    decode,
    load_checkpoint,
    save_checkpoint,
)
from embodied_steer.core.policy import InterventionPoint
from embodied_steer.core.types import Observation

REPO = Path(__file__).resolve().parents[1]
# steering test: neurons, clamp value, and the least rise of the mean predicted z action (env units)
STEER_K, STEER_C, STEER_MIN_DZ = 32, 3.0, 0.1
SHIPPED = REPO / "checkpoints" / "lift_token_vla"


def lift_observation(seed: int = 0, instruction: str = "lift the red cube") -> Observation:
    """A plausible Lift observation: gripper above the table, cube on it (world frame, metres)."""
    rng = np.random.default_rng(seed)
    eef = np.array([-0.1, 0.0, 1.0]) + rng.uniform(-0.03, 0.03, 3)
    cube = np.array([0.0, 0.0, 0.83]) + np.append(rng.uniform(-0.03, 0.03, 2), 0.0)
    state = np.concatenate([eef, [1.0, 0.0, 0.0, 0.0], [0.02, -0.02]]).astype(np.float32)
    env_state = np.concatenate([cube, [0.0, 0.0, 0.0, 1.0], eef - cube]).astype(np.float32)
    return Observation(state=state, env_state=env_state, instruction=instruction)


def held_out_observations() -> list[Observation]:
    """64 fixed observations from demonstration episodes the shipped model was not trained on
    (every phase: reach, descend, grasp, lift), stored in ``tests/data/lift_observations.npz``."""
    data = np.load(REPO / "tests" / "data" / "lift_observations.npz")
    return [Observation(state=s, env_state=e, instruction="lift the red cube")
            for s, e in zip(data["state"], data["env_state"])]


def tiny_config() -> VLAConfig:
    return VLAConfig(
        hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, num_patches=2, projector_hidden=32,
        obs_mean=[0.0] * 19, obs_std=[1.0] * 19,
        action_q01=[-1, -1, -1, 0, 0, 0, -1], action_q99=[1, 1, 1, 0, 0, 0, 1],
    )


def test_tokenizer_puts_action_bins_last_and_round_trips():
    cfg = tiny_config()
    tok = VLATokenizer(build_tokenizer(), cfg)
    assert tok.bin_offset == tok.vocab_size - N_BINS
    assert tok.id_to_token(tok.vocab_size - 1) == "<bin_255>"
    for word in ("up", "down", "lift", "fast", "slow", "careful", "cube", "gripper", "open", "close"):
        assert tok.token_id(word) < tok.bin_offset
    assert tok.unk_id not in tok.encode_words("pick up the cube")
    actions = np.array([[0.3, -0.7, 1.0, 0.0, 0.0, 0.0, -1.0], [-1.0, 0.01, -0.2, 0.0, 0.0, 0.0, 1.0]], np.float32)
    bins = tok.to_bins(actions)
    assert bins.min() >= 0 and bins.max() <= N_BINS - 1
    back = tok.from_bins(bins)
    half_bin = (2.0 / (N_BINS - 1)) / 2
    np.testing.assert_allclose(back, actions, atol=half_bin + 1e-6)  # q01..q99 = -1..1 here
    np.testing.assert_array_equal(back[:, 3:6], 0.0)  # constant dimensions pass through


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    from embodied_steer.adapters.token_vla import TokenVLA

    cfg = tiny_config()
    tok = VLATokenizer(build_tokenizer(), cfg)
    model = TokenVLA(cfg, tok.vocab_size).eval()
    save_checkpoint(tmp_path, model, tok)
    loaded, tok2 = load_checkpoint(tmp_path)
    obs = torch.randn(3, 19)
    a = decode(model, tok, obs, "lift the red cube")
    b = decode(loaded, tok2, obs, "lift the red cube")
    assert torch.equal(a["bins"], b["bins"]) and torch.equal(a["plan"], b["plan"])


def test_incomplete_checkpoint_is_a_clear_error(tmp_path):
    from embodied_steer.core.errors import CheckpointError

    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path)


# ------------------------------------------------------------------------------ shipped checkpoint
@pytest.fixture(scope="module")
def shipped() -> TokenVLAPolicy:
    from embodied_steer.cli import compose, instantiate_policy

    cfg = compose("eval", ["policy=lift_token_vla"])
    return instantiate_policy(cfg.policy)


def test_shipped_checkpoint_is_small_and_loads_through_the_catalogue(shipped):
    size = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert size < 10.5e6
    assert shipped.info.name == "lift_token_vla"
    assert shipped.supports(InterventionPoint.ACTIVATIONS) and shipped.supports(InterventionPoint.SAMPLES)
    assert not shipped.supports(InterventionPoint.NOISE)
    assert shipped.tokenizer.id_to_token(shipped.tokenizer.vocab_size - N_BINS) == "<bin_000>"
    assert shipped.unembedding.shape == (shipped.tokenizer.vocab_size, shipped.model.config.hidden_size)


def test_shipped_policy_produces_valid_deterministic_actions(shipped):
    obs = lift_observation()
    shipped.reset(seed=0)
    a = shipped.act(obs).actions
    assert a.shape == (1, 7) and np.all(np.isfinite(a))
    assert np.all(a >= -1) and np.all(a <= 1)
    assert shipped.last_plan[0] in ("up", "down", "hold") and shipped.last_plan[1] in ("fast", "slow")
    shipped.reset(seed=0)
    np.testing.assert_array_equal(shipped.act(obs).actions, a)  # plan words sampled from the seeded generator


def test_shipped_policy_samples_with_temperature(shipped):
    obs = lift_observation(1)
    shipped.reset(seed=3)
    s1 = shipped.sample(obs, 16)
    assert s1.actions.shape == (16, 1, 7)
    assert np.unique(s1.actions[:, 0, 0]).size > 1  # temperature 1.0: not all identical
    shipped.reset(seed=3)
    np.testing.assert_array_equal(shipped.sample(obs, 16).actions, s1.actions)  # seeded


def test_module_map_names_and_hooks_fire(shipped):
    mods = shipped.modules()
    layers = shipped.model.config.num_layers
    for name in ("projector", "llm.embed_tokens", "llm.lm_head", "llm.norm",
                 *(f"llm.layers.{i}.mlp" for i in range(layers)),
                 *(f"llm.layers.{i}.mlp.down_proj" for i in range(layers))):
        assert name in mods, name
    assert mods["llm.layers.0.mlp.down_proj"].in_features == shipped.model.config.intermediate_size
    counts: dict[str, int] = {}
    handles = [mods[n].register_forward_hook(lambda m, i, o, n=n: counts.__setitem__(n, counts.get(n, 0) + 1))
               for n in ("projector", "llm.layers.0.mlp.down_proj", f"llm.layers.{layers - 1}.mlp", "llm.lm_head")]
    try:
        shipped.act(lift_observation())
    finally:
        for h in handles:
            h.remove()
    assert counts["projector"] == 1
    # prefill + one pass per decoded token except the last (2 plan words + 7 actions = 9 slots)
    assert counts["llm.layers.0.mlp.down_proj"] == counts["llm.lm_head"] == 9
    schedule = shipped.module_schedule()
    assert schedule["projector"] == "chunk" and schedule["llm.layers.0.mlp"] == "token"


def test_bad_observation_names_the_field(shipped):
    from embodied_steer.core.errors import ObservationError

    with pytest.raises(ObservationError, match="env_state"):
        shipped.act(Observation(state=np.zeros(9, np.float32)))


# ------------------------------------------------------------------------------ retraining
def _fake_lerobot_dataset(root: Path, episodes: int = 4, length: int = 12) -> Path:
    """Parquet files with the columns of a recorded Lift dataset (no simulator needed)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for ep in range(episodes):
        for t in range(length):
            a = np.append(rng.uniform(-1, 1, 3), [0, 0, 0, 1.0 if t > length // 2 else -1.0]).astype(np.float32)
            rows.append({"observation.state": rng.normal(size=9).astype(np.float32),
                         "observation.environment_state": rng.normal(size=10).astype(np.float32),
                         "action": a, "episode_index": ep, "frame_index": t})
    (root / "data" / "chunk-000").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(root / "data" / "chunk-000" / "file-000.parquet")
    return root


def test_training_runs_a_few_steps_and_saves_a_loadable_checkpoint(tmp_path):
    from embodied_steer.training.token_vla import main

    data = _fake_lerobot_dataset(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["--dataset", str(data), "--out", str(out), "--steps", "4", "--batch_size", "8", "--log_every", "2",
                 "--save_every", "2", "--val_episodes", "1",
                 "--model", "hidden_size=32", "num_layers=2", "num_heads=2", "intermediate_size=64"]) == 0
    policy = TokenVLAPolicy.from_pretrained(out)
    assert policy.model.config.num_layers == 2
    log = (out / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("step,") and len(log) == 3
    assert policy.act(lift_observation()).actions.shape == (1, 7)


@pytest.mark.slow
def test_retrain_script_smoke(tmp_path):
    """The shipped retraining command end to end on 2 recorded episodes and 3 steps."""
    env = dict(os.environ, PY=sys.executable, EPISODES="2", STEPS="3", DATA=str(tmp_path / "demos"),
               OUT=str(tmp_path / "out"), RERECORD="1")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "retrain_token_vla.sh")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    TokenVLAPolicy.from_pretrained(tmp_path / "out")


# ------------------------------------------------------------------------------ steering behaviour
def _up_probe(policy: TokenVLAPolicy, observations: list[Observation]) -> tuple[float, float]:
    """Mean predicted z action (env units) and mean P('up') at the plan slot, greedy, batched."""
    x = torch.cat([policy.observation_vector(o) for o in observations])
    out = decode(policy.model, policy.tokenizer, x, "lift the red cube", return_logits=True)
    z = policy.tokenizer.from_bins(out["bins"].numpy())[:, 2]
    p_up = torch.softmax(out["logits"][0], dim=-1)[:, 0]  # slot 0 choices: up, down, hold
    return float(z.mean()), float(p_up.mean())


def test_clamping_discovered_up_neurons_raises_predicted_z_more_than_random_neurons(shipped):
    from embodied_steer.steering import clamp, hook_counts, steer
    from embodied_steer.steering.discovery import hits_to_cluster, random_neurons, search_neurons

    # "up" against the other motion words at the same slot (the benchmark's default concept)
    u = shipped.unembedding.detach()
    t = shipped.tokenizer.token_id
    basis = (u[t("up")] - (u[t("down")] + u[t("hold")]) / 2)[None]
    hits = search_neurons(shipped, [0], "llm.layers.*.mlp", k=STEER_K, basis=basis, relative=None,
                          gain=shipped.final_norm_gain)
    up = hits_to_cluster(hits)
    assert sum(len(v) for v in up.values()) == STEER_K
    observations = held_out_observations()
    before = hook_counts(shipped.model)
    z0, p0 = _up_probe(shipped, observations)
    with steer(shipped, [clamp(None, up, STEER_C)]):
        z_up, p_up = _up_probe(shipped, observations)
    random_dz = []
    for draw in range(3):
        with steer(shipped, [clamp(None, random_neurons(shipped, up, seed=draw), STEER_C)]):
            random_dz.append(_up_probe(shipped, observations)[0] - z0)
    assert hook_counts(shipped.model) == before  # nothing left behind
    assert _up_probe(shipped, observations) == (z0, p0)  # and the model is unchanged
    assert z_up - z0 > STEER_MIN_DZ, (z0, z_up)
    assert p_up > p0
    assert z_up - z0 > max(random_dz) + STEER_MIN_DZ / 2, (z_up - z0, random_dz)


def _forced_logits(policy: TokenVLAPolicy, x: torch.Tensor, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Logits of every decoded slot (full vocabulary) with the decoded tokens forced to ``tokens``
    ``(B, 9)``: one prompt pass, then single-token KV-cache passes, as :func:`decode` runs them."""
    prompt = torch.tensor([policy.tokenizer.prompt_ids("lift the red cube")] * x.shape[0], dtype=torch.long)
    with torch.no_grad():
        out = policy.model.llm(inputs_embeds=policy.model.embed_prefix(x, prompt), use_cache=True)
        logits = [out.logits[:, -1]]
        for slot in range(tokens.shape[1] - 1):
            out = policy.model.llm(input_ids=tokens[:, slot:slot + 1], past_key_values=out.past_key_values,
                                   use_cache=True)
            logits.append(out.logits[:, -1])
    return logits


def test_last_layer_up_clamp_at_the_decision_position_changes_only_the_plan_word(shipped):
    """The closed-loop benchmark's success-preserving variant: the discovered 'up' neurons of the last
    layer, clamped at the last prompt position only (``positions="prefix_last"``), make the first
    plan word 'up' far more likely than same-sized random last-layer sets do — and leave every later
    slot's logits (second plan word, action bins) exactly as they were for the same tokens, because
    no later layer reads a last-layer MLP output and the decoding passes are not edited."""
    from embodied_steer.steering import clamp, steer
    from embodied_steer.steering.discovery import hits_to_cluster, random_neurons, search_neurons

    u = shipped.unembedding.detach()
    t = shipped.tokenizer.token_id
    basis = (u[t("up")] - (u[t("down")] + u[t("hold")]) / 2)[None]
    hits = search_neurons(shipped, [0], "llm.layers.*.mlp", k=STEER_K, basis=basis, relative=None,
                          gain=shipped.final_norm_gain)
    last = {m: n for m, n in hits_to_cluster(hits).items() if ".layers.3." in m}
    assert last and sum(map(len, last.values())) >= 8
    observations = held_out_observations()
    x = torch.cat([shipped.observation_vector(o) for o in observations])
    plain = decode(shipped.model, shipped.tokenizer, x, "lift the red cube", return_logits=True)
    tokens = torch.cat([plain["plan"], plain["bins"] + shipped.tokenizer.bin_offset], dim=1)
    p0 = torch.softmax(plain["logits"][0], -1)[:, 0].mean()

    def p_up(neurons) -> float:
        with steer(shipped, [clamp(None, neurons, 6.0, positions="prefix_last")]) as handle:
            out = decode(shipped.model, shipped.tokenizer, x, "lift the red cube", return_logits=True)
        assert set(handle.fired().values()) == {1}  # the prompt pass only, never a decoding pass
        return float(torch.softmax(out["logits"][0], -1)[:, 0].mean())

    steered = p_up(last)
    controls = [p_up(random_neurons(shipped, last, seed=draw)) for draw in range(3)]
    assert steered > p0 + 0.2, (float(p0), steered)
    assert steered > max(controls) + 0.15, (steered, controls)
    with steer(shipped, [clamp(None, last, 6.0, positions="prefix_last")]):
        forced = _forced_logits(shipped, x, tokens)
    reference = _forced_logits(shipped, x, tokens)
    assert not torch.allclose(forced[0], reference[0])  # the plan word's logits move
    for slot in range(1, len(forced)):  # nothing after it does
        torch.testing.assert_close(forced[slot], reference[slot], rtol=0, atol=1e-5)


def test_cli_phase_gated_cluster_steering_runs_and_logs_the_gate(tmp_path, capsys):
    """``steer=cluster_gated`` on the shipped VLA: only the last-layer part of the shipped 'up'
    cluster is hooked, at prefix_last; the gate is closed at the start of the episode and opens
    once the gripper has closed on the cube."""
    import json

    from embodied_steer.cli import main

    out = tmp_path / "run"
    rc = main(["eval", "env=lift", "policy=lift_token_vla", "steer=cluster_gated",
               f"steer.cluster_file={SHIPPED / 'neurons.yaml'}", "steer.modules=llm.layers.3.mlp.down_proj",
               "episodes=1", "env.horizon=45", f"output_dir={out}", "torch_threads=1"])
    assert rc == 0, capsys.readouterr().err
    hooks = json.loads((out / "steer.json").read_text())["hooks"]
    assert [h["module"] for h in hooks] == ["llm.layers.3.mlp.down_proj"]
    assert hooks[0]["positions"] == "prefix_last" and hooks[0]["coefficient"]["kind"] == "gated"
    calls = [json.loads(line) for line in (out / "steer.jsonl").read_text().splitlines()]
    closed = [bool(c["inactive"]) for c in calls]
    assert closed[0] and not all(closed), closed  # closed while reaching, open after the grasp
