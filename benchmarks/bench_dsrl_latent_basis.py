"""How much of the executed actions' sensitivity to the noise a projected latent's basis carries.

For the catalogue's policy on its environment, the Jacobian Gram matrices ``E_s[JᵀJ]`` of the
executed chunk with respect to the sampler noise are computed (``dsrl/sensitivity.py``: forward
differences at the zero noise and at one clipped ``N(0, I)`` draw per state, over ``--states``
agent observations of the offline dataset, as ``adapt latent_basis=sensitivity`` does). For each
basis of ``--dim`` rows the script prints the share of each Gram's trace the basis carries
(``tr(R M Rᵀ) / tr(M)``), against the best possible (the sum of the top ``--dim`` eigenvalues):
the sensitivity basis of every seed in ``--seeds`` and the random bases (``latent_basis=random``)
of the same seeds. A random d-dim basis of an F-dim noise carries d/F on average.

Usage::

    python benchmarks/bench_dsrl_latent_basis.py --env lift --policy lift_diffusion \
        --dataset data/lift_demos --dim 16 --states 64 --seeds 1 2 3 4 5 6 7 8 --json outputs/latent_basis.json
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
from embodied_steer.dsrl.latent import LatentNoiseMap  # noqa: E402
from embodied_steer.dsrl.na import make_decoder, offline_transitions  # noqa: E402
from embodied_steer.dsrl.sensitivity import (  # noqa: E402
    basis_from_grams, basis_states, jacobian_gram, noise_points, trace_share)
from embodied_steer.dsrl.wrapper import LatentNoiseEnv  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="lift")
    ap.add_argument("--policy", default="lift_diffusion")
    ap.add_argument("--dataset", type=Path, default=Path("data/lift_demos"))
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--states", type=int, default=64)
    ap.add_argument("--bound", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7, 8])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.perf_counter()

    cfg = compose("eval", [f"env={args.env}", f"policy={args.policy}"])
    base = instantiate_env(cfg.env, fast_render=True)
    policy = instantiate_policy(cfg.policy, base)
    env = LatentNoiseEnv(base, policy, bound=args.bound, latent_mode="project", latent_dim=args.dim,
                         check_determinism=False)
    k, action_dim = env.execute_steps, int(np.prod(base.action_space.shape))
    rows = offline_transitions(args.dataset, env.features, k, 0.99, action_dim)
    obs = basis_states(np.stack([r[0] for r in rows]), args.states)
    decode = make_decoder(policy, env.features, k, env.instruction)
    shape = tuple(env.latent.spec.shape)
    full = int(np.prod(shape))
    zero = jacobian_gram(decode, obs, torch.zeros(len(obs), *shape))
    grams = {"zero": zero}
    for seed in args.seeds:  # the random noise point is drawn per seed, as adapt does
        grams[f"random_{seed}"] = jacobian_gram(decode, obs, noise_points(len(obs), shape, args.bound, seed)["random"])
        logging.info("Gram at seed %d's random noise done (%.0f s)", seed, time.perf_counter() - t0)
    env.close()

    def best(m: torch.Tensor) -> float:
        return float(torch.linalg.eigvalsh(m).flip(0)[: args.dim].sum() / m.trace())

    out = {"args": {k: str(v) for k, v in vars(args).items()}, "full": full, "rows": []}
    print(f"| basis ({args.dim} of {full} dims) | seed | share at zero noise | share at random noise | "
          "of the best possible (zero; random) |")
    print("|---|---:|---:|---:|---|")
    for seed in args.seeds:
        m_rand = grams[f"random_{seed}"]
        sens, _, _ = basis_from_grams({"zero": zero, "random": m_rand}, args.dim)  # what adapt would compute
        rand = LatentNoiseMap(env.latent.spec, "project", args.bound, args.dim, seed).projection_rows
        for name, r in (("sensitivity", sens), ("random", rand)):
            z, w = trace_share(r, zero), trace_share(r, m_rand)
            row = {"basis": name, "seed": seed, "zero": z, "random": w, "of_best_zero": z / best(zero),
                   "of_best_random": w / best(m_rand)}
            out["rows"].append(row)
            print(f"| {name} | {seed} | {z:.2f} | {w:.2f} | {row['of_best_zero']:.2f}; {row['of_best_random']:.2f} |")
    print(f"\nbest possible {args.dim}-dim share: zero noise {best(zero):.2f}; random average d/F = {args.dim / full:.2f}; "
          f"sensitivity at zero vs random noise: trace {float(zero.trace()):.1f} vs "
          f"{np.mean([float(grams[f'random_{s}'].trace()) for s in args.seeds]):.1f}; wall {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
