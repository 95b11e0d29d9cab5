"""The policy interface and typed containers: validation and the intervention-point contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied_steer.core import (
    ActionBounds,
    ActionChunk,
    ActionError,
    InterventionPoint,
    NoiseSpec,
    Observation,
    ObservationError,
    PolicyInfo,
    SteerablePolicy,
    UnsupportedIntervention,
)
from embodied_steer.eval.stats import mean_interval, wilson_interval


class EchoPolicy(SteerablePolicy):
    """Returns the mean of the observed states as every action; declares NOISE only."""

    interventions = frozenset({InterventionPoint.NOISE})
    history_length = 3

    def __init__(self, out: float | None = None):
        super().__init__(PolicyInfo("echo", chunk_size=2, execute_steps=2, action_bounds=ActionBounds.symmetric(2)))
        self.out = out
        self.seen_noise = None

    @property
    def noise_spec(self) -> NoiseSpec:
        return NoiseSpec(shape=(2, 2), action_dims=2)

    def _generate(self, history, n, noise, denoise_callback):
        self.seen_noise = noise
        value = np.mean([o.state[0] for o in history]) if self.out is None else self.out
        return np.full((n, 2, 2), value, np.float32)


def obs(x: float) -> Observation:
    return Observation(state=np.array([x, 0.0], np.float32))


def test_observation_validation_names_the_problem():
    with pytest.raises(ObservationError, match="state contains NaN"):
        Observation(state=np.array([0.0, np.nan], np.float32)).validate()
    with pytest.raises(ObservationError, match="image 'wrist'.*uint8"):
        Observation(images={"wrist": np.zeros((4, 4, 3), np.float32)}).validate()
    with pytest.raises(ObservationError, match=r"image 'top'.*\(H, W, 3\)"):
        Observation(images={"top": np.zeros((4, 4), np.uint8)}).validate()
    with pytest.raises(ObservationError, match="env_state must be a 1-D"):
        Observation(env_state=np.zeros((2, 2), np.float32)).validate()


def test_action_chunk_rejects_nan_and_wrong_shapes():
    with pytest.raises(ActionError, match="NaN or inf .*step 1, dim 0"):
        ActionChunk(np.array([[0.0, 0.0], [np.nan, 0.0]]))
    with pytest.raises(ActionError, match=r"shape \(T, D_action\)"):
        ActionChunk(np.zeros(3))
    with pytest.raises(ActionError, match="3 dimensions but its bounds have 2"):
        ActionChunk(np.zeros((1, 3)), ActionBounds.symmetric(2))


def test_bounds_validate_and_clip():
    b = ActionBounds(np.array([-1.0, 0.0]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(b.clip(np.array([[5.0, -5.0]])), [[1.0, 0.0]])
    with pytest.raises(ValueError, match="low > high"):
        ActionBounds(np.array([1.0]), np.array([0.0]))


def test_history_is_padded_then_rolls():
    p = EchoPolicy()
    p.reset()
    assert p.act(obs(3.0)).actions[0, 0] == pytest.approx(3.0)  # [3, 3, 3]
    p.observe(obs(0.0))
    assert p.act(obs(6.0)).actions[0, 0] == pytest.approx(3.0)  # [3, 0, 6]
    p.observe(obs(0.0))
    assert p.act(obs(0.0)).actions[0, 0] == pytest.approx(2.0)  # [6, 0, 0]
    p.reset()
    with pytest.raises(RuntimeError, match="no observation yet"):
        p.generate(1)


def test_declared_points_are_enforced():
    p = EchoPolicy()
    with pytest.raises(UnsupportedIntervention, match="'samples'.*'echo'.*supports only: noise"):
        p.sample(obs(1.0), 4)
    with pytest.raises(UnsupportedIntervention, match="denoising_step"):
        p.act(obs(1.0), denoise_callback=lambda s: None)
    with pytest.raises(UnsupportedIntervention, match="activations"):
        p.modules()


def test_noise_is_checked_against_the_spec():
    p = EchoPolicy()
    with pytest.raises(ValueError, match=r"noise must have shape \(N, 2, 2\)"):
        p.act(obs(1.0), noise=torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="NaN"):
        p.act(obs(1.0), noise=torch.full((1, 2, 2), float("nan")))
    p.act(obs(1.0), noise=torch.ones(1, 2, 2))
    assert torch.equal(p.seen_noise, torch.ones(1, 2, 2))


def test_policy_output_is_validated():
    with pytest.raises(ActionError, match="'echo' produced NaN"):
        EchoPolicy(out=float("nan")).act(obs(1.0))


def test_wilson_interval_matches_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_mean_interval_is_a_seeded_bootstrap_around_the_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 0.5, 400)
    mean, lo, hi = mean_interval(x)
    assert mean == pytest.approx(x.mean())
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))  # the normal interval, for comparison
    assert lo == pytest.approx(mean - half, abs=0.01) and hi == pytest.approx(mean + half, abs=0.01)
    assert mean_interval(x) == (mean, lo, hi)  # seeded
    assert mean_interval([2.5]) == (2.5, 2.5, 2.5)
    assert all(np.isnan(v) for v in mean_interval([]))
    assert mean_interval([1.0, float("nan"), 3.0])[0] == 2.0  # non-finite values are dropped
