"""LeRobotFlowPolicy on tiny random-init PI0, PI05 and SmolVLA models (offline, CPU)."""

from __future__ import annotations

import collections
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch

from embodied_steer.adapters import tiny
from embodied_steer.adapters.lerobot_flow import LeRobotFlowPolicy, make_processors
from embodied_steer.core import (
    ActionBounds,
    ActionError,
    CheckpointError,
    ConfigError,
    InterventionPoint,
    Observation,
    ObservationError,
    StepEdit,
)

torch.set_num_threads(1)

KINDS = ("pi0", "pi05", "smolvla")
CHUNK, EXECUTE, STEPS, ACTION_DIM = 16, 8, 10, tiny.TINY_ACTION_DIM


@pytest.fixture(scope="module", params=KINDS)
def policy(request, tmp_path_factory) -> LeRobotFlowPolicy:
    folder = tmp_path_factory.mktemp(f"tiny_{request.param}")
    return tiny.TINY_BUILDERS[request.param](folder, chunk_size=CHUNK, n_action_steps=EXECUTE, num_steps=STEPS)


@pytest.fixture()
def obs() -> Observation:
    return tiny.tiny_observation(seed=3)


def noise_for(policy: LeRobotFlowPolicy, n: int, seed: int) -> torch.Tensor:
    return policy.initial_noise(n, torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- basics
def test_declares_all_points_and_info(policy):
    assert policy.interventions == frozenset(InterventionPoint)
    assert policy.info.chunk_size == CHUNK and policy.info.execute_steps == EXECUTE
    assert policy.info.cameras == ("agentview", "robot0_eye_in_hand")
    assert policy.info.state_dim == tiny.TINY_STATE_DIM
    assert policy.noise_spec.shape == (CHUNK, 32) and policy.noise_spec.action_dims == ACTION_DIM
    assert policy.num_steps == STEPS


def test_act_returns_finite_chunk(policy, obs):
    chunk = policy.act(obs)
    assert chunk.actions.shape == (CHUNK, ACTION_DIM)
    assert np.all(np.isfinite(chunk.actions))


def test_same_noise_same_actions_different_noise_different(policy, obs):
    a = policy.act(obs, noise=noise_for(policy, 1, 0)).actions
    b = policy.act(obs, noise=noise_for(policy, 1, 0)).actions
    c = policy.act(obs, noise=noise_for(policy, 1, 1)).actions
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_sample_draws_distinct_chunks(policy, obs):
    samples = policy.sample(obs, 4)
    assert samples.actions.shape == (4, CHUNK, ACTION_DIM)
    assert samples.actions.std(axis=0).mean() > 1e-3


def test_own_euler_loop_matches_lerobot_predict_action_chunk(policy, obs):
    noise = noise_for(policy, 3, 7)
    ours = policy.sample(obs, 3, noise=noise).actions
    theirs = policy.reference_actions(obs, noise)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_any_image_size_and_flips(policy, obs):
    """VLAs resize images themselves; flip_images rotates what the policy sees."""
    big = Observation(images={c: np.repeat(np.repeat(img, 2, 0), 2, 1) for c, img in obs.images.items()},
                      state=obs.state, instruction=obs.instruction)
    assert np.all(np.isfinite(policy.act(big).actions))
    noise = noise_for(policy, 1, 4)
    rotated = Observation(images={c: np.ascontiguousarray(img[::-1, ::-1]) for c, img in obs.images.items()},
                          state=obs.state, instruction=obs.instruction)
    flipping = LeRobotFlowPolicy(policy.policy, policy.preprocessor, policy.postprocessor,
                                 camera_map=policy.camera_map, flip_images="both")
    np.testing.assert_array_equal(flipping.act(obs, noise=noise).actions, policy.act(rotated, noise=noise).actions)
    assert np.abs(policy.act(obs, noise=noise).actions - policy.act(rotated, noise=noise).actions).max() > 1e-4


def test_action_bounds_slice_to_env_dims(policy, obs):
    sliced = LeRobotFlowPolicy(policy.policy, policy.preprocessor, policy.postprocessor,
                               camera_map=policy.camera_map, action_bounds=ActionBounds.symmetric(6))
    noise = noise_for(policy, 1, 0)
    full = policy.act(obs, noise=noise).actions
    part = sliced.act(obs, noise=noise).actions
    np.testing.assert_array_equal(part, full[:, :6])


# ----------------------------------------------------------------------------- denoising step
def test_callback_sees_flow_convention(policy, obs):
    seen = []

    def callback(step):
        seen.append(step)
        assert step.prediction == "velocity" and step.alpha_bar is None
        torch.testing.assert_close(step.x0, step.x - step.t * step.model_output)
        x0 = step.x0.detach().clone().requires_grad_(True)
        step.to_actions(x0)[..., 0].sum().backward()  # rewards differentiate through to_actions
        assert x0.grad is not None and x0.grad[..., 0].abs().min() > 0
        return None

    policy.act(obs, denoise_callback=callback, num_particles=2)
    assert [s.index for s in seen] == list(range(STEPS))
    np.testing.assert_allclose([s.t for s in seen], 1.0 - np.arange(STEPS) / STEPS, atol=1e-12)
    assert seen[0].x.shape == (2, CHUNK, 32)


def test_velocity_edit_moves_actions_in_expected_direction(policy, obs):
    # dt = -1/num_steps, so lowering the velocity of dim 0 raises the final sample's dim 0;
    # unnormalising (std > 0) keeps the direction.
    noise = noise_for(policy, 1, 2)
    base = policy.act(obs, noise=noise).actions

    def push_up(step):
        v = step.model_output.clone()
        v[..., 0] -= 2.0
        return StepEdit(model_output=v)

    pushed = policy.act(obs, noise=noise, denoise_callback=push_up).actions
    assert np.all(pushed[:, 0] > base[:, 0])
    assert pushed[:, 0].mean() - base[:, 0].mean() > 0.5


def test_resample_to_particle_zero_makes_particles_equal(policy, obs):
    def copy_first(step):
        return StepEdit(resample=torch.zeros(step.x.shape[0], dtype=torch.long)) if step.index == 0 else None

    samples = policy.generate(4, noise=noise_for(policy, 4, 3), denoise_callback=copy_first).actions
    for i in range(1, 4):
        np.testing.assert_array_equal(samples[i], samples[0])


def test_nan_from_callback_is_an_action_error(policy, obs):
    def poison(step):
        return StepEdit(model_output=torch.full_like(step.model_output, float("nan")))

    with pytest.raises(ActionError, match="NaN"):
        policy.act(obs, denoise_callback=poison)


def test_bad_step_edit_shape_is_rejected(policy, obs):
    with pytest.raises(ValueError, match="model_output must have shape"):
        policy.act(obs, denoise_callback=lambda s: StepEdit(model_output=s.model_output[:, :3]))


# ----------------------------------------------------------------------------- activations
def test_hooks_fire_once_per_chunk_or_once_per_step(policy, obs):
    modules = policy.modules()
    schedule = policy.module_schedule()
    depth = sum(1 for name in modules if name.startswith("vlm.layers.") and name.count(".") == 2)
    for name in ("vision", "vision.projector", "vlm.embed_tokens", "vlm.lm_head", "vlm.norm", "expert.norm",
                 "action_in_proj", "action_out_proj", "vlm.layers.0.mlp", "vlm.layers.0.mlp.down_proj",
                 "expert.layers.0.mlp", "expert.layers.0.mlp.down_proj"):
        assert name in modules, name
    assert depth == 2

    counts: collections.Counter[str] = collections.Counter()
    handles = [m.register_forward_hook(lambda *_, n=name: counts.update([n])) for name, m in modules.items()]
    try:
        policy.sample(obs, 3)  # several particles still run the VLM prefix once
    finally:
        for h in handles:
            h.remove()

    cameras = len(policy.info.cameras)
    for name, when in schedule.items():
        expected = {"chunk": cameras if name.startswith("vision") else 1, "step": STEPS, "never": 0}[when]
        assert counts[name] == expected, f"{name}: fired {counts[name]}x, schedule says {when}"
    decoder_when = schedule["vlm.layers.0"]
    assert decoder_when == ("never" if policy.info.extra["policy_type"] == "smolvla" else "chunk")


# ----------------------------------------------------------------------------- checkpoints
def test_save_and_load_round_trip(policy, obs, tmp_path):
    import shutil

    # A fresh copy whose tokenizer / VLM folder is deleted after saving: the checkpoint must carry them.
    kind = policy.info.extra["policy_type"]
    source = tiny.TINY_BUILDERS[kind](tmp_path / "src", chunk_size=CHUNK, n_action_steps=5, num_steps=STEPS)
    folder = source.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "src")
    assert (folder / "model.safetensors").is_file() and (folder / "policy_preprocessor.json").is_file()
    loaded = LeRobotFlowPolicy.from_pretrained(folder)
    assert loaded.info.cameras == source.info.cameras
    assert loaded.info.execute_steps == 5
    noise = noise_for(policy, 2, 11)
    np.testing.assert_array_equal(loaded.sample(obs, 2, noise=noise).actions, source.sample(obs, 2, noise=noise).actions)


