"""Roll out a policy in an environment for N seeded episodes and keep every result.

Each finished episode is appended to ``episodes.jsonl`` at once (one whole line per write, flushed
to disk), so a crash or an interruption never loses the episodes already run; ``resume=True`` skips
the episodes a previous run of the same folder finished. Reading the folder back
(:func:`read_results`) keeps the first record of each episode id and drops a torn last line, so
every episode counts once. The distributed evaluator (:mod:`embodied_steer.distributed`) writes the
same folder through the same functions. A crash *inside* an episode (a policy that produced NaN, an
observation of the wrong shape, a simulator error) is recorded as that episode's result with
``status="crashed"`` and the error message, and the evaluation goes on.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from embodied_steer.core.policy import SteerablePolicy
from embodied_steer.core.types import ActionChunk, Observation
from embodied_steer.eval.stats import wilson_interval
from embodied_steer.sim.base import to_observation

log = logging.getLogger(__name__)

ActFn = Callable[[SteerablePolicy, Observation], ActionChunk]
"""How the runner asks a policy for a chunk; capabilities wrap this to apply interventions."""


def default_act(policy: SteerablePolicy, obs: Observation) -> ActionChunk:
    return policy.act(obs)


def reset_act(act: ActFn, seed: int) -> None:
    """Start an episode for an act function that keeps its own random stream.

    An act function may have a ``reset(seed)`` method (e.g. the noise-scale intervention, which
    draws its own noise); the runner calls it with the episode seed right after ``policy.reset``,
    so an episode's actions depend only on its own seed, wherever and in whatever order it runs.
    """
    reset = getattr(act, "reset", None)
    if callable(reset):
        reset(seed)


@dataclass
class EpisodeResult:
    """One episode's outcome (a row of ``episodes.jsonl`` / ``episodes.csv``)."""

    episode: int
    seed: int
    success: bool
    steps: int
    reward: float
    seconds: float
    inference_seconds: float
    status: str = "ok"
    error: str | None = None
    video: str | None = None
    info: dict[str, Any] | None = None
    """What the act function reports about the episode (``act.episode_info()``), e.g. guidance fallbacks."""


@dataclass
class EvalSummary:
    """Aggregate of an evaluation, written to ``summary.json``."""

    env: str
    policy: str
    episodes: int
    successes: int
    crashed: int
    success_rate: float
    ci95: tuple[float, float]
    mean_steps: float
    mean_seconds: float
    render_settings: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        lo, hi = self.ci95
        rows = [
            ("env", self.env), ("policy", self.policy), ("episodes", str(self.episodes)),
            ("success rate", f"{self.success_rate:.3f}  (95% CI {lo:.3f}–{hi:.3f}, Wilson)"),
            ("successes", str(self.successes)), ("crashed", str(self.crashed)),
            ("mean episode length", f"{self.mean_steps:.1f} steps"),
            ("mean episode time", f"{self.mean_seconds:.2f} s"),
            ("render", json.dumps(self.render_settings)),
        ]
        width = max(len(k) for k, _ in rows)
        vwidth = max(len(v) for _, v in rows)
        line = "+" + "-" * (width + 2) + "+" + "-" * (vwidth + 2) + "+"
        body = "\n".join(f"| {k:<{width}} | {v:<{vwidth}} |" for k, v in rows)
        return f"{line}\n{body}\n{line}"


