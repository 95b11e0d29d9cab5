"""Entropy estimators against closed forms: Gaussians, correlations, mixtures, limits, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_steer.core.types import ActionBounds
from embodied_steer.realm.entropy import (
    EntropyInputError,
    EntropyLimits,
    estimate_entropy,
    gaussian_entropy_closed_form,
    knn_entropy,
    mixture_entropy_reference,
    spacing_entropy,
)

ESTIMATORS = ("spacing", "knn", "gaussian")


@pytest.mark.parametrize("method", ESTIMATORS)
@pytest.mark.parametrize("dim,std", [(1, 0.2), (3, 0.3), (7, 0.1)])
def test_gaussian_within_tolerance(rng, method, dim, std):
    """N=400 samples, averaged over 12 steps: within 0.06 nats per dimension of the closed form."""
    x = rng.normal(0.0, std, size=(400, 12, dim))
    truth = gaussian_entropy_closed_form(np.eye(dim) * std**2)
    h = estimate_entropy(x, method)
    assert h.shape == (12,)
    assert abs(h.mean() - truth) < 0.06 * dim + 0.03, (h.mean(), truth)


def test_spacing_converges_with_n(rng):
    truth = gaussian_entropy_closed_form(np.eye(2))
    errors = [abs(spacing_entropy(rng.normal(size=(n, 20, 2))).mean() - truth) for n in (20, 200, 2000)]
    assert errors[0] > max(errors[1:]) and errors[2] < 0.04


def test_knn_captures_correlation_spacing_does_not(rng):
    cov = np.array([[1.0, 0.95], [0.95, 1.0]]) * 0.09
    x = rng.multivariate_normal([0, 0], cov, size=(400, 8))
    joint = gaussian_entropy_closed_form(cov)
    marginal_sum = 2 * gaussian_entropy_closed_form(np.array([[0.09]]))
    assert marginal_sum - joint > 1.0  # the correlation is worth > 1 nat
    assert abs(knn_entropy(x).mean() - joint) < 0.15
    assert abs(estimate_entropy(x, "gaussian").mean() - joint) < 0.1
    assert abs(spacing_entropy(x).mean() - marginal_sum) < 0.1  # sees only the marginals


@pytest.mark.parametrize("method", ("spacing", "knn"))
def test_mixture_ordering_and_value(rng, method):
    """Entropy grows as two modes separate; knn and spacing track the Monte-Carlo reference."""
    refs, ests = [], []
    for sep in (0.0, 0.3, 1.0):
        means = np.array([[-sep, 0.0], [sep, 0.0]])
        refs.append(mixture_entropy_reference(np.ones(2), means, np.full(2, 0.1), n_mc=50_000))
        comp = rng.integers(0, 2, size=(400, 8))
        x = means[comp] + 0.1 * rng.standard_normal((400, 8, 2))
        ests.append(estimate_entropy(x, method).mean())
    assert refs[0] < refs[1] < refs[2] and ests[0] < ests[1] < ests[2]
    assert np.max(np.abs(np.array(ests) - np.array(refs))) < 0.25


def test_limits_floor_and_ceiling():
    lim = EntropyLimits.from_noise(0.05, 2, ActionBounds.symmetric(2))
    assert np.allclose(lim.floor, 0.5 * np.log(2 * np.pi * np.e * 0.05**2))
    assert np.allclose(lim.ceiling, np.log(2.0))
    same = np.zeros((50, 4, 2))
    for method in ESTIMATORS:
        assert np.allclose(estimate_entropy(same, method, lim), lim.total_floor)
    wild = np.random.default_rng(1).uniform(-50, 50, size=(50, 4, 2))
    for method in ESTIMATORS:
        assert np.all(estimate_entropy(wild, method, lim) <= lim.total_ceiling + 1e-9)
    with pytest.raises(ValueError):
        EntropyLimits.from_noise(0.0, 2)
    with pytest.raises(ValueError):
        EntropyLimits.from_noise(5.0, 2, ActionBounds.symmetric(2))  # noise wider than the box


def test_uniform_reaches_ceiling(rng):
    lim = EntropyLimits.from_noise(0.05, 3, ActionBounds.symmetric(3))
    x = rng.uniform(-1, 1, size=(500, 6, 3))
    assert abs(spacing_entropy(x, lim).mean() - lim.total_ceiling) < 0.1


@pytest.mark.parametrize("method", ESTIMATORS)
def test_degenerate_inputs_defined(method):
    lim = EntropyLimits.from_noise(0.05, 2, ActionBounds.symmetric(2))
    nan = np.zeros((50, 4, 2))
    nan[3, 1, 0] = np.nan
    with pytest.raises(EntropyInputError, match="NaN"):
        estimate_entropy(nan, method, lim)
    with pytest.raises(EntropyInputError, match="at least"):
        estimate_entropy(np.zeros((1, 4, 2)), method, lim)
    with pytest.raises(EntropyInputError, match="shape"):
        estimate_entropy(np.zeros(5), method, lim)
    with pytest.raises(EntropyInputError, match="dimensions"):
        estimate_entropy(np.random.default_rng(0).normal(size=(20, 4, 3)), method, lim)
    # half the samples identical, half spread: finite, between the limits
    x = np.zeros((40, 4, 2))
    x[20:] = np.random.default_rng(0).normal(0, 0.3, size=(20, 4, 2))
    h = estimate_entropy(x, method, lim)
    assert np.all(np.isfinite(h)) and np.all(h >= lim.total_floor - 1e-9)


def test_unknown_estimator():
    with pytest.raises(ValueError, match="unknown entropy estimator"):
        estimate_entropy(np.zeros((5, 1, 1)), "magic")
