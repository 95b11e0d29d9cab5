"""Re-evaluate the adapters DSRL runs kept at their evaluations (``keep_eval_adapters=true``) on other seeds.

A learning curve's best point, picked on the same 20 seeds it was measured on, overstates itself
(by about 0.15 on Lift, see RESULTS). This script takes each run's snapshots — the ``--top K`` by the
run's own evaluations (ties go to the later one), ``--all``, or ``--best``: the run's ``adapter_best/``, which
``adapt`` chose by the same rule as it trained (no kept snapshots needed) — and evaluates each with
``embodied-steer eval`` on episodes reset with ``--seed + i``, seeds the run never saw, so the number
reported for a chosen snapshot was not used to choose it.

Each evaluation is an ordinary ``eval`` results folder, ``<run>/heldout_<seed>/step_<env steps>/``;
a finished one with the same episode count is reused, a partial one resumed.

Usage::

    python benchmarks/bench_dsrl_snapshots.py outputs/adapt/lift_na_h80_free_s1 outputs/adapt/lift_na_h80_free_s2 \
        --top 2 --last --episodes 50 --seed 200000 --plot benchmarks/figures/dsrl_snapshots.png

Prints one Markdown row per evaluated snapshot: its evaluation during training, and the held-out
successes with a Wilson 95 % interval.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embodied_steer.cli import main as cli_main  # noqa: E402
from embodied_steer.dsrl.progress import BEST_ADAPTER, read_curve, read_selection  # noqa: E402
from embodied_steer.eval.stats import wilson_interval  # noqa: E402

log = logging.getLogger("snapshots")
SNAPSHOT = re.compile(r"step_(\d+)$")


def snapshots(run: Path) -> dict[int, Path]:
    """Env steps → adapter folder, for the finished snapshots of ``run`` (``adapters/step_<n>/``)."""
    found = {}
    for folder in sorted((run / "adapters").glob("step_*")):
        match = SNAPSHOT.search(folder.name)
        if match and (folder / "adapter.json").is_file():
            found[int(match.group(1))] = folder
    if not found:
        raise SystemExit(f"{run} has no adapters/step_*/ snapshots: train it with keep_eval_adapters=true")
    return found


def choose(run: Path, top: int | None, last: bool = False) -> list[tuple[int, float | None]]:
    """(env steps, training-evaluation success) of the snapshots to evaluate, best first (``top=None``:
    all, in order); ``last`` adds the final snapshot, what the run gives without any choosing."""
    kept = snapshots(run)
    curve = {int(row["env_steps"]): float(row["success_rate"]) for row in read_curve(run)}
    rows = [(steps, curve.get(steps)) for steps in kept]
    if top is None:
        return rows
    ranked = sorted((r for r in rows if r[1] is not None), key=lambda r: (r[1], r[0]), reverse=True)[:top]
    if last and rows[-1] not in ranked:
        ranked.append(rows[-1])
    return ranked


def picked_step(run: Path) -> int:
    """The run's pick: what ``adapter_best/selection.json`` names (what ``adapt`` deploys as best), or
    for runs made before it the same rule (``--top 1``)."""
    selection = read_selection(run)
    return int(selection["env_steps"]) if selection is not None else choose(run, 1)[0][0]


def targets(run: Path, top: int | None, last: bool, best: bool) -> list[tuple[int, float | None, Path]]:
    """(env steps, training-evaluation success, adapter folder) of each adapter of ``run`` to evaluate."""
    if best:
        selection = read_selection(run)
        if selection is None:
            raise SystemExit(f"{run} has no {BEST_ADAPTER}/ (runs of adapt before it was written: use --top 1)")
        found = [(int(selection["env_steps"]), float(selection["success_rate"]), run / BEST_ADAPTER)]
        if last:
            kept = snapshots(run)
            final = max(kept)
            if final != found[0][0]:
                found.append((final, {int(r["env_steps"]): r["success_rate"] for r in read_curve(run)}.get(final),
                              kept[final]))
        return found
    kept = snapshots(run)
    return [(steps, during, kept[steps]) for steps, during in choose(run, top, last)]


def evaluate(adapter: Path, out: Path, env: str, episodes: int, seed: int) -> dict:
    """``embodied-steer eval`` of one adapter into ``out`` (reused when already finished); its summary."""
    summary = out / "summary.json"
    if summary.is_file() and json.loads(summary.read_text())["episodes"] == episodes:
        return json.loads(summary.read_text())
    args = ["eval", f"env={env}", "policy=dsrl", f"policy.adapter_path={adapter}", f"episodes={episodes}",
            f"seed={seed}", "torch_threads=1", f"output_dir={out}"]
    if out.exists():
        args.append("resume=true")
    if cli_main(args) != 0:
        raise SystemExit(f"eval of {adapter} failed (see the messages above)")
    return json.loads(summary.read_text())


def pooled_line(label: str, rows: list[dict]) -> str:
    """``pooled, <label>: wins/n (rate, 95 % interval …)`` over rows with ``successes`` and ``episodes``."""
    n, wins = sum(r["episodes"] for r in rows), sum(r["successes"] for r in rows)
    low, high = wilson_interval(wins, n)
    return f"pooled, {label}: {wins}/{n} ({wins / n:.2f}, 95 % interval {low:.2f}–{high:.2f})"


def plot(results: list[dict], curves: dict[str, list[dict]], path: Path) -> None:
    """Left: each run's curve and its held-out re-evaluations against env steps. Right: held-out against
    the evaluation during training, one point per snapshot — how far the training-time number predicts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, sc) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    for i, (run, curve) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot([r["env_steps"] for r in curve], [r["success_rate"] for r in curve], "-o", ms=3, color=color,
                alpha=0.6, label=f"{run}: evaluation during training")
        mine = [r for r in results if r["run"] == run]
        ax.errorbar([r["env_steps"] for r in mine], [r["heldout"] for r in mine],
                    yerr=[[r["heldout"] - r["ci95"][0] for r in mine], [r["ci95"][1] - r["heldout"] for r in mine]],
                    fmt="s", color=color, capsize=3, label=f"{run}: held-out re-evaluation")
        paired = [r for r in mine if r["training_eval"] is not None]
        sc.scatter([r["training_eval"] for r in paired], [r["heldout"] for r in paired], color=color, s=18)
        picked = [r for r in paired if r.get("picked")]
        sc.scatter([r["training_eval"] for r in picked], [r["heldout"] for r in picked], facecolors="none",
                   edgecolors=color, s=90, lw=1.5)
    ax.axhline(0.9, color="grey", ls="--", lw=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)  # below: low points stay visible
    sc.plot([0, 1], [0, 1], color="grey", lw=1, ls=":")
    sc.axhline(0.9, color="grey", ls="--", lw=1)
    sc.set_xlim(0, 1.02)
    sc.set_ylim(0, 1.02)
    sc.set_xlabel("evaluation during training")
    sc.set_ylabel("held-out re-evaluation")
    sc.set_title("one point per snapshot (circled: the run's pick)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path,
                    help="DSRL run folders (trained with keep_eval_adapters=true, except for --best alone)")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, default=2, help="evaluate the K best snapshots by the run's own evaluations")
    which.add_argument("--all", action="store_true", help="evaluate every snapshot")
    which.add_argument("--best", action="store_true", help="evaluate the run's adapter_best/ (the best evaluation)")
    ap.add_argument("--last", action="store_true", help="with --top or --best: also the run's final snapshot")
    ap.add_argument("--env", default="lift")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=200_000, help="episode i is reset with seed + i")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    if args.top < 1:
        raise SystemExit(f"--top must be >= 1, got {args.top}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    results, curves = [], {}
    for run in args.runs:
        curves[run.name] = read_curve(run)
        final = max(snapshots(run)) if (run / "adapters").is_dir() else None
        pick_steps = picked_step(run)
        to_evaluate = targets(run, None if args.all else args.top, args.last, args.best)
        for steps, during, adapter in to_evaluate:
            log.info("%s: adapter at %d env steps (training evaluation %s)", run.name, steps, during)
            # one folder per env step: adapter_best/ and the snapshot it copies share their evaluation
            summary = evaluate(adapter, run / f"heldout_{args.seed}" / f"step_{steps:08d}", args.env,
                               args.episodes, args.seed)
            n, wins = int(summary["episodes"]), int(summary["successes"])
            results.append({"run": run.name, "env_steps": steps, "training_eval": during, "episodes": n,
                            "picked": steps == pick_steps,
                            "final": steps == final,
                            "successes": wins, "heldout": wins / n, "ci95": list(wilson_interval(wins, n))})

    print(f"| run | env steps | evaluation during training | held-out seeds {args.seed}+ | 95 % interval |")
    print("|---|---:|---:|---:|---|")
    for r in results:
        during = "—" if r["training_eval"] is None else f"{r['training_eval']:.2f}"
        print(f"| {r['run']} | {r['env_steps']} | {during} | {r['successes']}/{r['episodes']} ({r['heldout']:.2f}) "
              f"| {r['ci95'][0]:.2f}–{r['ci95'][1]:.2f} |")
    for label, key in (("the run's pick (best evaluation during training)", "picked"), ("final snapshots", "final")):
        rows = [r for r in results if r[key]]
        if len(rows) > 1:
            print(f"{pooled_line(label, rows)} over {len(rows)} runs")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": args.env, "seed": args.seed, "results": results}, indent=2))
    if args.plot:
        plot(results, curves, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
