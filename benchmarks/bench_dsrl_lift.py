"""Summarise DSRL runs (``embodied-steer adapt``) against the base policy: table + learning curves.

Usage (the runs are made with the commands in benchmarks/RESULTS.md)::

    python benchmarks/bench_dsrl_lift.py --runs outputs/adapt/lift_dsrl_sac outputs/adapt/lift_dsrl_na \
        outputs/adapt/lift_raw_sac --base outputs/adapt/lift_base_eval \
        --base-zero outputs/adapt/lift_base_zero_noise_eval --plot benchmarks/figures/dsrl_lift.png

Prints a Markdown table (env steps reached, eval success at each evaluation, first evaluation at or
above the target, wall time) and draws eval success and the rolling training-episode success vs
environment steps. Everything is read from the runs' ``curve.jsonl`` / ``train.jsonl`` and the
base evaluations' ``episodes.jsonl``; nothing is typed in.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def base_rate(folder: Path | None, episodes: int) -> tuple[float, int, int | None] | None:
    """(success rate, episodes, first seed) of an ``eval`` folder's first ``episodes`` episodes."""
    if folder is None:
        return None
    eps = [r for r in rows(folder / "episodes.jsonl")][:episodes]
    if not eps:
        return None
    return float(np.mean([r["success"] for r in eps])), len(eps), eps[0].get("seed")


def seeds_said(rate: tuple[float, int, int | None], eval_seeds: set[int]) -> str:
    """Which seeds a base rate was measured on, said against the runs' evaluation seeds."""
    first = rate[2]
    where = f"seeds {first}–{first + rate[1] - 1}" if first is not None else f"{rate[1]} seeds"
    return where + (" (the runs' evaluation seeds)" if eval_seeds == {first} else " (not the runs' evaluation seeds)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", type=Path, required=True)
    ap.add_argument("--base", type=Path, default=None, help="eval folder of the base policy (its own noise)")
    ap.add_argument("--base-zero", type=Path, default=None, help="eval folder of the base policy with zero noise")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--window", type=int, default=20, help="training episodes in the rolling success")
    ap.add_argument("--title", default="Lift: DSRL vs base policy vs raw-action SAC (CPU)")
    args = ap.parse_args()

    print("| run | algo | env steps | evals: success @ env steps | first eval ≥ target | wall time |")
    print("|---|---|---|---|---|---|")
    curves = {}
    configs = {run: json.loads((run / "adapt_config.json").read_text()) for run in args.runs}
    for run, cfg in configs.items():
        curve = rows(run / "curve.jsonl")
        train = rows(run / "train.jsonl")
        curves[run.name] = (curve, train)
        n_eval = cfg["eval_episodes"]
        evals = ", ".join(f"{r['success_rate']:.2f}@{r['env_steps']}" for r in curve)
        hit = next((r for r in curve if r["success_rate"] >= args.target), None)
        reached = f"{hit['env_steps']} steps, {hit['wall_seconds'] / 60:.0f} min" if hit else "not reached"
        steps = max([r["env_steps"] for r in curve + train] or [0])
        wall = curve[-1]["wall_seconds"] / 60 if curve else float("nan")
        print(f"| {run.name} | {cfg['algo']} | {steps} | {evals} ({n_eval} episodes each) | {reached} | "
              f"{wall:.0f} min to last eval |")
    eval_episodes = max(cfg["eval_episodes"] for cfg in configs.values())
    base = base_rate(args.base, eval_episodes)
    zero = base_rate(args.base_zero, eval_episodes)
    eval_seeds = {cfg.get("eval_seed", 100_000) for cfg in configs.values()}
    if base:
        print(f"\nbase policy (own noise) on {seeds_said(base, eval_seeds)}: {base[0]:.2f}")
    if zero:
        print(f"base policy with zero noise (the untrained actor's mean) on {seeds_said(zero, eval_seeds)}: {zero[0]:.2f}")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 4.5))
        for i, (name, (curve, train)) in enumerate(curves.items()):
            color = f"C{i}"
            if curve:
                ax.plot([r["env_steps"] for r in curve], [r["success_rate"] for r in curve], "-o", ms=4, color=color,
                        label=f"{name} (eval)")
            if len(train) >= 2:
                s = np.array([r["success"] for r in train], float)
                roll = [s[max(0, j - args.window + 1): j + 1].mean() for j in range(len(s))]
                ax.plot([r["env_steps"] for r in train], roll, ":", color=color, lw=1,
                        label=f"{name} (training episodes, rolling {args.window})")
        if base:
            ax.axhline(base[0], color="gray", ls="--", lw=1, label=f"base policy ({base[0]:.2f})")
        if zero:
            ax.axhline(zero[0], color="black", ls="-.", lw=1, label=f"base, zero noise ({zero[0]:.2f})")
        ax.axhline(args.target, color="green", ls=":", lw=1)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(args.title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
