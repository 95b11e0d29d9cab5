"""Assistance modes: expected entropy after each kind of human input, and which one to ask for.

For sampled action chunks ``(N, T, D)`` the *expected post-interaction entropy* ``E[H_m]`` (nats
per time step, averaged over the ``T`` steps of the chunk) of each mode ``m``:

``none``        the forecast as it is: ``mean_t H(a_t)``.
``teleop``      the human drives: the floor (human input noise) at every step.
``discrete``    the sampled trajectories are clustered into ``k`` options (k-means on the flattened
                chunks, ``k`` chosen by silhouette; ``k = 1`` when no clear clusters exist, or when
                the clusters are closer than a cut continuous spread would be); the
                human picks option ``c`` with probability ``p_c`` (its share of samples):
                ``Σ_c p_c · max(H(cluster c), floor)``; clusters smaller than ``min_cluster`` get
                the floor.
``correction``  at each step the top-``correction_dims`` principal directions of the samples are
                replaced by the human's noise along them and the entropy is estimated again.

Entropy with a floor, for samples that form distinct options. Every entropy is at least the floor
(a human cannot resolve finer than their own input noise). Clamping the entropy of the whole
sample set at the floor would hide two tight options far apart — their differential entropy can
be far *below* the floor although a human must still choose between them. So where the options
found for ``discrete`` are well separated at a step (every pair's means at least
``separation_min`` standard deviations apart along the line joining them, the std being the
larger of the human noise and either option's own spread there), the entropy at that step is
that of a mixture of non-overlapping components, each clamped at the floor:
``H = H(p) + Σ_c p_c · max(H_c, floor)`` with ``H(p) = −Σ p_c log p_c``. Options that are not
separated from each other at a step are merged into one component there (its entropy estimated
on their samples together); with one option, or none separated, this is the entropy of all
samples estimated directly.
The same rule gives the entropy after a correction (on the corrected samples, same option labels,
separation re-checked — a correction along the axis that separates the options merges them).

Normalised likelihood and value: ``L(m) = exp(−(E[H_m] − H_floor) / τ)`` ∈ (0, 1] — 1 when the
mode leaves only human-level uncertainty — with the temperature ``τ`` (nats) by default the mean
per-dimension gap between ceiling and floor; ``V(m) = α_m L(m)`` where ``α_m ≤ 1`` penalises the
human's effort (none 1 > discrete > correction > teleop). The recommendation is ``argmax_m V(m)``,
smoothed by :class:`Recommender` (hysteresis).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from embodied_steer.realm.entropy import EntropyLimits, as_chunks, estimate_entropy


class Mode(str, enum.Enum):
    """Kinds of human assistance, cheapest first."""

    NONE = "none"
    DISCRETE = "discrete"
    CORRECTION = "correction"
    TELEOP = "teleop"


UNIMODAL_SPLIT_GAP = 2.0 * np.sqrt(3.0)
"""Largest gap (in within-half stds) between the means of the two halves of a symmetric unimodal
distribution cut at its mode: ``2 E|X| / sqrt(Var(X | half))``, which is ``2√3`` for a uniform
and less for every other symmetric unimodal law (Khinchine: ``X = U·Z``, then Jensen)."""


DEFAULT_ALPHA = {Mode.NONE: 1.0, Mode.DISCRETE: 0.9, Mode.CORRECTION: 0.7, Mode.TELEOP: 0.4}


@dataclass
class AssistConfig:
    """Settings of the assistance estimate.

    Attributes:
        estimator: ``"spacing"`` (published), ``"knn"`` or ``"gaussian"``.
        human_std: std of the human's input noise per action dimension (action units); sets the floor.
        alpha: effort penalty ``α_m`` per mode (multiplies the likelihood; 1 = no effort).
        temperature: ``τ`` in nats; ``None``: mean per-dimension ceiling − floor (1.0 without bounds).
        k_max: most discrete options to offer.
        silhouette_min: smallest mean silhouette for clusters to count as distinct options. 0.5 was
            tuned on the nav benchmark's tuning seeds (2000–2019; `bench_realm.py --parts tune`):
            a policy whose samples turn up or down a step or two earlier or later gives option
            clusters with silhouettes of 0.5–0.6, which the former 0.6 missed.
        option_gap_min: smallest gap between two options' mean chunks, in stds along the line joining
            them (:func:`option_gaps`). Default ``2√3``: the widest gap that cutting a symmetric
            unimodal spread in two can give, so a continuous spread is not offered as options.
        min_cluster: fraction of ``N`` below which a cluster is "tiny" and gets the floor.
        correction_dims: principal directions the human corrects per step.
        separation_min: options count as separated at a step when their means are at least this many
            stds apart (std: the larger of the human noise and the options' own spread along the
            line joining them); there the entropy is that of a mixture of separated components.
            At 4 stds the mixture entropy of two equal Gaussians is within 0.06 nats of
            ``log 2 + H_c``, the value the separated-mixture rule assumes.
        seed: seed of k-means initialisation and of the simulated human correction noise.
        convolve: estimate the entropy of the samples plus human input noise (seeded) instead of
            only clamping at the floor; then two tight modes far apart count as ``log 2`` above
            the floor even when each mode is narrower than the human's noise. Experimental: off by
            default (on the nav benchmark it lowered `none` accuracy; not re-calibrated).
    """

    estimator: str = "spacing"
    human_std: float | list[float] = 0.05
    alpha: dict[Mode, float] = field(default_factory=lambda: dict(DEFAULT_ALPHA))
    temperature: float | None = None
    k_max: int = 3
    silhouette_min: float = 0.5
    option_gap_min: float = float(UNIMODAL_SPLIT_GAP)
    min_cluster: float = 0.1
    correction_dims: int = 1
    separation_min: float = 4.0
    seed: int = 0
    convolve: bool = False

    def __post_init__(self) -> None:
        self.alpha = {Mode(k): float(v) for k, v in self.alpha.items()}
        missing = set(Mode) - set(self.alpha)
        if missing:
            raise ValueError(f"alpha needs a value for every mode; missing {sorted(m.value for m in missing)}")
        if any(not 0 < v <= 1 for v in self.alpha.values()):
            raise ValueError(f"alpha values must be in (0, 1], got {self.alpha}")
        if not self.option_gap_min >= 0:
            raise ValueError(f"option_gap_min must be >= 0, got {self.option_gap_min}")
        if not self.separation_min > 0:
            raise ValueError(f"separation_min must be > 0, got {self.separation_min}")
        if not 0 <= self.min_cluster < 1:
            raise ValueError(f"min_cluster must be in [0, 1), got {self.min_cluster}")
        if self.correction_dims < 1:
            raise ValueError(f"correction_dims must be >= 1, got {self.correction_dims}")


@dataclass
class DiscreteOptions:
    """The options to show the human for a discrete choice.

    Attributes:
        means: ``(k, T, D)`` mean action chunk of each option (action units).
        probs: ``(k,)`` share of samples in each option.
        labels: ``(N,)`` option index of each sample.
        silhouette: mean silhouette of the clustering (``nan`` for ``k = 1``).
    """

    means: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    silhouette: float


@dataclass
class CorrectionDirections:
    """Directions the human should correct: ``directions`` ``(T, c, D)`` unit vectors, ``stds`` ``(T, c)``
    the samples' spread along them (action units), largest first."""

    directions: np.ndarray
    stds: np.ndarray


