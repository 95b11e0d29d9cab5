"""How flat is success around a DSRL actor's latent, and does averaging snapshots help?

Two measurements on the adapters a DSRL run kept at its evaluations (``keep_eval_adapters=true``),
both on episodes reset with ``--seed + i`` (the held-out seeds of RESULTS by default):

* ``--perturb σ1,σ2,…`` (with ``--step``, default: the run's pick, as ``adapter_best/`` names it): act with the
  snapshot's deterministic latent plus independent ``N(0, σ²)`` noise per latent entry and chunk,
  clipped to the box. If success falls steeply with σ, the good latents are narrow ridges and the
  swings of a learning curve are small actor moves off them.
* ``--average-last K``: act with the mean of the deterministic latents of the run's last ``K``
  snapshots (all of one run share the latent projection) — the snapshot average of SWA, taken in
  latent space rather than in weight space, so the members need not be near each other in weights.

Usage::

    python benchmarks/bench_dsrl_latent_landscape.py outputs/adapt/lift_na_proj16_val50_s1 --average-last 4
    python benchmarks/bench_dsrl_latent_landscape.py outputs/adapt/lift_na_proj16_val50_s4 --perturb 0,0.1,0.2,0.4

Prints one Markdown row per setting (successes, Wilson 95 % interval); ``--json`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_dsrl_snapshots import picked_step, pooled_line, snapshots  # noqa: E402

import torch  # noqa: E402

from embodied_steer.cli import compose, instantiate_env  # noqa: E402
from embodied_steer.core.types import Observation  # noqa: E402
from embodied_steer.dsrl.policy import DSRLPolicy, load_noise_adapter  # noqa: E402
from embodied_steer.eval.runner import run_episode  # noqa: E402
from embodied_steer.eval.stats import wilson_interval  # noqa: E402

log = logging.getLogger("latent_landscape")


class LatentOverride(DSRLPolicy):
    """A DSRL policy acting with the mean latent of several actors, plus optional Gaussian noise.

    ``latent_for`` returns ``clip(mean_k b·tanh(μ_k(s)) + σ·ε, −b, b)``, ``ε ~ N(0, I)`` drawn from
    ``generator`` (one draw per chunk).
    """

    def set_actors(self, actors: Sequence[torch.nn.Module], sigma: float, generator: torch.Generator) -> None:
        self.members, self.sigma, self.generator = list(actors), float(sigma), generator

    @torch.no_grad()
    def latent_for(self, history: Sequence[Observation]) -> torch.Tensor:
        vec = torch.as_tensor(self.features.from_history(list(history)))[None]
        w = torch.stack([a.deterministic(vec) for a in self.members]).mean(0)
        if self.sigma > 0:
            w = w + self.sigma * torch.randn(w.shape, generator=self.generator)
        return w.clamp(-self.latent.bound, self.latent.bound)


def measure(policy: LatentOverride, env, episodes: int, seed: int) -> int:
    t0 = time.perf_counter()
    wins = 0
    for i in range(episodes):
        wins += bool(run_episode(env, policy, episode=i, seed=seed + i).success)
        if (i + 1) % 10 == 0:
            log.info("  %d/%d episodes, %d successes (%.0f s)", i + 1, episodes, wins, time.perf_counter() - t0)
    return wins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="DSRL run folders trained with keep_eval_adapters=true")
    ap.add_argument("--average-last", type=int, default=None, help="average the latents of the last K snapshots")
    ap.add_argument("--perturb", default=None, help="comma-separated σ values added to one snapshot's latent")
    ap.add_argument("--step", type=int, default=None, help="--perturb: the snapshot (env steps; default: the pick)")
    ap.add_argument("--env", default="lift")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=200_000, help="episode i is reset with seed + i")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if (args.average_last is None) == (args.perturb is None):
        raise SystemExit("give exactly one of --average-last K or --perturb σ1,σ2,…")
    if args.average_last is not None and args.average_last < 1:
        raise SystemExit(f"--average-last must be >= 1, got {args.average_last}")
    sigmas = [float(s) for s in args.perturb.split(",")] if args.perturb else [0.0]
    if any(s < 0 for s in sigmas):
        raise SystemExit(f"--perturb values must be >= 0, got {sigmas}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    env = instantiate_env(compose("eval", [f"env={args.env}"]).env)

    plan = []  # every run's snapshots are resolved before the first episode, so a bad run fails fast
    for run in args.runs:
        folders = snapshots(run)
        if args.average_last is not None:
            steps = sorted(folders)[-args.average_last:]
        else:
            steps = [args.step if args.step is not None else picked_step(run)]
        missing = [s for s in steps if s not in folders]
        if missing:
            raise SystemExit(f"{run}: no snapshot at {missing} env steps (have {sorted(folders)})")
        adapters = [load_noise_adapter(folders[s]) for s in steps]
        if any(a.latent.to_dict() != adapters[0].latent.to_dict() for a in adapters):
            raise SystemExit(f"{run}: the snapshots {steps} do not share one latent map")
        plan.append((run, steps, adapters, folders[steps[0]]))

    rows = []
    for run, steps, adapters, first in plan:
        policy = LatentOverride.from_adapter(first)
        for sigma in sigmas:
            policy.set_actors([a.actor for a in adapters], sigma, torch.Generator().manual_seed(args.seed))
            log.info("%s: snapshots %s, σ %.2f", run.name, steps, sigma)
            wins = measure(policy, env, args.episodes, args.seed)
            rows.append({"run": run.name, "snapshots": steps, "sigma": sigma, "episodes": args.episodes,
                         "successes": wins, "ci95": list(wilson_interval(wins, args.episodes))})
            log.info("%s: snapshots %s, σ %.2f: %d/%d", run.name, steps, sigma, wins, args.episodes)

    print(f"| run | snapshots (env steps) | σ | held-out seeds {args.seed}+ | 95 % interval |")
    print("|---|---|---:|---:|---|")
    for r in rows:
        print(f"| {r['run']} | {', '.join(map(str, r['snapshots']))} | {r['sigma']:.2f} | "
              f"{r['successes']}/{r['episodes']} ({r['successes'] / r['episodes']:.2f}) | "
              f"{r['ci95'][0]:.2f}–{r['ci95'][1]:.2f} |")
    if len(args.runs) > 1:
        for sigma in sigmas:
            print(pooled_line(f"σ {sigma:.2f}", [r for r in rows if r["sigma"] == sigma]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": args.env, "seed": args.seed, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
