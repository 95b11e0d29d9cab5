"""The LeRobot DiffusionPolicy adapter on a tiny random model: all four intervention points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied_steer.core import CheckpointError, InterventionPoint, ObservationError, StepEdit
from helpers import ACTION_DIM, lift_like_observation, tiny_diffusion_policy


@pytest.fixture(scope="module")
def policy():
    return tiny_diffusion_policy()


def fresh(policy, obs):
    policy.reset()
    policy.observe(obs)


def test_declares_all_points_and_noise_shape(policy):
    assert policy.interventions == frozenset(InterventionPoint)
    assert policy.noise_spec.shape == (8, ACTION_DIM)
    chunk = policy.act(lift_like_observation())
    assert chunk.actions.shape == (4, ACTION_DIM) and np.all(np.isfinite(chunk.actions))


def test_same_noise_same_actions_different_noise_different(policy):
    obs = lift_like_observation()
    noise = torch.randn(1, 8, ACTION_DIM, generator=torch.Generator().manual_seed(1))
    policy.reset()
    a = policy.act(obs, noise=noise).actions
    policy.reset()
    b = policy.act(obs, noise=noise).actions
    policy.reset()
    c = policy.act(obs, noise=noise + 1.0).actions
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_loop_matches_lerobot_predict_action_chunk(policy):
    obs = lift_like_observation()
    noise = torch.randn(3, 8, ACTION_DIM, generator=torch.Generator().manual_seed(2))
    fresh(policy, obs)
    ours = policy.generate(3, noise=noise).actions
    batch = policy._batch(policy.history(), 3)
    with torch.no_grad():
        theirs = policy.postprocessor(policy.policy.predict_action_chunk(batch, noise=noise)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_samples_spread(policy):
    samples = policy.sample(lift_like_observation(), 16)
    assert samples.actions.shape == (16, 4, ACTION_DIM)
    assert samples.actions.std(axis=0).mean() > 1e-3


def test_guidance_callback_pushes_actions_in_the_stated_direction(policy):
    """ε̂ = ε − λ·√(1−ᾱ)·g with g = +e_0 must raise action dimension 0."""
    obs = lift_like_observation()
    noise = torch.randn(8, 8, ACTION_DIM, generator=torch.Generator().manual_seed(3))
    g = torch.zeros(ACTION_DIM)
    g[0] = 1.0
    seen = []

    def guide(step):
        seen.append((step.index, step.x.shape, step.prediction))
        assert step.alpha_bar is not None and step.x0.shape == step.x.shape
        # λ = 1: with clip_sample, a much larger ε-space step saturates x0 and the ε term then
        # pushes the sample the other way (DDIM does not re-derive ε from the clipped x0).
        return StepEdit(model_output=step.model_output - 1.0 * (1 - step.alpha_bar) ** 0.5 * g)

    fresh(policy, obs)
    base = policy.generate(8, noise=noise).actions
    fresh(policy, obs)
    guided = policy.generate(8, noise=noise, denoise_callback=guide).actions
    assert [s[0] for s in seen] == list(range(5)) and seen[0][1] == (8, 8, ACTION_DIM)
    assert seen[0][2] == "epsilon"
    assert guided[..., 0].mean() > base[..., 0].mean() + 0.05
    # the other dimensions move much less than the guided one
    assert np.abs(guided[..., 1:] - base[..., 1:]).mean() < np.abs(guided[..., 0] - base[..., 0]).mean()


def test_resampling_copies_particles(policy):
    obs = lift_like_observation()
    fresh(policy, obs)

    def collapse(step):
        if step.index == step.num_steps - 1:
            return StepEdit(resample=torch.zeros(step.x.shape[0], dtype=torch.long))
        return None

    out = policy.generate(5, denoise_callback=collapse).actions
    assert np.allclose(out, out[0:1])


def test_to_actions_is_differentiable_and_matches_postprocessor(policy):
    captured = {}

    def grab(step):
        captured["fn"] = step.to_actions
        return None

    fresh(policy, lift_like_observation())
    policy.generate(1, denoise_callback=grab)
    x = torch.randn(2, 4, ACTION_DIM, requires_grad=True)
    y = captured["fn"](x)
    y.sum().backward()
    assert x.grad is not None and torch.all(x.grad != 0)
    np.testing.assert_allclose(y.detach().numpy(), policy.postprocessor(x.detach()).numpy(), atol=1e-6)


def test_module_hooks_fire_once_per_denoising_step(policy):
    modules = policy.modules()
    assert {"unet", "unet.final_conv", "unet.mid_modules.0", "unet.down_modules.0.0"} <= set(modules)
    calls = {"unet.final_conv": 0, "unet.mid_modules.0": 0}
    handles = [modules[name].register_forward_hook(lambda m, i, o, n=name: calls.__setitem__(n, calls[n] + 1))
               for name in calls]
    try:
        policy.act(lift_like_observation())
    finally:
        for h in handles:
            h.remove()
    assert calls == {"unet.final_conv": 5, "unet.mid_modules.0": 5}


def test_save_and_load_round_trip(policy, tmp_path):
    from embodied_steer.adapters.lerobot_diffusion import LeRobotDiffusionPolicy

    policy.save_pretrained(tmp_path / "ckpt")
    loaded = LeRobotDiffusionPolicy.from_pretrained(tmp_path / "ckpt")
    obs = lift_like_observation()
    noise = torch.randn(2, 8, ACTION_DIM, generator=torch.Generator().manual_seed(4))
    fresh(policy, obs)
    fresh(loaded, obs)
    np.testing.assert_allclose(policy.generate(2, noise=noise).actions, loaded.generate(2, noise=noise).actions, atol=1e-6)


def test_missing_or_incomplete_checkpoint_is_named(tmp_path):
    from embodied_steer.adapters.lerobot_diffusion import LeRobotDiffusionPolicy

    with pytest.raises(CheckpointError, match="no checkpoint folder at .*nowhere"):
        LeRobotDiffusionPolicy.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="incomplete: missing model.safetensors"):
        LeRobotDiffusionPolicy.from_pretrained(tmp_path / "half")


def test_wrong_state_size_is_an_observation_error(policy):
    from embodied_steer.core import Observation

    bad = Observation(state=np.zeros(5, np.float32), env_state=np.zeros(10, np.float32))
    policy.reset()
    with pytest.raises(ObservationError, match=r"state has shape \(5,\), the policy expects \(9,\)"):
        policy.act(bad)
    with pytest.raises(ObservationError, match="no env_state"):
        policy.reset()
        policy.act(Observation(state=np.zeros(9, np.float32)))


def test_ddpm_is_reproducible_with_the_adapter_generator():
    a = tiny_diffusion_policy(scheduler="DDPM", seed=5)
    b = tiny_diffusion_policy(scheduler="DDPM", seed=5)
    obs = lift_like_observation()
    np.testing.assert_allclose(a.act(obs).actions, b.act(obs).actions, atol=1e-6)