def test_missing_checkpoint_folder_names_the_path(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(CheckpointError, match="no_such_checkpoint"):
        LeRobotFlowPolicy.from_pretrained(missing)
    # Looks like a hub id, but offline and not cached.
    with pytest.raises(CheckpointError, match="checkpoints/not_there"):
        LeRobotFlowPolicy.from_pretrained("checkpoints/not_there")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        LeRobotFlowPolicy.from_pretrained(tmp_path / "half")


def test_missing_tokenizer_names_it(policy, tmp_path):
    if policy.info.extra["policy_type"] == "smolvla":
        pytest.skip("SmolVLA's tokenizer is its VLM folder")
    with pytest.raises(CheckpointError, match="no_tokenizer_here"):
        LeRobotFlowPolicy.from_config(policy.policy.config, tokenizer_path=tmp_path / "no_tokenizer_here")


def test_unsupported_policy_type(tmp_path):
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

    with pytest.raises(ConfigError, match="unsupported policy type 'diffusion'"):
        LeRobotFlowPolicy.from_config(DiffusionConfig())
    DiffusionConfig()._save_pretrained(tmp_path)  # noqa: SLF001 - writes config.json only
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="diffusion"):
        LeRobotFlowPolicy.from_pretrained(tmp_path)


def test_missing_camera_names_the_camera(policy, obs):
    partial = Observation(images={"agentview": obs.images["agentview"]}, state=obs.state, instruction=obs.instruction)
    with pytest.raises(ObservationError, match="robot0_eye_in_hand"):
        policy.act(partial)