def run_episode(
    env,
    policy: SteerablePolicy,
    *,
    episode: int,
    seed: int,
    max_steps: int | None = None,
    execute_steps: int | None = None,
    act: ActFn = default_act,
    frames: list[np.ndarray] | None = None,
    on_step: Callable[[dict[str, Any], np.ndarray], None] | None = None,
    reseed_policy: bool = True,
) -> EpisodeResult:
    """Run one episode with receding-horizon chunk execution.

    The policy is asked for a chunk, the first ``execute_steps`` actions are executed (the policy
    observes every intermediate observation), then it is asked again. Exceptions propagate.

    Args:
        frames: if given, receives one picture per step (all cameras side by side).
        on_step: called with each observation dict and the action executed from it.
        reseed_policy: re-seed the policy with ``seed`` (default); ``False`` keeps its own
            random stream running across episodes (how demonstrations are recorded).
    """
    max_steps = max_steps or env.spec_info.max_episode_steps
    execute_steps = execute_steps or policy.info.execute_steps
    dt = 1.0 / env.spec_info.control_hz
    obs_dict, info = env.reset(seed=seed)
    policy.reset(seed=seed if reseed_policy else None)
    if reseed_policy:
        reset_act(act, seed)
    start = time.perf_counter()
    infer = 0.0
    total_reward = 0.0
    queue: list[np.ndarray] = []
    step = 0
    success = bool(info.get("is_success", False))
    while step < max_steps:
        obs = to_observation(obs_dict, env.instruction, step * dt)
        if frames is not None:
            frames.append(_frame(obs))
        if not queue:
            t0 = time.perf_counter()
            chunk = act(policy, obs)
            infer += time.perf_counter() - t0
            queue = list(chunk.actions[: max(1, execute_steps)])
        else:
            policy.observe(obs)
        action = queue.pop(0)
        if on_step is not None:
            on_step(obs_dict, action)
        obs_dict, reward, terminated, truncated, info = env.step(action)
        total_reward += float(reward)
        step += 1
        success = success or bool(info.get("is_success", False))
        if terminated or truncated:
            break
    return EpisodeResult(
        episode=episode, seed=seed, success=success, steps=step, reward=total_reward,
        seconds=time.perf_counter() - start, inference_seconds=infer, info=_episode_info(act, env),
    )


def _episode_info(act: ActFn, env: Any) -> dict[str, Any] | None:
    """What the act function and the environment report about the finished episode.

    Both may have an ``episode_info()`` method; the environment's keys (e.g. obstacle contacts) are
    added to the act function's. ``None`` when the act function has no report and the environment's
    is empty (as before environments could report)."""
    act_report = getattr(act, "episode_info", None)
    info: dict[str, Any] | None = act_report() if callable(act_report) else None
    env_report = getattr(env, "episode_info", None)
    extra = env_report() if callable(env_report) else None
    if extra:
        info = {**(info or {}), **extra}
    return info


