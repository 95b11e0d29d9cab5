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

Usage::

    python benchmarks/bench_dsrl_critic_fit.py outputs/adapt/lift_na_kl0.2 outputs/adapt/lift_na_mc_n
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embodied_steer.dsrl.na import episode_returns  # noqa: E402
from embodied_steer.dsrl.networks import CriticEnsemble  # noqa: E402


def load_run(run: Path) -> tuple[dict[str, np.ndarray], CriticEnsemble]:
    with np.load(run / "checkpoint" / "replay_buffer.npz") as z:
        n = int(z["size"])
        data = {k: z[k][:n] for k in ("obs", "action", "reward", "discount", "terminal", "next_obs")}
    cfg = json.loads((run / "adapt_config.json").read_text())
    tensors = load_file(str(run / "checkpoint" / "networks.safetensors"))
    critic = CriticEnsemble(data["obs"].shape[1], data["action"].shape[1], cfg["hidden"], cfg["n_critics"],
                            cfg.get("na_layernorm", True))
    critic.load_state_dict({k[len("q_a."):]: v for k, v in tensors.items() if k.startswith("q_a.")})
    return data, critic.eval()


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
    print("| chunk index in the episode | n | mean Q_A (went on to succeed) | mean Q_A (failed) | AUC "
          "| mean Q_A (all) | mean MC return (all) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    by_index = []
    for lo, hi in ((0, 3), (3, 6), (6, 10), (10, 30)):
        m = (index >= lo) & (index < hi)
        if not m.any():  # e.g. no episode reaches chunk 10 under a short training horizon
            continue
        row = {"from": lo, "to": hi, "n": int(m.sum()), "q_success": _mean(q[m & success]),
               "q_failure": _mean(q[m & ~success]), "auc": auc(q[m & success], q[m & ~success]),
               "q_all": _mean(q[m]), "mc_all": _mean(mc[m])}
        by_index.append(row)
        print(f"| {lo}–{hi - 1} | {row['n']} | {row['q_success']:.3f} | {row['q_failure']:.3f} | {row['auc']:.2f} "
              f"| {row['q_all']:.3f} | {row['mc_all']:.3f} |")
    out.update(before_success=before, by_index=by_index)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="DSRL-NA run folders (outputs/adapt/<run>)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = [report(run) for run in args.runs]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
