"""Online assistance monitor: runs beside any policy with the ``SAMPLES`` intervention point.

At each query the monitor draws ``N`` action chunks for the current observation, estimates the
per-step entropies and each assistance mode's value (:func:`~embodied_steer.realm.modes.assess`),
and recommends a mode with hysteresis. Every query becomes a :class:`MonitorRecord` (JSON lines).

Two ways to use it:

* standalone: ``monitor.step(obs)`` (the policy observes ``obs``, then samples);
* inside ``embodied_steer.eval`` : ``monitor.wrap(act)`` returns an act function that first asks
  the wrapped act function for the chunk to execute (so the executed behaviour is the policy's
  own), then draws the samples from the same observation history with ``policy.generate``.
  Drawing samples advances the policy's random generator, so a run with the monitor executes
  different (equally distributed) chunks than one without.

Bad samples (NaN, too few) never raise inside the control loop: the record gets
``status="invalid: …"``, entropies at the floor, and the recommendation stays where it was.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embodied_steer.core.policy import InterventionPoint, SteerablePolicy
from embodied_steer.core.types import ActionChunk, Observation
from embodied_steer.eval.runner import reset_act
from embodied_steer.realm.entropy import EntropyInputError, EntropyLimits
from embodied_steer.realm.modes import Assessment, AssistConfig, Mode, Recommender, assess

MODE_COLORS = {"none": "#d9f0d3", "discrete": "#c6dbef", "correction": "#fdd0a2", "teleop": "#fcbba1"}


@dataclass
class MonitorRecord:
    """One monitor query (a line of ``assist.jsonl``).

    Attributes:
        episode, step: episode index and query index within it.
        timestamp: the observation's time (s).
        entropy: mean per-step entropy of the forecast (nats); entropy_steps: ``(T,)`` values.
        expected: mode → expected post-interaction entropy (nats per step).
        value: mode → ``V(m)``. best: ``argmax V`` now. recommended: after hysteresis.
        num_options: discrete options found. options: ``(k, D)`` first action of each option.
        option_probs: ``(k,)``. direction: ``(D,)`` first correction direction at step 0.
        sample_ms: time to draw the samples. estimate_ms: time of the estimate.
        status: ``"ok"`` or ``"invalid: <reason>"``.
        truth: ground-truth label when the caller knows it (benchmarks).
    """

    episode: int
    step: int
    timestamp: float
    entropy: float
    entropy_steps: list[float]
    expected: dict[str, float]
    value: dict[str, float]
    best: str
    recommended: str
    num_options: int
    options: list[list[float]]
    option_probs: list[float]
    direction: list[float]
    sample_ms: float
    estimate_ms: float
    status: str = "ok"
    truth: str | None = None


class AssistanceMonitor:
    """Estimate, per query, which human assistance would help a policy most for the least effort.

    Args:
        policy: a policy that supports ``SAMPLES``.
        config: the estimate's settings (:class:`AssistConfig`).
        samples: ``N`` action chunks per query.
        margin, patience: hysteresis of the :class:`Recommender`.
        log_path: when given, every record is appended to this JSON-lines file at once.
    """

    def __init__(self, policy: SteerablePolicy, config: AssistConfig | None = None, *, samples: int = 50,
                 margin: float = 0.1, patience: int = 2, log_path: str | Path | None = None) -> None:
        policy.require(InterventionPoint.SAMPLES, "the assistance monitor")
        self.policy = policy
        self.config = config or AssistConfig()
        self.samples = int(samples)
        if self.samples < 2:
            raise ValueError(f"the monitor needs at least 2 samples per query, got {samples}")
        self.recommender = Recommender(margin, patience)
        self.records: list[MonitorRecord] = []
        self.log_path = None if log_path is None else Path(log_path)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text("")
        self.episode = -1
        self._step = 0
        self._limits: EntropyLimits | None = None
        self.last: Assessment | None = None

    # ------------------------------------------------------------------ episode bookkeeping
    def reset(self) -> None:
        """Start a new episode: the hysteresis forgets the previous mode."""
        self.episode += 1
        self._step = 0
        self.recommender.reset()

    def limits(self, dim: int) -> EntropyLimits:
        if self._limits is None or self._limits.dim != dim:
            self._limits = EntropyLimits.from_noise(self.config.human_std, dim, self.policy.info.action_bounds)
        return self._limits

    # ------------------------------------------------------------------ queries
    def step(self, obs: Observation, truth: str | None = None) -> MonitorRecord:
        """Observe ``obs``, draw the samples and record an estimate (standalone use)."""
        if self.episode < 0:
            self.reset()
        t0 = time.perf_counter()
        samples = self.policy.sample(obs, self.samples).actions
        return self.estimate(samples, timestamp=obs.timestamp, sample_ms=1e3 * (time.perf_counter() - t0), truth=truth)

    def query_history(self, timestamp: float = 0.0, truth: str | None = None) -> MonitorRecord:
        """Draw samples from the policy's current observation history (no new observation)."""
        if self.episode < 0:
            self.reset()
        t0 = time.perf_counter()
        samples = self.policy.generate(self.samples).actions
        return self.estimate(samples, timestamp=timestamp, sample_ms=1e3 * (time.perf_counter() - t0), truth=truth)

    def estimate(self, samples: np.ndarray, *, timestamp: float = 0.0, sample_ms: float = 0.0,
                 truth: str | None = None) -> MonitorRecord:
        """Estimate from given samples ``(N, T, D)``; never raises on degenerate samples."""
        if self.episode < 0:
            self.reset()
        t0 = time.perf_counter()
        x = np.asarray(samples)
        dim = int(x.shape[-1]) if x.ndim >= 2 else 1
        try:
            a = assess(x, self.limits(dim), self.config)
            status = "ok"
        except EntropyInputError as exc:
            a, status = None, f"invalid: {exc}"
        estimate_ms = 1e3 * (time.perf_counter() - t0)
        if a is not None:
            self.last = a
            recommended = self.recommender.update(a.value).value
            opts = a.options
            rec = MonitorRecord(
                episode=self.episode, step=self._step, timestamp=float(timestamp),
                entropy=float(np.mean(a.entropy)), entropy_steps=[round(float(v), 4) for v in a.entropy],
                expected={m.value: float(v) for m, v in a.expected.items()},
                value={m.value: float(v) for m, v in a.value.items()}, best=a.best.value, recommended=recommended,
                num_options=int(len(opts.probs)), options=np.round(opts.means[:, 0], 4).tolist(),
                option_probs=np.round(opts.probs, 4).tolist(),
                direction=np.round(a.directions.directions[0, 0], 4).tolist(),
                sample_ms=float(sample_ms), estimate_ms=float(estimate_ms), status=status, truth=truth,
            )
        else:
            floor = self.limits(dim).total_floor
            current = self.recommender.current.value if self.recommender.current else Mode.NONE.value
            rec = MonitorRecord(
                episode=self.episode, step=self._step, timestamp=float(timestamp), entropy=floor, entropy_steps=[],
                expected={m.value: floor for m in Mode}, value={}, best=current, recommended=current,
                num_options=0, options=[], option_probs=[], direction=[], sample_ms=float(sample_ms),
                estimate_ms=float(estimate_ms), status=status, truth=truth,
            )
        self._step += 1
        self.records.append(rec)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(asdict(rec)) + "\n")
        return rec

    # ------------------------------------------------------------------ evaluation hook
    def wrap(self, act):
        """An ``ActFn`` that executes ``act``'s chunk and queries the monitor on the same history.

        A new episode is detected from ``obs.timestamp == 0`` (the runner starts every episode at 0).
        """

        def monitored(policy: SteerablePolicy, obs: Observation) -> ActionChunk:
            if obs.timestamp == 0.0 or self.episode < 0:
                self.reset()
            chunk = act(policy, obs)
            self.query_history(obs.timestamp)
            return chunk

        monitored.reset = lambda seed: reset_act(act, seed)  # type: ignore[attr-defined]
        if callable(getattr(act, "episode_info", None)):
            monitored.episode_info = act.episode_info  # type: ignore[attr-defined]
        return monitored

    def summary(self) -> dict[str, Any]:
        """Counts of recommended modes and latency statistics over all records."""
        ok = [r for r in self.records if r.status == "ok"]
        counts = {m.value: sum(r.recommended == m.value for r in self.records) for m in Mode}
        est = [r.estimate_ms for r in ok] or [math.nan]
        smp = [r.sample_ms for r in ok] or [math.nan]
        return {"queries": len(self.records), "invalid": len(self.records) - len(ok), "recommended": counts,
                "estimate_ms_median": float(np.median(est)), "sample_ms_median": float(np.median(smp))}


