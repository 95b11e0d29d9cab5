"""Assistance modes on synthetic samples with known best answers, options, directions, hysteresis."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_steer.core.types import ActionBounds
from embodied_steer.realm.entropy import EntropyInputError, EntropyLimits
from embodied_steer.realm.modes import AssistConfig, Mode, Recommender, assess

N, T = 50, 12


def limits(dim: int) -> EntropyLimits:
    return EntropyLimits.from_noise(0.05, dim, ActionBounds.symmetric(dim))


def tight(rng, dim):
    return rng.normal(0.0, 0.05, (N, T, dim))


def bimodal(rng, dim):
    x = rng.normal(0.0, 0.05, (N, T, dim))
    side = np.where(np.arange(N) % 2 == 0, 1.0, -1.0)
    x[..., 1] += 0.6 * side[:, None]
    return x


def wide_1d(rng, dim):
    x = rng.normal(0.0, 0.05, (N, T, dim))
    x[..., 0] += rng.uniform(-0.8, 0.8, (N, T))
    return x


def uniform(rng, dim):
    return rng.uniform(-1.0, 1.0, (N, T, dim))


CASES = [(tight, Mode.NONE), (bimodal, Mode.DISCRETE), (wide_1d, Mode.CORRECTION), (uniform, Mode.TELEOP)]


@pytest.mark.parametrize("estimator", ["spacing", "knn", "gaussian"])
@pytest.mark.parametrize("dim", [2, 7])
@pytest.mark.parametrize("make,expected", CASES, ids=[m.value for _, m in CASES])
def test_recommendation_on_synthetic_samples(estimator, dim, make, expected):
    hits = 0
    for seed in range(5):
        a = assess(make(np.random.default_rng(seed), dim), limits(dim), AssistConfig(estimator=estimator))
        hits += a.best is expected
    assert hits == 5, f"{make.__name__}: expected {expected.value}"


def test_expected_entropies_are_ordered(rng):
    a = assess(wide_1d(rng, 3), limits(3))
    e = a.expected
    assert e[Mode.TELEOP] <= e[Mode.CORRECTION] <= e[Mode.NONE] + 1e-9
    assert e[Mode.DISCRETE] <= e[Mode.NONE] + 1e-9
    assert all(0 < v <= 1 for v in a.likelihood.values())
    assert a.likelihood[Mode.TELEOP] == pytest.approx(1.0)
    for m in Mode:
        assert a.value[m] == pytest.approx(AssistConfig().alpha[m] * a.likelihood[m])


def test_discrete_options_are_the_modes(rng):
    a = assess(bimodal(rng, 2), limits(2))
    opts = a.options
    assert len(opts.probs) == 2 and np.isclose(opts.probs.sum(), 1.0)
    firsts = sorted(opts.means[:, 0, 1])
    assert firsts[0] == pytest.approx(-0.6, abs=0.05) and firsts[1] == pytest.approx(0.6, abs=0.05)
    assert opts.silhouette > 0.8
    # a unimodal spread has no distinct options
    assert len(assess(wide_1d(rng, 2), limits(2)).options.probs) == 1


def test_tiny_clusters_get_the_floor(rng):
    x = rng.normal(0.0, 0.05, (N, T, 2))
    x[:3, :, 1] += 0.9  # 3 outliers: a tiny second option
    a = assess(x, limits(2))
    if len(a.options.probs) > 1:
        assert a.options.probs.min() < 0.1
        assert a.expected[Mode.DISCRETE] <= a.expected[Mode.NONE]


def test_correction_direction_is_the_spread_axis(rng):
    x = rng.normal(0.0, 0.05, (N, T, 3))
    axis = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    x += rng.uniform(-0.7, 0.7, (N, T, 1)) * axis
    a = assess(x, limits(3))
    assert a.best is Mode.CORRECTION
    d = a.directions.directions[:, 0]  # (T, D)
    assert np.all(np.abs(d @ axis) > 0.98)
    assert np.all(a.directions.stds[:, 0] > 0.3)


def test_degenerate_samples():
    lim = limits(2)
    a = assess(np.zeros((N, T, 2)), lim)  # all identical: floor, nothing to do
    assert a.best is Mode.NONE and a.expected[Mode.NONE] == pytest.approx(lim.total_floor)
    with pytest.raises(EntropyInputError):
        assess(np.full((N, T, 2), np.nan), lim)
    with pytest.raises(EntropyInputError):
        assess(np.zeros((2, T, 2)), lim)


def test_config_validation():
    with pytest.raises(ValueError, match="alpha"):
        AssistConfig(alpha={"none": 1.0})
    with pytest.raises(ValueError):
        AssistConfig(alpha={"none": 1.0, "discrete": 0.9, "correction": 0.7, "teleop": 0.0})


def values(best: Mode, gap: float = 0.5) -> dict[Mode, float]:
    v = {m: 0.2 for m in Mode}
    v[best] = 0.2 + gap
    return v


def test_hysteresis_prevents_flicker():
    rec = Recommender(margin=0.1, patience=2)
    assert rec.update(values(Mode.NONE)) is Mode.NONE
    # alternating single-step spikes never switch
    seq = [rec.update(values(Mode.DISCRETE if i % 2 else Mode.NONE)) for i in range(20)]
    assert set(seq) == {Mode.NONE}
    # a near-tie (within the margin) does not switch either
    tie = {Mode.NONE: 0.50, Mode.DISCRETE: 0.52, Mode.CORRECTION: 0.1, Mode.TELEOP: 0.1}
    assert all(rec.update(tie) is Mode.NONE for _ in range(5))
    # a persistent clear change switches after `patience` steps
    assert rec.update(values(Mode.TELEOP)) is Mode.NONE
    assert rec.update(values(Mode.TELEOP)) is Mode.TELEOP
    rec.reset()
    assert rec.update(values(Mode.CORRECTION)) is Mode.CORRECTION
    with pytest.raises(ValueError):
        Recommender(margin=-1)


def test_raw_argmax_would_flicker_where_hysteresis_does_not(rng):
    """Noisy values around a boundary: the recommender switches far less often than argmax."""
    rec = Recommender(margin=0.1, patience=2)
    raw, smooth = [], []
    for _ in range(200):
        v = {Mode.NONE: 0.6 + rng.normal(0, 0.03), Mode.DISCRETE: 0.6 + rng.normal(0, 0.03),
             Mode.CORRECTION: 0.1, Mode.TELEOP: 0.1}
        raw.append(max(v, key=v.get))
        smooth.append(rec.update(v))
    switches = lambda s: sum(a != b for a, b in zip(s, s[1:]))  # noqa: E731
    assert switches(raw) > 30 and switches(smooth) <= 2
