"""How well does a DSRL-NA run's action critic ``Q_A`` know what its own episodes returned?

Reads a run folder's last checkpoint (``checkpoint/networks.safetensors`` and the replay buffer),
cuts the online replay into episodes (a new episode starts where a transition's observation is not
the previous one's next observation), computes every transition's Monte-Carlo return ``G`` from the
rewards it stored (:func:`~embodied_steer.dsrl.na.episode_returns`; failed episodes — cut by the
time limit or, with ``train_horizon_cut=fail``, by the training horizon — have return 0, which is
exact for the success-only reward; an episode succeeded when its last chunk earned a reward), and
compares ``min_i Q_A,i(s, a)`` with it:

* on successful episodes, by how many chunks were left before the success: a critic that has
  propagated the sparse reward has ``Q ≈ G`` there;
* by chunk index from the start of the episode: the mean ``Q`` on episodes that went on to succeed
  and on those that failed, the share of (success, failure) pairs that ``Q`` orders correctly
  (an AUC; 0.5 is no discrimination), and the mean ``Q`` against the mean return over all of them
  (the value of the policy that acted: a critic above it is optimistic there).

With ``--rollout N`` it also runs the run's deployed adapter (``adapter/``, saved with the last
checkpoint) for ``N`` episodes on seeds ``--seed + i`` that training never saw, and scores each
chunk's deployed latent ``w`` with the noise critic, ``min_i Q_W,i(s, w)`` — the value the actor
climbs. Against these episodes' own returns (``γ^(steps to the success)``, 0 on a failure; Lift's
reward is success-only) this says whether the critic knows, on unseen episodes of the policy that is
deployed, how often it succeeds (calibration) and which episodes will (AUC) — the in-replay
numbers above are on transitions the critic was fitted to.

Usage::

    python benchmarks/bench_dsrl_critic_fit.py outputs/adapt/lift_na_kl0.2 outputs/adapt/lift_na_mc_n
    python benchmarks/bench_dsrl_critic_fit.py outputs/adapt/lift_na_proj16_val50_s1 --rollout 50 --seed 200000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embodied_steer.cli import compose, instantiate_env  # noqa: E402
from embodied_steer.core.types import Observation  # noqa: E402
from embodied_steer.dsrl.na import episode_returns  # noqa: E402
from embodied_steer.dsrl.networks import CriticEnsemble  # noqa: E402
from embodied_steer.dsrl.policy import DSRLPolicy  # noqa: E402
from embodied_steer.eval.runner import run_episode  # noqa: E402


class RecordingDSRLPolicy(DSRLPolicy):
    """The adapted policy, keeping the agent observation and latent of every chunk it plans."""

    def start_recording(self) -> None:
        self.recorded: list[tuple[np.ndarray, np.ndarray]] = []

    def latent_for(self, history: Sequence[Observation]) -> torch.Tensor:
        w = super().latent_for(history)
        self.recorded.append((self.features.from_history(list(history)), w[0].detach().numpy().copy()))
        return w


def load_critic(run: Path, name: str, in_dim: int, obs_dim: int) -> CriticEnsemble:
    """The checkpoint's ``name`` critic (``q_a``: over executed chunks; ``q_w``: over latents)."""
    cfg = json.loads((run / "adapt_config.json").read_text())
    tensors = load_file(str(run / "checkpoint" / "networks.safetensors"))
    critic = CriticEnsemble(obs_dim, in_dim, cfg["hidden"], cfg["n_critics"], cfg.get("na_layernorm", True))
    critic.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
    return critic.eval()