def load_records(path: str | Path) -> list[MonitorRecord]:
    """Read a JSON-lines log written by the monitor."""
    return [MonitorRecord(**json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_assistance(records: Sequence[MonitorRecord], path: str | Path, *, title: str = "",
                    x: Sequence[float] | None = None, xlabel: str = "query") -> Path:
    """Plot entropy over an episode with the recommended mode as background colour.

    Top: forecast entropy and each mode's expected entropy (nats/step) with the floor. Bottom:
    recommended mode (and ground truth when the records have it). ``x``: optional x values (e.g.
    the robot's position); default the query index.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = list(records)
    xs = np.arange(len(recs)) if x is None else np.asarray(x, dtype=float)
    modes = [m.value for m in Mode]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for i, r in enumerate(recs):
        lo = xs[i] - (xs[i] - xs[i - 1]) / 2 if i > 0 else xs[i]
        hi = xs[i] + (xs[i + 1] - xs[i]) / 2 if i + 1 < len(recs) else xs[i]
        ax.axvspan(lo, hi, color=MODE_COLORS.get(r.recommended, "#eeeeee"), lw=0)
    ax.plot(xs, [r.entropy for r in recs], "k-", lw=1.5, label="forecast H (none)")
    for m, color in (("discrete", "#2171b5"), ("correction", "#d94801")):
        ax.plot(xs, [r.expected.get(m, np.nan) for r in recs], "--", lw=1, label=f"E[H] {m}", color=color)
    ax.plot(xs, [r.expected.get("teleop", np.nan) for r in recs], ":", color="gray", label="floor (teleop)")
    ax.set_ylabel("entropy (nats / step)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=MODE_COLORS[m]) for m in modes]
    leg1 = ax.legend(loc="upper left", fontsize=7)
    ax.add_artist(leg1)
    ax.legend(handles, [f"recommended: {m}" for m in modes], loc="upper right", fontsize=7)
    ax.set_title(title or "assistance estimate")
    ax2.step(xs, [modes.index(r.recommended) for r in recs], where="mid", label="recommended")
    if any(r.truth for r in recs):
        ax2.plot(xs, [modes.index(r.truth) if r.truth in modes else np.nan for r in recs], "r.", ms=3, label="truth")
    ax2.set_yticks(range(len(modes)), modes, fontsize=7)
    ax2.set_xlabel(xlabel)
    ax2.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


ASSIST_KEYS = {"enabled", "samples", "estimator", "human_std", "alpha", "temperature", "k_max", "silhouette_min",
               "option_gap_min", "min_cluster", "correction_dims", "margin", "patience", "seed", "plot_episodes"}


def monitor_from_settings(settings: Any, policy: SteerablePolicy, output_dir: str | Path) -> AssistanceMonitor | None:
    """Build the monitor of an ``assist:`` config block (``None`` unless ``enabled``); logs to
    ``output_dir/assist.jsonl``. Unknown keys and a policy without ``SAMPLES`` are errors up front."""
    s = dict(settings or {})
    unknown = set(s) - ASSIST_KEYS
    if unknown:
        raise ValueError(f"unknown assist settings {sorted(unknown)}; known: {sorted(ASSIST_KEYS)}")
    if not s.get("enabled", False):
        return None
    fields = {k: s[k] for k in ("estimator", "human_std", "temperature", "k_max", "silhouette_min", "option_gap_min",
                                "min_cluster", "correction_dims", "seed") if s.get(k) is not None}
    if s.get("alpha") is not None:
        fields["alpha"] = {**AssistConfig().alpha, **{Mode(k): float(v) for k, v in dict(s["alpha"]).items()}}
    if isinstance(fields.get("human_std"), (list, tuple)):
        fields["human_std"] = [float(v) for v in fields["human_std"]]
    return AssistanceMonitor(policy, AssistConfig(**fields), samples=int(s.get("samples", 50)),
                             margin=float(s.get("margin", 0.1)), patience=int(s.get("patience", 2)),
                             log_path=Path(output_dir) / "assist.jsonl")


def finish_monitor(monitor: AssistanceMonitor, output_dir: str | Path, plot_episodes: int = 3) -> dict[str, Any]:
    """Write ``assist_summary.json`` and ``assist_episode_XXXX.png`` for the first episodes; return the summary."""
    out = Path(output_dir)
    summary = monitor.summary()
    (out / "assist_summary.json").write_text(json.dumps(summary, indent=2))
    for ep in range(min(plot_episodes, monitor.episode + 1)):
        recs = [r for r in monitor.records if r.episode == ep]
        if recs:
            plot_assistance(recs, out / f"assist_episode_{ep:04d}.png", x=[r.timestamp for r in recs],
                            xlabel="time (s)", title=f"{monitor.policy.info.name}: episode {ep}")
    return summary
