"""Distributed evaluation on Ray: episodes per minute with 1 and 2 workers, overhead, resume check.

    .venv/bin/python benchmarks/bench_ray_eval.py --episodes 20
    .venv/bin/python benchmarks/bench_ray_eval.py --episodes 6 --resume-episodes 2   # a quick check

Measured side by side in one run, on the CPU-bound Lift eval (``env=lift policy=lift_diffusion``,
the same episodes and seeds in every row), one torch thread per worker:

1. in-process: the classic evaluator in this process (env and policy built before the clock starts);
2. Ray, 1 worker; 3. Ray, 2 workers: an embedded local Ray (loopback), actors warmed up (env and
   policy replica built) before the clock starts; the clock covers dispatch, episodes, streaming
   every result into the results folder and writing the summary, as in the in-process row.

With ``--repeats k`` the three rows are measured in k interleaved rounds and each row's best round
is reported (the least disturbed one on a shared machine). "time inside episodes / wall" sums the
episodes' own durations (``seconds`` in episodes.jsonl) over the wall time: ~1 per busy worker. With
2 workers, a value near 2 with a low rate means the workers ran side by side but each got less CPU
(a loaded machine), a value well under 2 would mean the engine left workers idle.

Printed: wall time, episodes per minute, scaling efficiency (rate with 2 workers / (2 × rate with
1)), overhead per episode of the Ray path (wall per episode minus the in-process wall per episode,
with 1 worker each), and Ray's start-up time. Then a small sweep (2 intervention settings) is run
uninterrupted and, in another folder, interrupted after a few episodes and resumed; the script
prints whether both give identical episode records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

from embodied_steer.cli import compose  # noqa: E402
from embodied_steer.distributed import ExecutorSettings, WorkerPool, ray_session  # noqa: E402
from embodied_steer.eval.cells import EvalCell, build_runtime  # noqa: E402
from embodied_steer.eval.runner import evaluate, read_results  # noqa: E402
from embodied_steer.eval.sweep import run_sweep  # noqa: E402


def outcomes(folder: Path) -> dict[str, list[tuple]]:
    found = {}
    for path in sorted(folder.glob("*/episodes.jsonl")):
        recs = read_results(path)
        found[path.parent.name] = [(r.episode, r.seed, r.success, r.steps, r.reward, r.status)
                                   for r in (recs[i] for i in sorted(recs))]
    return found


class Interrupt(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=20, help="episodes per timed row")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the three rows (median reported)")
    parser.add_argument("--resume-episodes", type=int, default=3,
                        help="episodes per cell of the resume check (2 cells, horizon 60); 0 skips it")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_ray"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--figure", type=Path, default=Path("benchmarks/figures/ray_eval.png"),
                        help="bar chart of episodes per minute per path (with ideal scaling)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.episodes
    cfg = compose("eval", ["env=lift", "policy=lift_diffusion", f"episodes={n}", f"seed={args.seed}"])
    rows: dict[str, dict] = {}

    # The three rows are measured in rounds (in-process, Ray 1 worker, Ray 2 workers, then again), so
    # a change of machine load between rows hits all of them; each row reports its median round.
    walls: dict[str, list[float]] = {"in-process": [], "ray, 1 worker": [], "ray, 2 workers": []}
    busy: dict[str, list[float]] = {name: [] for name in walls}  # summed time spent inside episodes
    rt = build_runtime(cfg)
    t0 = time.perf_counter()
    with ray_session(ExecutorSettings(kind="ray", workers=3), num_cpus=3):
        ray_start = time.perf_counter() - t0
        cells = {w: EvalCell.from_config(cfg, args.out / f"ray{w}", name="lift-lift_diffusion") for w in (1, 2)}
        pools = {w: WorkerPool(w, torch_threads=1) for w in (1, 2)}
        for w, pool in pools.items():
            pool.warm_up(cells[w])  # env + policy replica built on every worker before the clock starts
        for _ in range(args.repeats):
            start = time.perf_counter()
            s = evaluate(rt.env, rt.policy, episodes=n, seed=args.seed, output_dir=args.out / "inprocess",
                         act=rt.act, extra=rt.meta["extra"])
            walls["in-process"].append(time.perf_counter() - start)
            rows["in-process"] = {"workers": 1, "successes": s.successes, "mean_steps": s.mean_steps}
            busy["in-process"].append(n * s.mean_seconds)
            for w, pool in pools.items():
                report = pool.run([cells[w]], resume=False, progress=False)
                s = report.summaries[cells[w].name]
                name = f"ray, {w} worker{'s' if w > 1 else ''}"
                walls[name].append(report.seconds)
                rows[name] = {"workers": w, "successes": s.successes, "mean_steps": s.mean_steps}
                busy[name].append(n * s.mean_seconds)
        for pool in pools.values():
            pool.shutdown()
        rt.close()
        for name, r in rows.items():
            best = min(range(len(walls[name])), key=lambda i: walls[name][i])
            r["wall_s"] = walls[name][best]
            r["in_episode_s"] = busy[name][best]
            r["rounds_s"] = [round(x, 1) for x in walls[name]]

        resume = None
        if args.resume_episodes:
            sweep_args = [f"episodes={args.resume_episodes}", "grid.intervention.noise_scale=[1.0,0.5]",
                          'overrides=["env.horizon=60"]', "executor.workers=2"]
            with WorkerPool(2, torch_threads=1) as pool:
                full = args.out / "sweep_uninterrupted"
                split = args.out / "sweep_resumed"
                run_sweep(compose("sweep", [*sweep_args, f"output_dir={full}", "resume=false"]), pool=pool,
                          progress=False)
                seen = []

                def stop(cell, result):
                    seen.append(result)
                    if len(seen) == max(1, args.resume_episodes):
                        raise Interrupt

                try:
                    run_sweep(compose("sweep", [*sweep_args, f"output_dir={split}", "resume=false"]), pool=pool,
                              on_result=stop, progress=False)
                except Interrupt:
                    pass
                _, counts = run_sweep(compose("sweep", [*sweep_args, f"output_dir={split}", "resume=true"]),
                                      pool=pool, progress=False)
            resume = {"identical": outcomes(full) == outcomes(split), "interrupted_after": len(seen),
                      "resumed": counts["resumed"], "executed_after_resume": counts["executed"],
                      "episodes": sum(len(v) for v in outcomes(split).values())}

    for r in rows.values():
        r["episodes_per_min"] = 60 * n / r["wall_s"]
    base = rows["in-process"]
    one, two = rows["ray, 1 worker"], rows["ray, 2 workers"]
    efficiency = two["episodes_per_min"] / (2 * one["episodes_per_min"])
    overhead = (one["wall_s"] - base["wall_s"]) / n
    load = os.getloadavg()
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"1 torch thread per worker, {n} episodes per row (seeds {args.seed}–{args.seed + n - 1}), "
          f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    print("| path | workers | wall (s, best round) | episodes / min | successes | mean steps | "
          "time inside episodes / wall | all rounds (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['workers']} | {r['wall_s']:.1f} | {r['episodes_per_min']:.1f} | {r['successes']}/{n} | "
              f"{r['mean_steps']:.0f} | {r['in_episode_s'] / r['wall_s']:.2f} | {', '.join(map(str, r['rounds_s']))} |")
    print(f"\nscaling efficiency at 2 workers: {efficiency:.2f} (target >= 0.8)")
    print(f"overhead of the Ray path per episode (1 worker vs in-process): {1000 * overhead:+.0f} ms "
          f"({100 * overhead / (base['wall_s'] / n):+.1f}% of an in-process episode)")
    print("worker time per episode not spent inside an episode (dispatch, streaming results, summary and plot, "
          "idle workers at the end; (workers x wall - time inside episodes) / episodes): "
          + ", ".join(f"{name} {1000 * (r['workers'] * r['wall_s'] - r['in_episode_s']) / n:.0f} ms"
                      for name, r in rows.items()))
    print(f"local Ray start-up (not in the rows): {ray_start:.1f} s")
    if resume is not None:
        print(f"resumed sweep identical to an uninterrupted one: {resume['identical']} "
              f"({resume['episodes']} episodes; interrupted after {resume['interrupted_after']}, "
              f"{resume['resumed']} kept, {resume['executed_after_resume']} run after resuming)")
    if args.figure:
        plot_rows(rows, efficiency, n, args.figure)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "scaling_efficiency": efficiency, "overhead_s": overhead,
                                         "ray_start_s": ray_start, "resume": resume, "load": load}, indent=2))


def plot_rows(rows: dict[str, dict], efficiency: float, episodes: int, path: Path) -> None:
    """Episodes per minute per path, with the ideal (linear) scaling of the 1-worker Ray row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    rates = [rows[k]["episodes_per_min"] for k in names]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bars = ax.bar(names, rates, color=["#999999", "#6baed6", "#2171b5"][: len(names)])
    ideal = 2 * rows["ray, 1 worker"]["episodes_per_min"]
    ax.axhline(ideal, ls="--", color="k", lw=1, label=f"ideal 2 workers ({ideal:.1f})")
    for b, r in zip(bars, rates):
        ax.text(b.get_x() + b.get_width() / 2, r, f"{r:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("episodes / min")
    ax.set_title(f"Lift eval, {episodes} episodes per path: scaling efficiency {efficiency:.2f}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
