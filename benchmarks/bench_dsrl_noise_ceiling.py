"""Which of the base policy's failures can a choice of initial noise fix at all?

For each evaluation seed (the DSRL benchmark's seeds 100000…), run the frozen base policy through the
latent-noise MDP (:class:`~embodied_steer.dsrl.wrapper.LatentNoiseEnv`) with the zero latent (the
untrained DSRL actor's mean) and with ``--draws`` independent random latents per chunk
(standard normal clipped to the box ±b — the base policy's own noise, clipped). A seed that no draw
solves is a failure a noise actor is unlikely to fix; the per-seed success share bounds what DSRL can
reach on these seeds.

Usage::

    python benchmarks/bench_dsrl_noise_ceiling.py --env lift --policy lift_diffusion --seeds 20 --draws 8 \
        --json outputs/dsrl_noise_ceiling.json

Prints one Markdown row per seed (zero-latent outcome, random-draw successes) and the totals:
zero-latent success, mean random-draw success, and the share of seeds solved by at least one draw
(the "best of K" ceiling).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embodied_steer.cli import compose, instantiate_env, instantiate_policy  # noqa: E402
from embodied_steer.dsrl.wrapper import LatentNoiseEnv  # noqa: E402


def run_episode(env: LatentNoiseEnv, seed: int, latent_fn) -> tuple[bool, int]:
    env.reset(seed=seed)
    steps, success, done = 0, False, False
    while not done:
        _, _, terminated, truncated, info = env.step(latent_fn())
        steps += int(info["env_steps"])
        success = success or bool(info.get("is_success", False))
        done = terminated or truncated
    return success, steps


def latent_env(env_name: str, policy_name: str, bound: float) -> LatentNoiseEnv:
    """The catalogue's ``env_name`` + ``policy_name`` as a latent-noise MDP (fast rendering, box ±bound)."""
    cfg = compose("eval", [f"env={env_name}", f"policy={policy_name}"])
    base = instantiate_env(cfg.env, fast_render=True)
    policy = instantiate_policy(cfg.policy, base)
    return LatentNoiseEnv(base, policy, bound=bound, check_determinism=False, warmup_noise="base")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="lift")
    ap.add_argument("--policy", default="lift_diffusion")
    ap.add_argument("--seed0", type=int, default=100_000)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--bound", type=float, default=1.5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("noise_ceiling")

    env = latent_env(args.env, args.policy, args.bound)
    shape = env.latent.shape
    rows = []
    t0 = time.perf_counter()
    for i in range(args.seeds):
        seed = args.seed0 + i
        zero_ok, zero_steps = run_episode(env, seed, lambda: np.zeros(shape, np.float32))
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(args.draws):
            ok, _ = run_episode(env, seed, lambda: env.action_space.draw(rng))
            draws.append(bool(ok))
        rows.append({"seed": seed, "zero": bool(zero_ok), "zero_steps": zero_steps, "draws": draws})
        log.info("seed %d: zero %s, random %d/%d (%.0f s so far)", seed, zero_ok, sum(draws), len(draws),
                 time.perf_counter() - t0)
    env.close()

    print(f"| seed | zero latent | random draws solved (of {args.draws}) |")
    print("|---:|---|---:|")
    for r in rows:
        print(f"| {r['seed']} | {'success' if r['zero'] else 'fail'} | {sum(r['draws'])} |")
    zero = float(np.mean([r["zero"] for r in rows]))
    rand = float(np.mean([np.mean(r["draws"]) for r in rows]))
    any_ok = float(np.mean([r["zero"] or any(r["draws"]) for r in rows]))
    never = [r["seed"] for r in rows if not (r["zero"] or any(r["draws"]))]
    print(f"\nzero latent: {zero:.2f}; random draws: {rand:.2f}; solved by zero or at least one draw: {any_ok:.2f}; "
          f"never solved: {never}; wall {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "zero": zero, "random": rand, "any": any_ok, "never": never}, indent=2))


if __name__ == "__main__":
    main()
