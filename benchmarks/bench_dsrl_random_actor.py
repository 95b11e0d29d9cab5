"""A null for DSRL snapshots: untrained noise actors moved as far from the zero latent as trained ones.

``bench_dsrl_actor_drift.py`` shows the deterministic latent ``b·tanh(mean)`` of the Lift DSRL-NA
actors staying within a norm of 2–3 of the zero latent while it moves by about as much between
evaluations, and their evaluations swinging between 0.05 and 0.90. Is a good snapshot then the
critic's doing, or what any state-dependent latent of that size does to the base policy now and
then? This script builds ``--actors`` randomly initialised actors with the layout of a trained
adapter (``--like``), scales each one's mean head so that its mean ``|b·tanh(mean)|`` over the
states of a run's replay buffer (``--states-from``) is ``--norm``, saves each as an ordinary adapter
and evaluates it with ``embodied-steer eval`` (same seeds as ``bench_dsrl_snapshots.py``, so the
numbers compare with the snapshots' held-out rows).

Usage::

    python benchmarks/bench_dsrl_random_actor.py --like outputs/adapt/lift_na_h80_free_s1/adapter \
        --states-from outputs/adapt/lift_na_h80_free_s1 --norm 2.5 --actors 8 --episodes 50 --seed 200000

Prints one row per actor and the spread; ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_dsrl_actor_drift import buffer_states  # noqa: E402
from bench_dsrl_snapshots import evaluate  # noqa: E402

from embodied_steer.dsrl.networks import NoiseActor  # noqa: E402
from embodied_steer.dsrl.policy import load_noise_adapter, save_adapter  # noqa: E402
from embodied_steer.eval.stats import wilson_interval  # noqa: E402


@torch.no_grad()
def latent_norm(actor: NoiseActor, obs: torch.Tensor) -> float:
    """Mean ``|b·tanh(mean)|`` of ``actor`` over ``obs (N, D_obs)``."""
    return float(actor.deterministic(obs).norm(dim=-1).mean())


@torch.no_grad()
def scaled_random_actor(like: NoiseActor, obs: torch.Tensor, norm: float, seed: int) -> NoiseActor:
    """A fresh actor of ``like``'s layout (init drawn with ``seed``) whose mean head is scaled so that
    its mean deterministic-latent norm over ``obs`` is ``norm`` (to 0.5 %, by bisection on the scale)."""
    torch.manual_seed(seed)
    hidden = [m.out_features for m in like.trunk if isinstance(m, torch.nn.Linear)]
    layernorm = any(isinstance(m, torch.nn.LayerNorm) for m in like.trunk)
    actor = NoiseActor(obs.shape[1], like.mu.out_features, hidden, like.bound, layernorm).eval()
    weight, bias = actor.mu.weight.clone(), actor.mu.bias.clone()
    reach = like.bound * like.mu.out_features ** 0.5
    if not 0 < norm < 0.95 * reach:
        raise SystemExit(f"--norm must be in (0, {0.95 * reach:.2f}) for a {like.mu.out_features}-dim latent "
                         f"in ±{like.bound}, got {norm}")
    low, high = 0.0, 1.0
    while True:  # grow the upper end until it overshoots
        actor.mu.weight.copy_(weight * high)
        actor.mu.bias.copy_(bias * high)
        if latent_norm(actor, obs) >= norm:
            break
        low, high = high, high * 2
    for _ in range(60):
        scale = (low + high) / 2
        actor.mu.weight.copy_(weight * scale)
        actor.mu.bias.copy_(bias * scale)
        got = latent_norm(actor, obs)
        if abs(got - norm) <= 0.005 * norm:
            break
        low, high = (scale, high) if got < norm else (low, scale)
    return actor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--like", type=Path, required=True, help="a trained adapter folder: layout and base policy")
    ap.add_argument("--states-from", type=Path, required=True, help="a run folder whose replay buffer sets the scale")
    ap.add_argument("--norm", type=float, required=True, help="mean |b·tanh(mean)| of every random actor")
    ap.add_argument("--actors", type=int, default=8)
    ap.add_argument("--env", default="lift")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=200_000, help="episode i is reset with seed + i")
    ap.add_argument("--out", type=Path, default=Path("outputs/dsrl_diag/random_actors"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.actors < 1:
        raise SystemExit(f"--actors must be >= 1, got {args.actors}")
    like = load_noise_adapter(args.like)
    obs = buffer_states(args.states_from, 2048)
    if obs.shape[1] != like.features.dim:
        raise SystemExit(f"{args.like} reads {like.features.dim} observation values, "
                         f"{args.states_from}'s replay buffer holds {obs.shape[1]}")
    rows = []
    for k in range(args.actors):
        actor = scaled_random_actor(like.actor, obs, args.norm, seed=k)
        folder = args.out / f"norm{args.norm:g}" / f"actor_{k}"
        save_adapter(folder / "adapter", actor, like.latent, like.features, hidden=like.meta["hidden"],
                     base_config=like.base_config, algo="random_actor",
                     execute_steps=like.meta.get("execute_steps"), name=f"random_actor_{k}")
        summary = evaluate(folder / "adapter", folder / f"eval_{args.seed}", args.env, args.episodes, args.seed)
        wins, n = int(summary["successes"]), int(summary["episodes"])
        rows.append({"actor": k, "norm": latent_norm(actor, obs), "successes": wins, "episodes": n,
                     "rate": wins / n, "ci95": list(wilson_interval(wins, n))})

    print(f"| random actor | mean \\|w_det\\| | seeds {args.seed}+ | 95 % interval |")
    print("|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['actor']} | {r['norm']:.2f} | {r['successes']}/{r['episodes']} ({r['rate']:.2f}) "
              f"| {r['ci95'][0]:.2f}–{r['ci95'][1]:.2f} |")
    rates = sorted(r["rate"] for r in rows)
    print(f"\n{len(rows)} random actors at |w_det| = {args.norm:g}: success {rates[0]:.2f}–{rates[-1]:.2f}, "
          f"mean {sum(rates) / len(rates):.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"norm": args.norm, "seed": args.seed, "like": str(args.like),
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
