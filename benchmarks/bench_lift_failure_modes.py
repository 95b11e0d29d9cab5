"""Where Lift episodes fail: never at the cube, at it without a grasp, grasped but not lifted.

Each policy is run as ``embodied-steer eval`` would run it (the same config composition, act
function and episode loop), and every step's observation is read for

* ``min_dist``: the smallest gripper→cube distance (m; robosuite's ``gripper_to_cube_pos``),
* ``grasp_steps``: steps on which robosuite's own ``_check_grasp`` holds (both finger pads on the cube),
* ``max_lift``: the cube's largest rise above where it settled (m; success is ≈ 1.9 cm here).

A failed episode is classed ``never_near`` (``min_dist`` > ``--near`` m), ``near_no_grasp``
(reached, no grasp step) or ``grasped_dropped`` (a grasp, no success). This tells which failures a
choice of initial noise (DSRL) or steering removes.

Usage::

    python benchmarks/bench_lift_failure_modes.py --episodes 50 --seed 200000 \\
        --run base: --run zero:intervention.noise_scale=0 --run shipped_dsrl:policy=lift_dsrl

Each ``--run NAME:OVERRIDES`` is a name and comma-separated ``eval`` overrides (none: the shipped
base policy with its own noise). Prints one Markdown row per run and writes ``--json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embodied_steer.cli import _check_compatible, build_act_fn, compose, instantiate_env, instantiate_policy  # noqa: E402
from embodied_steer.eval.runner import run_episode  # noqa: E402

CLASSES = ("success", "never_near", "near_no_grasp", "grasped_dropped")


def classify(success: bool, min_dist: float, grasp_steps: int, near: float) -> str:
    """One episode's class (see the module docstring)."""
    if success:
        return "success"
    if min_dist > near:
        return "never_near"
    return "near_no_grasp" if grasp_steps == 0 else "grasped_dropped"


def run(name: str, overrides: list[str], episodes: int, seed: int, near: float, log: logging.Logger) -> dict:
    cfg = compose("eval", ["env=lift", *overrides])
    env = instantiate_env(cfg.env, fast_render=True)
    policy = instantiate_policy(cfg.policy, env)
    _check_compatible(env, policy)
    act = build_act_fn(cfg, policy, env)
    robosuite_env = env._env
    rows = []
    t0 = time.perf_counter()
    try:
        for i in range(episodes):
            stats = {"min_dist": np.inf, "grasp_steps": 0, "z": []}

            def on_step(obs: dict, action: np.ndarray) -> None:
                stats["min_dist"] = min(stats["min_dist"], float(np.linalg.norm(obs["env_state"][7:10])))
                stats["z"].append(float(obs["env_state"][2]))
                grasped = robosuite_env._check_grasp(gripper=robosuite_env.robots[0].gripper,
                                                     object_geoms=robosuite_env.cube)
                stats["grasp_steps"] += int(grasped)

            result = run_episode(env, policy, episode=i, seed=seed + i, act=act, on_step=on_step,
                                 max_steps=cfg.get("max_steps"), execute_steps=cfg.get("execute_steps"))
            z = np.asarray(stats["z"])
            settled = z[min(5, len(z) - 1)]  # the cube is dropped onto the table at reset
            row = {"seed": seed + i, "success": bool(result.success), "steps": result.steps,
                   "min_dist": stats["min_dist"], "grasp_steps": stats["grasp_steps"],
                   "max_lift": float(z[5:].max() - settled) if len(z) > 5 else 0.0}
            row["class"] = classify(row["success"], row["min_dist"], row["grasp_steps"], near)
            rows.append(row)
            if (i + 1) % 10 == 0:
                log.info("%s: %d/%d episodes, %d successes (%.0f s)", name, i + 1, episodes,
                         sum(r["success"] for r in rows), time.perf_counter() - t0)
    finally:
        env.close()
    counts = collections.Counter(r["class"] for r in rows)
    fails = [r for r in rows if not r["success"]]
    return {"name": name, "overrides": overrides, "episodes": episodes, "seed": seed,
            "counts": {c: counts.get(c, 0) for c in CLASSES},
            "median_min_dist_of_failures": float(np.median([r["min_dist"] for r in fails])) if fails else None,
            "episodes_detail": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="NAME:OVERRIDE[,OVERRIDE...] (eval overrides)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=200_000)
    ap.add_argument("--near", type=float, default=0.02, help="m: closer than this counts as at the cube")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("failure_modes")
    results = []
    for spec in args.run:
        name, _, rest = spec.partition(":")
        if not name:
            raise SystemExit(f"--run {spec!r}: expected NAME:OVERRIDES")
        results.append(run(name, [o for o in rest.split(",") if o], args.episodes, args.seed, args.near, log))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    print(f"| run (seeds {args.seed}–{args.seed + args.episodes - 1}) | " + " | ".join(CLASSES)
          + " | median closest approach of the failures (cm) |")
    print("|---|" + "---:|" * (len(CLASSES) + 1))
    for r in results:
        med = r["median_min_dist_of_failures"]
        print(f"| {r['name']} | " + " | ".join(str(r["counts"][c]) for c in CLASSES)
              + f" | {'–' if med is None else f'{100 * med:.1f}'} |")


if __name__ == "__main__":
    main()
