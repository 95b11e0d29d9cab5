"""Success of the frozen base policy under fixed, state-independent latents.

A latent here is the same noise for every chunk of every episode: zero everywhere except chosen
action dimensions of the noise, which are set to a constant over the whole chunk (``3:1.0`` sets
noise dimension 3 to 1.0 at every chunk step; ``3:1.0,1:-0.5`` sets two). This probes how much of
the base policy's behaviour a single noise direction moves, and — run once on the evaluation seeds
and again on held-out seeds — how much a setting picked on the evaluation seeds is worth elsewhere.

Usage::

    python benchmarks/bench_dsrl_const_latent.py --settings 0:0 3:1.0 "3:1.0,1:-0.5" --seed0 100000 --episodes 20
    python benchmarks/bench_dsrl_const_latent.py --scan 1.0 --episodes 20     # every dimension at +-1.0

Prints one Markdown row per setting: successes, rate and the mean length of the successful episodes.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dsrl_noise_ceiling import latent_env, run_episode  # noqa: E402


def parse_setting(text: str, noise_shape: tuple[int, ...]) -> np.ndarray:
    """``"d:v[,d:v…]"`` → noise of ``noise_shape`` with column ``d`` (an action dimension) set to ``v``."""
    noise = np.zeros(noise_shape, np.float32)
    for part in text.split(","):
        try:
            dim, value = part.split(":")
            noise[..., int(dim)] = float(value)
        except (ValueError, IndexError):
            raise SystemExit(f"bad setting {part!r} in {text!r}: expected DIM:VALUE with DIM < {noise_shape[-1]}")
    return noise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="lift")
    ap.add_argument("--policy", default="lift_diffusion")
    ap.add_argument("--settings", nargs="*", default=[], help="DIM:VALUE[,DIM:VALUE...] (0:0 is the zero latent)")
    ap.add_argument("--scan", type=float, default=None, help="also every single dimension at -VALUE and +VALUE")
    ap.add_argument("--seed0", type=int, default=100_000)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("const_latent")

    env = latent_env(args.env, args.policy, bound=1.5)
    noise_shape = tuple(env.policy.noise_spec.shape)
    settings = list(args.settings)
    if args.scan is not None:
        settings += [f"{d}:{s * args.scan:g}" for d in range(noise_shape[-1]) for s in (-1, 1)]
    if not settings:
        raise SystemExit("nothing to run: give --settings and/or --scan")
    rows = []
    for text in settings:
        latent = parse_setting(text, noise_shape).reshape(env.latent.shape)
        if np.abs(latent).max() > env.latent.bound:
            raise SystemExit(f"setting {text!r} leaves the latent box ±{env.latent.bound}")
        t0 = time.perf_counter()
        results = [run_episode(env, args.seed0 + i, lambda: latent) for i in range(args.episodes)]
        ok = [steps for success, steps in results if success]
        rows.append({"setting": text, "successes": len(ok), "episodes": args.episodes,
                     "mean_success_length": float(np.mean(ok)) if ok else None})
        log.info("%s: %d/%d (%.0f s)", text, len(ok), args.episodes, time.perf_counter() - t0)
    env.close()
    print(f"| latent (seeds {args.seed0}–{args.seed0 + args.episodes - 1}) | successes | rate | mean steps of a success |")
    print("|---|---:|---:|---:|")
    for r in rows:
        length = "—" if r["mean_success_length"] is None else f"{r['mean_success_length']:.0f}"
        print(f"| {r['setting']} | {r['successes']}/{r['episodes']} | {r['successes'] / r['episodes']:.2f} | {length} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