def by_chunk_index(q: np.ndarray, ret: np.ndarray, success: np.ndarray, index: np.ndarray,
                   ranges: Sequence[tuple[int, int]], critic: str, ret_name: str) -> list[dict[str, float]]:
    """Print and return, per range ``[lo, hi)`` of chunk indices, the mean critic value on episodes that
    went on to succeed and on those that failed, their AUC, and the mean value against the mean return."""
    print(f"| chunk index in the episode | n | mean {critic} (went on to succeed) | mean {critic} (failed) | AUC "
          f"| mean {critic} (all) | mean {ret_name} (all) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for lo, hi in ranges:
        m = (index >= lo) & (index < hi)
        if not m.any():  # e.g. no episode reaches chunk 10 under a short training horizon
            continue
        row = {"from": lo, "to": hi, "n": int(m.sum()), "q_success": _mean(q[m & success]),
               "q_failure": _mean(q[m & ~success]), "auc": auc(q[m & success], q[m & ~success]),
               "q_all": _mean(q[m]), "mc_all": _mean(ret[m])}
        rows.append(row)
        print(f"| {lo}–{hi - 1} | {row['n']} | {row['q_success']:.3f} | {row['q_failure']:.3f} | {row['auc']:.2f} "
              f"| {row['q_all']:.3f} | {row['mc_all']:.3f} |")
    return rows


def rollout_report(run: Path, env, episodes: int, seed: int) -> dict[str, object]:
    """``Q_W`` at the deployed latent on ``episodes`` unseen episodes against their returns."""
    cfg = json.loads((run / "adapt_config.json").read_text())
    policy = RecordingDSRLPolicy.from_adapter(run / "adapter")
    critic = load_critic(run, "q_w", int(policy.latent.latent_dim), int(policy.features.dim))
    k, gamma = int(policy.info.execute_steps), float(cfg["gamma"])
    q, g, success, index = [], [], [], []
    wins = 0
    for i in range(episodes):
        policy.start_recording()
        result = run_episode(env, policy, episode=i, seed=seed + i)
        wins += bool(result.success)
        obs = torch.as_tensor(np.stack([o for o, _ in policy.recorded]))
        lat = torch.as_tensor(np.stack([w for _, w in policy.recorded]))
        with torch.no_grad():
            q.append(critic(obs, lat).min(0).values.numpy())
        j = np.arange(len(policy.recorded))
        g.append(gamma ** (result.steps - 1 - j * k) if result.success else np.zeros(len(j)))
        success.append(np.full(len(j), bool(result.success)))
        index.append(j)
    q_all, g_all, ok, idx = (np.concatenate(x) for x in (q, g, success, index))
    print(f"\n{run}: the deployed adapter on seeds {seed}–{seed + episodes - 1}: {wins}/{episodes} successes")
    rows = by_chunk_index(q_all, g_all, ok, idx, ((0, 1), (0, 3), (3, 6), (6, 10)), "Q_W", "return")
    return {"run": str(run), "seed": seed, "episodes": episodes, "successes": wins, "by_index": rows}


def load_run(run: Path) -> tuple[dict[str, np.ndarray], CriticEnsemble]:
    with np.load(run / "checkpoint" / "replay_buffer.npz") as z:
        n = int(z["size"])
        data = {k: z[k][:n] for k in ("obs", "action", "reward", "discount", "terminal", "next_obs")}
    return data, load_critic(run, "q_a", data["action"].shape[1], data["obs"].shape[1])


def episodes(data: dict[str, np.ndarray]) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of the episodes in replay order."""
    obs, nxt = data["obs"], data["next_obs"]
    starts = [0] + [i for i in range(1, len(obs)) if not np.allclose(obs[i], nxt[i - 1])]
    return list(zip(starts, starts[1:] + [len(obs)]))


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Share of (positive, negative) pairs with ``pos > neg``."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float(np.mean(pos[:, None] > neg[None, :]))


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else float("nan")


def report(run: Path) -> dict[str, object]:
    data, critic = load_run(run)
    n = len(data["obs"])
    mc = np.zeros(n, np.float32)
    success = np.zeros(n, bool)
    index = np.zeros(n, int)
    left = np.zeros(n, int)
    spans = episodes(data)
    for s, e in spans:
        g = episode_returns(data["reward"][s:e], data["discount"][s:e], terminated=True)  # failures: cut, G = 0
        mc[s:e] = g
        success[s:e] = data["reward"][e - 1] > 0  # success-only reward: a terminal cut earns nothing
        index[s:e] = np.arange(e - s)
        left[s:e] = np.arange(e - s)[::-1]
    with torch.no_grad():
        q = critic(torch.as_tensor(data["obs"]), torch.as_tensor(data["action"])).min(0).values.numpy()
    out: dict[str, object] = {"run": str(run), "episodes": len(spans), "successes": int(sum(data["reward"][e - 1] > 0
                                                                                            for _, e in spans))}
    print(f"\n{run}: {out['episodes']} episodes in the replay, {out['successes']} successful")
    print("| chunks before the success | n | mean Q_A | mean MC return |")
    print("|---|---:|---:|---:|")
    before = []
    for lo, hi in ((0, 1), (1, 3), (3, 6), (6, 10)):
        m = success & (left >= lo) & (left < hi)
        if not m.any():
            continue
        row = {"from": lo, "to": hi, "n": int(m.sum()), "q": float(q[m].mean()), "mc": float(mc[m].mean())}
        before.append(row)
        print(f"| {lo}–{hi - 1} | {row['n']} | {row['q']:.3f} | {row['mc']:.3f} |")
    by_index = by_chunk_index(q, mc, success, index, ((0, 3), (3, 6), (6, 10), (10, 30)), "Q_A", "MC return")
    out.update(before_success=before, by_index=by_index)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="DSRL-NA run folders (outputs/adapt/<run>)")
    ap.add_argument("--rollout", type=int, default=0, help="also score the deployed latent on this many unseen episodes")
    ap.add_argument("--seed", type=int, default=200_000, help="--rollout: episode i is reset with seed + i")
    ap.add_argument("--env", default="lift", help="--rollout: the environment the runs trained on")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.rollout < 0:
        raise SystemExit(f"--rollout must be >= 0, got {args.rollout}")
    for run in args.runs:  # fail before the first (slow) rollout
        for need in ("adapt_config.json", "checkpoint/networks.safetensors", "checkpoint/replay_buffer.npz",
                     *(("adapter/adapter.json",) if args.rollout else ())):
            if not (run / need).is_file():
                raise SystemExit(f"{run}: no {need} (is it a DSRL-NA run folder with a checkpoint?)")
    rows = [report(run) for run in args.runs]
    if args.rollout:
        torch.set_num_threads(1)
        env = instantiate_env(compose("eval", [f"env={args.env}"]).env)
        for row, run in zip(rows, args.runs):
            row["rollout"] = rollout_report(run, env, args.rollout, args.seed)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