# ----------------------------------------------------------------------------- processors
@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_processor_steps_match_lerobot_factory(kind, tmp_path, monkeypatch):
    """Our PI0/PI05 step lists must equal LeRobot's factories, which name the hub tokenizer: put a
    tokenizer at that relative path so AutoTokenizer finds it locally."""
    import importlib

    tok = tiny.build_tiny_tokenizer(tmp_path / "google" / "paligemma-3b-pt-224")
    monkeypatch.chdir(tmp_path)
    built = tiny.TINY_BUILDERS[kind](tmp_path / "assets")
    config, stats = built.policy.config, tiny.tiny_dataset_stats()
    factory = importlib.import_module(f"lerobot.policies.{kind}.processor_{kind}")
    theirs = getattr(factory, f"make_{kind}_pre_post_processors")(config, stats)
    ours = make_processors(config, stats, str(tok.relative_to(tmp_path)))
    for mine, real in zip(ours, theirs, strict=True):
        assert [type(s) for s in mine.steps] == [type(s) for s in real.steps]
        assert [s.get_config() for s in mine.steps] == [s.get_config() for s in real.steps]


# ----------------------------------------------------------------------------- Hydra configs
def test_policy_yaml_instantiates_with_a_local_checkpoint(policy, obs, tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    kind = policy.info.extra["policy_type"]
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "policies" / f"{kind}.yaml")
    assert cfg._target_ == "embodied_steer.adapters.lerobot_flow.LeRobotFlowPolicy.from_pretrained"
    assert set(cfg.camera_map.values()) == {"agentview", "robot0_eye_in_hand"}
    assert cfg.flip_images == "horizontal"
    cfg.flip_images = "none"  # the tiny models see unflipped images
    cfg.path_or_hub_id = str(policy.save_pretrained(tmp_path / "ckpt"))
    loaded = instantiate(cfg)
    assert isinstance(loaded, LeRobotFlowPolicy)
    assert loaded.info.execute_steps == cfg.execute_steps
    assert loaded.info.action_bounds is not None and loaded.info.action_bounds.dim == ACTION_DIM
    noise = noise_for(policy, 1, 5)
    np.testing.assert_array_equal(loaded.act(obs, noise=noise).actions, policy.act(obs, noise=noise).actions)
