"""Success rate of the shipped base policies over many seeded episodes, with 95% Wilson intervals.

    .venv/bin/python benchmarks/bench_base_policy_success.py --episodes 50
    .venv/bin/python benchmarks/bench_base_policy_success.py --episodes 50 --only lift

Each policy runs through the same path as ``embodied-steer eval`` (catalogue configs, the runner),
with default render settings (no cameras: state policies). Results folders go to
``outputs/bench_success/<env>-<policy>``; the printed markdown table goes into RESULTS.md.
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

from embodied_steer.cli import compose, instantiate_env, instantiate_policy  # noqa: E402
from embodied_steer.eval.runner import evaluate  # noqa: E402

CASES = {"lift": ("lift", "lift_diffusion"), "can": ("pickplace_can", "can_diffusion")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--only", choices=sorted(CASES), action="append")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for key in args.only or sorted(CASES):
        env_name, policy_name = CASES[key]
        cfg = compose("eval", [f"env={env_name}", f"policy={policy_name}"])
        env = instantiate_env(cfg.env)
        policy = instantiate_policy(cfg.policy, env)
        start = time.time()
        s = evaluate(env, policy, episodes=args.episodes, seed=args.seed,
                     output_dir=Path("outputs/bench_success") / f"{env_name}-{policy_name}")
        env.close()
        rows.append({"env": s.env, "policy": s.policy, "episodes": s.episodes, "successes": s.successes,
                     "success_rate": s.success_rate, "ci95": s.ci95, "mean_steps": s.mean_steps,
                     "wall_s": round(time.time() - start, 1), "render": s.render_settings})
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread\n")
    print("| env | policy | episodes | successes | success rate | 95% CI (Wilson) | mean steps | wall time |")
    print("|---|---|---:|---:|---:|---|---:|---:|")
    for r in rows:
        lo, hi = r["ci95"]
        print(f"| {r['env']} | {r['policy']} | {r['episodes']} | {r['successes']} | {r['success_rate']:.2f} | "
              f"{lo:.2f}–{hi:.2f} | {r['mean_steps']:.0f} | {r['wall_s']:.0f} s |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
