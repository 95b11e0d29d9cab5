"""Average a DSRL run's kept actors (weights, as in SWA) and re-evaluate the average on held-out seeds.

``bench_dsrl_actor_drift.py`` shows the Lift DSRL-NA actor's mean wandering: it moves between two
evaluations by about as far as it sits from the zero latent, and the evaluations swing with it.
If the wander is noise around a direction the critic prefers, the average of the snapshots along
one run is a better policy than any single one (the argument of stochastic weight averaging); if it
is noise around nothing, the average sits near the zero latent and gives the zero-noise rate. This
script builds, per run, the parameter mean of the snapshots kept at ``--from`` env steps or later
(``adapters/step_<n>/``, ``keep_eval_adapters=true``; the snapshots of one run share an init and a
trajectory, which is what makes averaging their weights meaningful), saves it as an ordinary
adapter ``<run>/averaged_from_<n>/adapter`` and evaluates it with ``embodied-steer eval`` on the
seeds of ``bench_dsrl_snapshots.py``.

Usage::

    python benchmarks/bench_dsrl_snapshot_average.py outputs/adapt/lift_na_h80_free_s1 --from 9000 --episodes 50 --seed 200000

Prints one row per run: the snapshots averaged, the average's ``|b·tanh(mean)|`` on the run's states
and its held-out success.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_dsrl_actor_drift import buffer_states  # noqa: E402
from bench_dsrl_random_actor import latent_norm  # noqa: E402
from bench_dsrl_snapshots import evaluate, snapshots  # noqa: E402

from embodied_steer.dsrl.networks import NoiseActor  # noqa: E402
from embodied_steer.dsrl.policy import NoiseAdapter, load_noise_adapter, save_adapter  # noqa: E402
from embodied_steer.eval.stats import wilson_interval  # noqa: E402


@torch.no_grad()
def average_actors(adapters: list[NoiseAdapter]) -> NoiseActor:
    """A copy of the first adapter's actor holding the element-wise mean of all their parameters.

    Raises:
        SystemExit: the adapters do not share one layout (parameter names and shapes).
    """
    if not adapters:
        raise SystemExit("no snapshots to average")
    states = [a.actor.state_dict() for a in adapters]
    first = states[0]
    for adapter, state in zip(adapters[1:], states[1:]):
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise SystemExit(f"{adapter.folder} has another actor layout than {adapters[0].folder}")
    averaged = copy.deepcopy(adapters[0].actor)
    averaged.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(0) for k in first})
    return averaged.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="DSRL-NA run folders trained with keep_eval_adapters=true")
    ap.add_argument("--from", dest="start", type=int, default=9000, help="average the snapshots at >= these env steps")
    ap.add_argument("--env", default="lift")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=200_000, help="episode i is reset with seed + i")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    rows = []
    for run in args.runs:
        kept = {steps: folder for steps, folder in snapshots(run).items() if steps >= args.start}
        if not kept:
            raise SystemExit(f"{run} keeps no snapshot at >= {args.start} env steps")
        adapters = [load_noise_adapter(folder) for folder in kept.values()]
        actor = average_actors(adapters)
        like = adapters[-1]
        folder = run / f"averaged_from_{args.start}"
        save_adapter(folder / "adapter", actor, like.latent, like.features, hidden=like.meta["hidden"],
                     base_config=like.base_config, algo=str(like.meta.get("algo", "dsrl_na")),
                     execute_steps=like.meta.get("execute_steps"), name=f"{run.name}_averaged_from_{args.start}")
        norm = latent_norm(actor, buffer_states(run, 2048))
        summary = evaluate(folder / "adapter", folder / f"heldout_{args.seed}", args.env, args.episodes, args.seed)
        wins, n = int(summary["successes"]), int(summary["episodes"])
        rows.append({"run": run.name, "snapshots": sorted(kept), "w_det_norm": norm, "successes": wins,
                     "episodes": n, "heldout": wins / n, "ci95": list(wilson_interval(wins, n))})

    print(f"| run | snapshots averaged | \\|w_det\\| | held-out seeds {args.seed}+ | 95 % interval |")
    print("|---|---|---:|---:|---|")
    for r in rows:
        span = f"{len(r['snapshots'])} ({r['snapshots'][0]}–{r['snapshots'][-1]})"
        print(f"| {r['run']} | {span} | {r['w_det_norm']:.2f} | {r['successes']}/{r['episodes']} ({r['heldout']:.2f}) "
              f"| {r['ci95'][0]:.2f}–{r['ci95'][1]:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"from": args.start, "seed": args.seed, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