@dataclass
class Assessment:
    """One assistance estimate.

    Attributes:
        entropy: ``(T,)`` per-step entropy of the forecast (nats).
        expected: mode → expected post-interaction entropy per step (nats).
        likelihood: mode → ``L(m)``. value: mode → ``V(m)``.
        best: ``argmax V``. floor, ceiling: total limits (nats per step).
        options: the discrete choice. directions: the correction directions.
    """

    entropy: np.ndarray
    expected: dict[Mode, float]
    likelihood: dict[Mode, float]
    value: dict[Mode, float]
    best: Mode
    floor: float
    ceiling: float
    options: DiscreteOptions
    directions: CorrectionDirections

    def summary(self) -> dict[str, object]:
        """JSON-ready scalars (for logs)."""
        return {
            "entropy": float(np.mean(self.entropy)),
            "expected": {m.value: round(v, 4) for m, v in self.expected.items()},
            "value": {m.value: round(v, 4) for m, v in self.value.items()},
            "best": self.best.value,
            "num_options": int(len(self.options.probs)),
        }


# ------------------------------------------------------------------------------------ clustering
def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 15) -> np.ndarray:
    """Labels ``(N,)`` of k-means (k-means++ init) on ``x`` ``(N, F)``; vectorised over samples."""
    n = x.shape[0]
    sq = (x**2).sum(1)
    idx = [int(rng.integers(n))]
    d2 = np.maximum(sq - 2 * x @ x[idx[0]] + sq[idx[0]], 0.0)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        idx.append(int(rng.choice(n, p=p)))
        d2 = np.minimum(d2, np.maximum(sq - 2 * x @ x[idx[-1]] + sq[idx[-1]], 0.0))
    c = x[idx]
    labels = np.full(n, -1)
    eye = np.eye(k)
    for _ in range(iters):
        new = np.argmin((c**2).sum(1)[None] - 2 * x @ c.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        onehot = eye[labels]  # (N, k)
        counts = onehot.sum(0)
        c = np.where(counts[:, None] > 0, (onehot.T @ x) / np.maximum(counts, 1)[:, None], c)
    return labels


def _silhouette(dist: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean silhouette from a ``(N, N)`` distance matrix."""
    onehot = np.eye(k)[labels]  # (N, k)
    counts = onehot.sum(0)
    if np.any(counts < 2):
        return -1.0
    sums = dist @ onehot  # (N, k): total distance to each cluster
    own = counts[labels]
    a = sums[np.arange(len(labels)), labels] / (own - 1)
    mean_to = sums / counts[None]
    mean_to[np.arange(len(labels)), labels] = np.inf
    b = mean_to.min(1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
    return float(np.mean(s))


def option_gaps(flat: np.ndarray, labels: np.ndarray, k: int, human_std: np.ndarray) -> np.ndarray:
    """Gap between every pair of the ``k`` clusters of ``flat`` ``(N, F)``, in stds: ``(k, k)``,
    ``inf`` on the diagonal.

    Gap = distance between the two cluster means divided by the std along the line joining them,
    the std being the largest of the human noise (``human_std`` ``(F,)``) and the two clusters' own
    spreads along that line. A symmetric unimodal spread cut at its mode has a gap of at most
    :data:`UNIMODAL_SPLIT_GAP` (up to sampling error); real options have wider gaps.
    """
    onehot = np.eye(k)[labels]  # (N, k)
    counts = np.maximum(onehot.sum(0), 1.0)
    means = (onehot.T @ flat) / counts[:, None]  # (k, F)
    resid = flat - means[labels]
    gaps = np.full((k, k), np.inf)
    for i in range(k):  # k <= k_max: a handful of pairs
        for j in range(i + 1, k):
            delta = means[i] - means[j]
            dist = float(np.linalg.norm(delta))
            u = delta / max(dist, 1e-12)
            var = float((u**2 * human_std**2).sum())
            proj2 = (resid @ u) ** 2
            for c in (i, j):
                var = max(var, float(onehot[:, c] @ proj2 / counts[c]))
            gaps[i, j] = gaps[j, i] = dist / np.sqrt(var)
    return gaps


def discrete_options(x: np.ndarray, cfg: AssistConfig, human_std: np.ndarray | None = None) -> DiscreteOptions:
    """Cluster chunks ``x`` ``(N, T, D)`` into options; ``k = 1`` unless clusters are distinct.

    k-means on the flattened chunks for ``k = 2 … k_max``; a clustering counts as options when its
    mean silhouette is at least ``cfg.silhouette_min`` *and* every pair of clusters is further
    apart than ``cfg.option_gap_min`` stds along the line joining their mean chunks (see
    :func:`option_gaps`; ``human_std`` ``(D,)``, default ``cfg.human_std``). The first test
    rejects high-dimensional noise that k-means can always cut; the second rejects a continuous
    1-D spread cut in two, which the silhouette does not (halves of a Gaussian: silhouette 0.56,
    gap 2.65; of a uniform: 0.63 and 2√3 — at the bound, so with N samples a uniform spread is
    still cut about half the time). Of the clusterings that pass, the one with the highest
    silhouette is kept.
    """
    n, t, d = x.shape
    flat = x.reshape(n, -1)
    single = DiscreteOptions(x.mean(0, keepdims=True), np.ones(1), np.zeros(n, dtype=int), float("nan"))
    if n < 4 or cfg.k_max < 2:
        return single
    sq = (flat**2).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * flat @ flat.T, 0.0))
    if dist.max() <= 1e-9:
        return single
    std = np.broadcast_to(np.asarray(cfg.human_std if human_std is None else human_std, np.float64), (d,))
    std_flat = np.tile(std, t)  # (T·D,) the human noise of every entry of a flattened chunk
    rng = np.random.default_rng(cfg.seed)
    best = (cfg.silhouette_min, None, 1)
    for k in range(2, min(cfg.k_max, n // 2) + 1):
        labels = _kmeans(flat, k, rng)
        s = _silhouette(dist, labels, k)
        if s > best[0] and option_gaps(flat, labels, k, std_flat).min() > cfg.option_gap_min:
            best = (s, labels, k)
    score, labels, k = best
    if labels is None:
        return single
    onehot = np.eye(k)[labels]
    counts = onehot.sum(0)
    means = np.einsum("nk,ntd->ktd", onehot, x) / counts[:, None, None]
    order = np.argsort(-counts)
    remap = np.empty(k, dtype=int)
    remap[order] = np.arange(k)
    return DiscreteOptions(means[order], counts[order] / n, remap[labels], score)


def correction_directions(x: np.ndarray, dims: int) -> CorrectionDirections:
    """Top-``dims`` principal directions of the samples at every step of ``x`` ``(N, T, D)``."""
    n, _, d = x.shape
    xc = np.swapaxes(x - x.mean(0, keepdims=True), 0, 1)  # (T, N, D)
    cov = (xc.transpose(0, 2, 1) @ xc) / max(n - 1, 1)  # (T, D, D)
    evals, evecs = np.linalg.eigh(cov)  # ascending
    c = min(dims, d)
    top = evecs[..., ::-1][..., :c]  # (T, D, c)
    stds = np.sqrt(np.maximum(evals[..., ::-1][..., :c], 0.0))  # (T, c)
    return CorrectionDirections(np.swapaxes(top, 1, 2), stds)


# ------------------------------------------------------------------------------------ the estimate
def pair_separation(x: np.ndarray, labels: np.ndarray, k: int, human_std: np.ndarray, separation_min: float
                    ) -> np.ndarray:
    """Which pairs of the ``k`` options labelled in ``x`` ``(N, T, D)`` are separated at each step:
    ``(k, k, T)`` bool, symmetric, ``True`` on the diagonal.

    Options ``i, j`` are separated at step ``t`` when ``|μ_i − μ_j| ≥ separation_min · s``, ``s`` the
    largest of the human noise std and the two options' own stds along ``μ_i − μ_j`` (action units).
    """
    _, t, _ = x.shape
    onehot = np.eye(k)[labels]  # (N, k)
    counts = np.maximum(onehot.sum(0), 1.0)
    means = np.einsum("nk,ntd->ktd", onehot, x) / counts[:, None, None]  # (k, T, D)
    resid = x - means[labels]  # (N, T, D)
    sep = np.ones((k, k, t), dtype=bool)
    for i in range(k):  # k <= k_max options: a handful of pairs
        for j in range(i + 1, k):
            delta = means[i] - means[j]  # (T, D)
            dist = np.linalg.norm(delta, axis=-1)
            u = delta / np.maximum(dist, 1e-12)[:, None]
            var = (u**2 * human_std**2).sum(-1)  # human noise variance along the joining line
            proj2 = np.einsum("ntd,td->nt", resid, u) ** 2  # (N, T)
            for c in (i, j):
                var = np.maximum(var, (onehot[:, c] @ proj2) / counts[c])
            sep[i, j] = sep[j, i] = dist >= separation_min * np.sqrt(var)
    return sep


def _step_groups(sep: np.ndarray) -> list[tuple[int, ...]]:
    """Per step, the partition of the ``k`` options of ``sep`` ``(k, k, T)`` into groups of options
    not separated from each other (connected components of "not separated"): one tuple per step
    giving each option's group id (the lowest option index in its group)."""
    k, _, t = sep.shape
    keys = []
    for s in range(t):  # steps, not samples: T <= chunk length
        group = list(range(k))
        for i in range(k):
            for j in range(i + 1, k):
                if not sep[i, j, s]:
                    old, new = group[j], group[i]
                    group = [new if g == old else g for g in group]
        keys.append(tuple(group))
    return keys


def floored_entropy(x: np.ndarray, options: DiscreteOptions, limits: EntropyLimits, cfg: AssistConfig,
                    with_chosen: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Entropy with a floor of ``x`` ``(N, T, D)`` given its option labels: ``(H (T,), H_chosen (T,))``.

    At each step the options are grouped so that options not separated from each other (see
    :func:`pair_separation`) share a group; then ``H = Σ_G [−P_G log P_G + P_G · max(H_G, floor)]``
    with ``P_G`` the group's share of samples and ``H_G`` the entropy of its samples (estimated on
    them, the floor for tiny groups). One option, or no separated pair: the direct estimate of all
    samples clamped into ``[floor, ceiling]``; all pairs separated: ``H(p) + Σ_c p_c max(H_c, floor)``.
    ``H_chosen`` is ``Σ_c p_c max(H_c, floor)``, the expected entropy once an option is chosen
    (``None`` unless ``with_chosen``). Each group's entropy is estimated at most once, and only
    when some step needs it.
    """
    n, t, _ = x.shape
    k = len(options.probs)
    if k < 2:
        direct = estimate_entropy(x, cfg.estimator, limits)
        return direct, (direct if with_chosen else None)
    min_n = max(5, int(np.ceil(cfg.min_cluster * n)))
    onehot = np.eye(k, dtype=bool)[options.labels]  # (N, k)
    cache: dict[tuple[int, ...], np.ndarray] = {}

    def group_entropy(members: tuple[int, ...]) -> np.ndarray:
        if members not in cache:
            rows = onehot[:, list(members)].any(axis=1)
            cache[members] = (estimate_entropy(x[rows], cfg.estimator, limits) if rows.sum() >= min_n
                              else np.full(t, limits.total_floor))
        return cache[members]

    keys = _step_groups(pair_separation(x, options.labels, k, limits.human_std, cfg.separation_min))
    h = np.empty(t)
    for key in set(keys):  # a few distinct groupings per chunk, each applied to all its steps at once
        steps = np.array([s for s, other in enumerate(keys) if other == key])
        total = np.zeros(len(steps))
        for g in set(key):
            members = tuple(c for c in range(k) if key[c] == g)
            p_g = float(options.probs[list(members)].sum())
            if p_g > 0:
                total += p_g * (group_entropy(members)[steps] - np.log(p_g))
        h[steps] = np.minimum(total, limits.total_ceiling)
    chosen = None
    if with_chosen:
        chosen = np.asarray(sum(float(p) * group_entropy((c,)) for c, p in enumerate(options.probs)),
                            dtype=np.float64)
    return h, chosen


def expected_entropies(x: np.ndarray, limits: EntropyLimits, cfg: AssistConfig
                       ) -> tuple[np.ndarray, dict[Mode, float], DiscreteOptions, CorrectionDirections]:
    """Per-step forecast entropy ``(T,)`` and each mode's expected entropy (nats per step)."""
    x_raw = x
    if cfg.convolve:  # what the human can resolve: the samples blurred by the human's own noise
        x = x + limits.human_std * np.random.default_rng(cfg.seed + 1).standard_normal(x.shape)
    floor = limits.total_floor
    options = discrete_options(x_raw, cfg, limits.human_std)
    h_none, h_chosen = floored_entropy(x, options, limits, cfg)
    none = float(h_none.mean())
    dirs = correction_directions(x_raw, cfg.correction_dims)
    u = np.swapaxes(dirs.directions, 1, 2)  # (T, D, c)
    xc = np.swapaxes(x - x.mean(0, keepdims=True), 0, 1)  # (T, N, D)
    coeff = xc @ u  # projections (T, N, c)
    human = np.sqrt((u**2 * (limits.human_std**2)[None, :, None]).sum(1))  # (T, c) human std along each direction
    z = np.random.default_rng(cfg.seed).standard_normal(coeff.shape)
    corrected = x - np.swapaxes((coeff - human[:, None] * z) @ np.swapaxes(u, 1, 2), 0, 1)
    h_corr, _ = floored_entropy(corrected, options, limits, cfg, with_chosen=False)
    expected = {Mode.NONE: none, Mode.DISCRETE: min(float(h_chosen.mean()), none),
                Mode.CORRECTION: min(float(h_corr.mean()), none), Mode.TELEOP: floor}
    return h_none, expected, options, dirs


def assess(samples: np.ndarray, limits: EntropyLimits, cfg: AssistConfig | None = None) -> Assessment:
    """Expected entropies, ``L(m)``, ``V(m)``, the best mode, options and directions for ``(N, T, D)``.

    Raises :class:`~embodied_steer.realm.entropy.EntropyInputError` on samples no entropy can be
    estimated from (the monitor turns that into a defined record instead of raising).
    """
    cfg = cfg or AssistConfig()
    from embodied_steer.realm.entropy import MIN_SAMPLES

    x = as_chunks(samples, min_samples=MIN_SAMPLES.get(cfg.estimator, 3))
    h_none, expected, options, dirs = expected_entropies(x, limits, cfg)
    tau = cfg.temperature or limits.range_per_dim
    floor = limits.total_floor
    likelihood = {m: float(np.exp(-max(h - floor, 0.0) / tau)) for m, h in expected.items()}
    value = {m: cfg.alpha[m] * likelihood[m] for m in Mode}
    best = max(Mode, key=lambda m: (value[m], -list(Mode).index(m)))
    return Assessment(h_none, expected, likelihood, value, best, floor, limits.total_ceiling, options, dirs)


class Recommender:
    """Hysteresis on top of ``argmax V``: switch only when another mode is clearly and persistently better.

    A new mode replaces the current one when its value exceeds the current mode's value by at
    least ``margin`` (relative, i.e. ``V_new > (1 + margin) V_cur``) at ``patience`` consecutive
    updates. The first update adopts the best mode at once.
    """

    def __init__(self, margin: float = 0.1, patience: int = 2) -> None:
        if margin < 0 or patience < 1:
            raise ValueError(f"need margin >= 0 and patience >= 1, got {margin}, {patience}")
        self.margin, self.patience = margin, patience
        self.reset()

    def reset(self) -> None:
        self.current: Mode | None = None
        self._candidate: Mode | None = None
        self._count = 0

    def update(self, value: dict[Mode, float]) -> Mode:
        """Feed one step's ``V(m)``; return the mode to recommend now."""
        best = max(Mode, key=lambda m: (value[m], -list(Mode).index(m)))
        if self.current is None:
            self.current = best
        elif best != self.current and value[best] > (1 + self.margin) * value[self.current]:
            self._count = self._count + 1 if best == self._candidate else 1
            self._candidate = best
            if self._count >= self.patience:
                self.current, self._candidate, self._count = best, None, 0
        else:
            self._candidate, self._count = None, 0
        return self.current
