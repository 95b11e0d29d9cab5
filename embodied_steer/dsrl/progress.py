"""Book-keeping shared by every DSRL trainer: counters, periodic log line, evaluation, curve, plot.

Everything a run produces lives in its output folder:

``curve.jsonl``   one row per evaluation: env steps, success rate, mean return, wall seconds
``train.jsonl``   one row per finished training episode (env steps, success, return)
``tb/``           TensorBoard scalars (``eval/success_rate``, ``train/success``, losses)
``curve.png``     success rate vs environment steps (redrawn at each evaluation)
``checkpoint/``   the last checkpoint (see the trainers)
``adapters/``     with ``keep_eval_adapters``: the adapter as it was at each evaluation,
                  ``adapters/step_<env steps>/`` (re-evaluate any point of the curve on more episodes)
``adapter_best/`` the adapter of the best evaluation so far (ties go to the later one), with
                  ``selection.json`` saying which; DSRL algorithms only. It was chosen on the
                  evaluation seeds (``eval_seed`` …), so its number there overstates it: measure it on
                  other seeds (``benchmarks/bench_dsrl_snapshots.py --best``) before quoting one
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger("embodied_steer.dsrl")
BEST_ADAPTER = "adapter_best"
SELECTION_FILE = "selection.json"

AgentAct = Callable[[np.ndarray], np.ndarray]
"""Deterministic agent: observation ``(D_obs,)`` → action ``(A,)``."""


@dataclass
class Counters:
    """What a checkpoint must carry so that a resumed run continues where it stopped."""

    env_steps: int = 0
    agent_steps: int = 0
    episodes: int = 0
    updates: int = 0
    next_eval: int = 0
    next_checkpoint: int = 0
    next_log: int = 0
    wall_seconds: float = 0.0
    recent_success: list[int] = field(default_factory=list)


def evaluate_agent(env, act: AgentAct, episodes: int, seed: int) -> dict[str, float]:
    """Run ``episodes`` episodes (episode ``i`` reset with ``seed + i``) with a deterministic agent.

    ``env`` is a :class:`~embodied_steer.dsrl.wrapper.LatentNoiseEnv` or
    :class:`~embodied_steer.dsrl.raw.RawActionEnv`; success is ``info["is_success"]`` at any step.
    """
    successes, returns, lengths = [], [], []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        done, success, ret, steps = False, bool(info.get("is_success", False)), 0.0, 0
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            ret += reward
            steps += int(info.get("env_steps", 1))
            success = success or bool(info.get("is_success", False))
            done = terminated or truncated
        successes.append(success)
        returns.append(ret)
        lengths.append(steps)
    return {"success_rate": float(np.mean(successes)), "mean_return": float(np.mean(returns)),
            "mean_length": float(np.mean(lengths)), "eval_episodes": episodes}


def write_folder_atomically(folder: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary folder, then swap it in for ``folder``, so that a kill never
    leaves half of one (a checkpoint, an adapter)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def is_better(row: dict, best: dict | None) -> bool:
    """Whether evaluation ``row`` replaces ``best``: a higher success rate, or the same one later in the
    run (the rule ``bench_dsrl_snapshots.py --top`` ranks by, so both pick the same snapshot)."""
    return best is None or (row["success_rate"], row["env_steps"]) >= (best["success_rate"], best["env_steps"])


def read_selection(out: Path) -> dict | None:
    """``adapter_best/selection.json`` of a run: the evaluation row its best adapter was chosen by."""
    path = Path(out) / BEST_ADAPTER / SELECTION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


class Progress:
    """Counters, periodic log lines, evaluations and the learning curve of one run."""

    def __init__(self, out: Path, *, algo: str, eval_env, eval_episodes: int, eval_seed: int, eval_every: int,
                 checkpoint_every: int, log_every: int, total_env_steps: int, counters: Counters | None = None):
        self.out = out
        self.algo = algo
        self.eval_env = eval_env
        self.eval_episodes = eval_episodes
        self.eval_seed = eval_seed
        self.eval_every = eval_every
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.total_env_steps = total_env_steps
        self.c = counters or Counters()
        self.best = read_selection(out)
        self._t0 = time.perf_counter() - self.c.wall_seconds
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(out / "tb"))

    @property
    def wall(self) -> float:
        return time.perf_counter() - self._t0

    @property
    def done(self) -> bool:
        return self.c.env_steps >= self.total_env_steps

    def record_step(self, env_steps: int, episode_end: bool, success: bool, episode_return: float) -> None:
        self.c.env_steps += int(env_steps)
        self.c.agent_steps += 1
        if episode_end:
            self.c.episodes += 1
            self.c.recent_success = (self.c.recent_success + [int(success)])[-20:]
            self.tb.add_scalar("train/success", float(success), self.c.env_steps)
            self.tb.add_scalar("train/return", episode_return, self.c.env_steps)
            with open(self.out / "train.jsonl", "a") as f:
                f.write(json.dumps({"env_steps": self.c.env_steps, "episode": self.c.episodes, "success": bool(success),
                                    "return": float(episode_return)}) + "\n")

    def scalars(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.tb.add_scalar(k, float(v), self.c.env_steps)

    def maybe_log(self) -> None:
        if self.c.env_steps < self.c.next_log:
            return
        self.c.next_log = self.c.env_steps + self.log_every
        recent = np.mean(self.c.recent_success) if self.c.recent_success else float("nan")
        log.info("%s: %d/%d env steps, %d episodes, %d updates, train success (last 20) %.2f, %.0f s",
                 self.algo, self.c.env_steps, self.total_env_steps, self.c.episodes, self.c.updates, recent, self.wall)

    def due_eval(self) -> bool:
        return self.c.env_steps >= self.c.next_eval or self.done

    def run_eval(self, act: AgentAct) -> dict[str, float]:
        t0 = time.perf_counter()
        result = evaluate_agent(self.eval_env, act, self.eval_episodes, self.eval_seed)
        self.c.next_eval = self.c.env_steps + self.eval_every
        row = {"env_steps": self.c.env_steps, "agent_steps": self.c.agent_steps, "episodes": self.c.episodes,
               "wall_seconds": round(self.wall, 1), "eval_seconds": round(time.perf_counter() - t0, 1), **result}
        with open(self.out / "curve.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        self.tb.add_scalar("eval/success_rate", result["success_rate"], self.c.env_steps)
        self.tb.add_scalar("eval/mean_return", result["mean_return"], self.c.env_steps)
        self.tb.flush()
        plot_curves({self.algo: read_curve(self.out)}, self.out / "curve.png", title=f"{self.algo}: eval success")
        log.info("%s eval at %d env steps: success %.2f over %d episodes (%.0f s)", self.algo, self.c.env_steps,
                 result["success_rate"], self.eval_episodes, row["eval_seconds"])
        return row

    def keep_eval_adapters(self, row: dict, export: Callable[[Path], None], keep_every: bool) -> None:
        """After evaluation ``row``: the adapter as ``adapters/step_<env steps>/`` when ``keep_every``
        (``keep_eval_adapters``), and as ``adapter_best/`` when it is the best so far. ``export`` saves
        the current adapter into a folder."""
        if keep_every:
            write_folder_atomically(eval_adapter_dir(self.out, row["env_steps"]), export)
        self.keep_if_best(row, export)

    def keep_if_best(self, row: dict, export: Callable[[Path], None]) -> bool:
        """Write ``adapter_best/`` with ``export`` (which saves the current adapter into a folder) when
        evaluation ``row`` is the best so far; return whether it was."""
        if not is_better(row, self.best):
            return False
        selection = {**row, "eval_seed": self.eval_seed}

        def write(tmp: Path) -> None:
            export(tmp)
            (tmp / SELECTION_FILE).write_text(json.dumps(selection, indent=2))

        write_folder_atomically(self.out / BEST_ADAPTER, write)
        self.best = selection
        log.info("%s: best evaluation so far (%.2f at %d env steps) -> %s", self.algo, row["success_rate"],
                 row["env_steps"], self.out / BEST_ADAPTER)
        return True

    def due_checkpoint(self) -> bool:
        return self.c.env_steps >= self.c.next_checkpoint or self.done

    def mark_checkpoint(self) -> None:
        self.c.next_checkpoint = self.c.env_steps + self.checkpoint_every
        self.c.wall_seconds = self.wall

    def counters_dict(self) -> dict:
        self.c.wall_seconds = self.wall
        return asdict(self.c)

    def close(self) -> None:
        self.tb.close()


def read_curve(out: Path) -> list[dict]:
    path = Path(out) / "curve.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def eval_adapter_dir(out: Path, env_steps: int) -> Path:
    """Where ``keep_eval_adapters`` puts the adapter evaluated at ``env_steps``."""
    return Path(out) / "adapters" / f"step_{env_steps:08d}"


def truncate_logs(out: Path, env_steps: int) -> None:
    """Drop curve / training rows and evaluation adapters written after the checkpoint being resumed
    (they will be redone), and a best adapter chosen by one of those rows."""
    for name in ("curve.jsonl", "train.jsonl"):
        path = Path(out) / name
        if path.exists():
            rows = [line for line in path.read_text().splitlines() if line.strip()]
            keep = [r for r in rows if json.loads(r)["env_steps"] <= env_steps]
            path.write_text("".join(r + "\n" for r in keep))
    for folder in sorted((Path(out) / "adapters").glob("step_*")):
        step = folder.name.removeprefix("step_")
        if not step.isdigit() or int(step) > env_steps:  # later, or a write that a kill cut short
            shutil.rmtree(folder)
    _reconcile_best(Path(out), env_steps)


def _reconcile_best(out: Path, env_steps: int) -> None:
    """After truncation: ``adapter_best/`` must be the best of the curve rows that remain."""
    for leftover in (BEST_ADAPTER + ".tmp", BEST_ADAPTER + ".old"):
        shutil.rmtree(out / leftover, ignore_errors=True)
    selection = read_selection(out)
    if selection is None or selection["env_steps"] <= env_steps:
        return
    shutil.rmtree(out / BEST_ADAPTER)
    best = None
    for row in read_curve(out):
        if is_better(row, best):
            best = row
    kept = None if best is None else eval_adapter_dir(out, best["env_steps"])
    if kept is not None and (kept / "adapter.json").is_file():
        def write(tmp: Path) -> None:
            shutil.copytree(kept, tmp)
            (tmp / SELECTION_FILE).write_text(json.dumps({**best, "eval_seed": selection.get("eval_seed")}, indent=2))

        write_folder_atomically(out / BEST_ADAPTER, write)
    elif best is not None:
        log.warning("the best adapter was chosen after the checkpoint at %d env steps and the one of the best "
                    "earlier evaluation (%d env steps) was not kept (keep_eval_adapters=false): adapter_best/ "
                    "starts again from the next evaluation", env_steps, best["env_steps"])


def plot_curves(curves: dict[str, list[dict]], path: Path, *, title: str, baseline: float | None = None,
                target: float | None = None) -> Path:
    """Success rate vs environment steps, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, rows in curves.items():
        if rows:
            ax.plot([r["env_steps"] for r in rows], [r["success_rate"] for r in rows], marker="o", ms=3, label=name)
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label=f"base policy ({baseline:.2f})")
    if target is not None:
        ax.axhline(target, color="green", ls=":", lw=1, label=f"target ({target:.2f})")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate (eval)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
