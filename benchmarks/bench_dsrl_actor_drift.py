"""How a DSRL noise actor moves over a run: its kept snapshots measured on the run's own states.

A run trained with ``keep_eval_adapters=true`` keeps the actor it evaluated every ``eval_every`` steps
(``adapters/step_<env steps>/``). This script loads each snapshot and runs it — no environment, no
decoding — on the agent observations of the run's replay buffer (``checkpoint/replay_buffer.npz``,
the states the run visited), and reports per snapshot:

* ``|w_det|``: mean norm of the deterministic latent ``b·tanh(mean)`` the evaluation acts with
  (0 is the base policy's zero-noise path; a clipped ``N(0, I)`` draw of 112 dims has norm ≈ 7.6);
* ``step``: mean norm of the change of ``w_det`` since the previous snapshot, on the same states;
* ``std``: mean pre-squash standard deviation of the actor;
* ``edge``: share of the latent entries of actor *samples* (what training acts with) within 10 % of
  the box edge — a saturating actor shows here first;
* the run's own evaluation at that step, and the held-out re-evaluation where
  ``bench_dsrl_snapshots.py`` has written one (``heldout_<seed>/step_<n>/summary.json``).

Usage::

    python benchmarks/bench_dsrl_actor_drift.py outputs/adapt/lift_na_h80_free_s1 outputs/adapt/lift_na_h80_free_zm_s2 \
        --plot benchmarks/figures/dsrl_actor_drift.png

Prints one Markdown table per run; ``--json`` writes the numbers, ``--plot`` the latent norm and the
evaluations against environment steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embodied_steer.dsrl.policy import load_noise_adapter  # noqa: E402
from embodied_steer.dsrl.progress import read_curve  # noqa: E402

EDGE = 0.9  # a latent entry beyond 0.9·b counts as at the box edge


def buffer_states(run: Path, n: int) -> torch.Tensor:
    """Up to ``n`` agent observations (evenly spaced) from the run's replay buffer, ``(n, D_obs)``."""
    path = run / "checkpoint" / "replay_buffer.npz"
    if not path.is_file():
        raise SystemExit(f"{run}: no {path.relative_to(run)} (not a DSRL-NA run, or it has not written a "
                         "checkpoint; DSRL-SAC keeps SB3's replay_buffer.pkl instead)")
    with np.load(path) as data:
        if "obs" not in data.files:
            raise SystemExit(f"{path} has no 'obs' array (keys: {sorted(data.files)})")
        obs = data["obs"]
        size = int(data["size"]) if "size" in data.files else len(obs)
    obs = obs[:size]
    if len(obs) == 0:
        raise SystemExit(f"{path} holds no transitions")
    rows = np.unique(np.linspace(0, len(obs) - 1, min(n, len(obs))).astype(int))
    return torch.as_tensor(obs[rows], dtype=torch.float32)


def heldout(run: Path, folder_name: str) -> tuple[int, int] | None:
    """(successes, episodes) of the held-out re-evaluation of one snapshot, if there is exactly one."""
    found = sorted(run.glob(f"heldout_*/{folder_name}/summary.json"))
    if len(found) != 1:
        return None
    summary = json.loads(found[0].read_text())
    return int(summary["successes"]), int(summary["episodes"])


@torch.no_grad()
def measure(run: Path, states: int, seed: int) -> list[dict]:
    """One row per kept snapshot of ``run``, in order of environment steps."""
    folders = sorted((run / "adapters").glob("step_*"))
    if not folders:
        raise SystemExit(f"{run} has no adapters/step_*/ snapshots: train it with keep_eval_adapters=true")
    obs = buffer_states(run, states)
    curve = {int(r["env_steps"]): float(r["success_rate"]) for r in read_curve(run)}
    rows, previous = [], None
    for folder in folders:
        adapter = load_noise_adapter(folder)
        if obs.shape[1] != adapter.features.dim:
            raise SystemExit(f"{folder}: the actor reads {adapter.features.dim} observation values, "
                             f"the replay buffer holds {obs.shape[1]}")
        actor = adapter.actor
        mean, log_std = actor._dist(obs)
        w_det = actor.bound * torch.tanh(mean)
        torch.manual_seed(seed)  # the same sample draws for every snapshot
        samples, _ = actor(obs)
        steps = int(folder.name.split("_")[-1])
        row = {"env_steps": steps,
               "w_det_norm": float(w_det.norm(dim=-1).mean()),
               "w_det_step": None if previous is None else float((w_det - previous).norm(dim=-1).mean()),
               "std": float(log_std.exp().mean()),
               "edge": float((samples.abs() > EDGE * actor.bound).float().mean()),
               "training_eval": curve.get(steps),
               "heldout": heldout(run, folder.name)}
        rows.append(row)
        previous = w_det
    return rows


def table(run: str, rows: list[dict]) -> str:
    lines = [f"**{run}**", "", "| env steps | \\|w_det\\| | step | std | edge | evaluation | held-out |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        step = "—" if r["w_det_step"] is None else f"{r['w_det_step']:.2f}"
        during = "—" if r["training_eval"] is None else f"{r['training_eval']:.2f}"
        held = "—" if r["heldout"] is None else f"{r['heldout'][0]}/{r['heldout'][1]}"
        lines.append(f"| {r['env_steps']} | {r['w_det_norm']:.2f} | {step} | {r['std']:.2f} | {r['edge']:.2f} "
                     f"| {during} | {held} |")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for i, (run, rows) in enumerate(results.items()):
        x = [r["env_steps"] for r in rows]
        top.plot(x, [r["w_det_norm"] for r in rows], "-o", ms=3, color=f"C{i}", label=run)
        bottom.plot(x, [np.nan if r["training_eval"] is None else r["training_eval"] for r in rows], "-o", ms=3,
                    color=f"C{i}", alpha=0.6)
        held = [(r["env_steps"], r["heldout"][0] / r["heldout"][1]) for r in rows if r["heldout"]]
        if held:
            bottom.plot(*zip(*held), "s", color=f"C{i}", ms=6)
    top.set_ylabel("|b·tanh(mean)| on the run's states")
    top.legend(fontsize=7)
    bottom.set_ylabel("success (lines: training evals,\nsquares: held-out)")
    bottom.set_xlabel("environment steps")
    bottom.set_ylim(0, 1.02)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="DSRL-NA run folders trained with keep_eval_adapters=true")
    ap.add_argument("--states", type=int, default=2048, help="replay-buffer observations to measure on")
    ap.add_argument("--seed", type=int, default=0, help="seed of the actor samples behind 'edge'")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    if args.states < 1:
        raise SystemExit(f"--states must be >= 1, got {args.states}")
    results = {run.name: measure(run, args.states, args.seed) for run in args.runs}
    for run, rows in results.items():
        print(table(run, rows), end="\n\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