def run_episode_safely(env, policy: SteerablePolicy, *, episode: int, seed: int, **kwargs: Any) -> EpisodeResult:
    """:func:`run_episode`, with an exception inside the episode recorded as a crashed result."""
    try:
        return run_episode(env, policy, episode=episode, seed=seed, **kwargs)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a crashed episode is a result, not the end of the run
        log.warning("episode %d crashed: %s", episode, exc)
        log.debug("traceback:\n%s", traceback.format_exc())
        return EpisodeResult(episode=episode, seed=seed, success=False, steps=0, reward=0.0, seconds=0.0,
                             inference_seconds=0.0, status="crashed", error=f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------- results folder
def read_results(path: str | Path) -> dict[int, EpisodeResult]:
    """Episode id → result from an ``episodes.jsonl``; missing file: ``{}``.

    The first record of an episode id wins (a duplicate can only be a second copy of a finished
    episode); a line that does not parse (a write torn by a crash) is skipped with a warning.
    """
    path = Path(path)
    done: dict[int, EpisodeResult] = {}
    if not path.exists():
        return done
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = EpisodeResult(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as exc:
            log.warning("%s:%d: skipping unreadable record (%s)", path, number, exc)
            continue
        done.setdefault(rec.episode, rec)
    return done


def rewrite_results(path: str | Path, results: list[EpisodeResult]) -> None:
    """Replace ``episodes.jsonl`` with ``results`` in one atomic rename (clean lines, no duplicates)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(asdict(r)) + "\n" for r in results))
    os.replace(tmp, path)


class ResultSink:
    """Appends results to ``episodes.jsonl``: one ``write`` of a whole line each, then fsync.

    A crash can at worst leave one torn last line, which :func:`read_results` skips.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, result: EpisodeResult) -> None:
        os.write(self._fd, (json.dumps(asdict(result)) + "\n").encode())
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ResultSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_results(out: Path, *, resume: bool) -> dict[int, EpisodeResult]:
    """Make ``out`` ready for appending; with ``resume``, return the episodes already finished."""
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "episodes.jsonl"
    done: dict[int, EpisodeResult] = {}
    if resume and records_path.exists():
        done = read_results(records_path)
        rewrite_results(records_path, [done[i] for i in sorted(done)])
        log.info("resuming: %d episodes already finished in %s", len(done), out)
    elif records_path.exists():
        records_path.unlink()
    return done


def finish_results(out: Path, results: list[EpisodeResult], *, env: str, policy: str,
                   render_settings: dict[str, Any], extra: dict[str, Any]) -> EvalSummary:
    """Write ``episodes.csv``, ``summary.json`` and ``plot.png`` for ``results``; return the summary."""
    results = sorted(results, key=lambda r: r.episode)
    summary = summarize(results, env=env, policy=policy, render_settings=render_settings, extra=extra)
    _write_csv(out / "episodes.csv", results)
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    from embodied_steer.eval.plots import plot_episodes

    plot_episodes(results, out / "plot.png", title=f"{summary.policy} on {summary.env}")
    return summary


def _frame(obs: Observation) -> np.ndarray | None:
    if not obs.images:
        return None
    return np.concatenate([obs.images[k] for k in sorted(obs.images)], axis=1)


def evaluate(
    env,
    policy: SteerablePolicy,
    *,
    episodes: int,
    seed: int,
    output_dir: str | Path,
    max_steps: int | None = None,
    execute_steps: int | None = None,
    act: ActFn = default_act,
    video_every: int = 0,
    video_fps: int = 20,
    resume: bool = False,
    extra: dict[str, Any] | None = None,
) -> EvalSummary:
    """Evaluate ``policy`` for ``episodes`` episodes; episode ``i`` is reset with ``seed + i``.

    Writes to ``output_dir``: ``episodes.jsonl`` (appended live), ``episodes.csv``,
    ``summary.json``, ``plot.png`` and, with ``video_every > 0``, ``videos/episode_XXXX.mp4`` for
    every ``video_every``-th episode (needs an environment with cameras).
    """
    out = Path(output_dir)
    if video_every and not env.observation_space.spaces.get("pixels"):
        raise ValueError("videos need an environment that renders cameras (e.g. env.cameras=[agentview])")
    done = prepare_results(out, resume=resume)

    results: list[EpisodeResult] = [done[i] for i in sorted(done) if i < episodes]
    bar = tqdm(total=episodes, initial=len(results), desc=f"eval {policy.info.name} on {env.spec_info.name}",
               unit="ep", mininterval=2)
    with ResultSink(out / "episodes.jsonl") as sink:
        for i in range(episodes):
            if i in done:
                continue
            want_video = bool(video_every) and i % video_every == 0
            frames: list[np.ndarray] | None = [] if want_video else None
            result = run_episode_safely(env, policy, episode=i, seed=seed + i, max_steps=max_steps,
                                        execute_steps=execute_steps, act=act, frames=frames)
            if frames:
                result.video = str(_write_video(out / "videos" / f"episode_{i:04d}.mp4", frames, video_fps))
            results.append(result)
            sink.append(result)
            bar.update(1)
            bar.set_postfix(success=f"{np.mean([r.success for r in results]):.2f}")
    bar.close()
    return finish_results(out, results, env=env.spec_info.name, policy=policy.info.name,
                          render_settings=env.render_settings.as_dict(), extra=extra or {})


def summarize(results: list[EpisodeResult], *, env: str, policy: str, render_settings: dict[str, Any],
              extra: dict[str, Any]) -> EvalSummary:
    n = len(results)
    successes = sum(r.success for r in results)
    ok = [r for r in results if r.status == "ok"] or results
    return EvalSummary(
        env=env, policy=policy, episodes=n, successes=successes,
        crashed=sum(r.status == "crashed" for r in results),
        success_rate=successes / n if n else 0.0, ci95=wilson_interval(successes, n),
        mean_steps=float(np.mean([r.steps for r in ok])) if ok else 0.0,
        mean_seconds=float(np.mean([r.seconds for r in ok])) if ok else 0.0,
        render_settings=render_settings, extra=extra,
    )


def _write_csv(path: Path, results: list[EpisodeResult]) -> None:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(results[0])) if results else ["episode"])
        writer.writeheader()
        for r in results:
            writer.writerow(asdict(r))


def _write_video(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    stack = np.stack([f for f in frames if f is not None])
    iio.imwrite(path, stack, plugin="pyav", codec="libx264", fps=fps)
    return path
