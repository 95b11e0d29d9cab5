"""Measured effect of neuron steering on the shipped small token VLA, in closed-loop robosuite Lift.

Method, end to end (the mechanistic-steering recipe for VLAs):

1. **Discovery by vocabulary projection.** Every MLP neuron's value vector (a column of
   ``llm.layers.{i}.mlp.down_proj.weight``) is projected onto the unembedding; neurons are ranked
   by how strongly they promote a concept: the word ``up`` (``--concept up``), the *upward action
   bins* (bins whose un-normalised z delta is above +0.1, minus those below -0.1: ``up_bins``), or
   ``fast``. The top ``k`` over all layers form the steered set.
2. **Interventions** (steer-api, at the down-projection input, all token positions): a static
   clamp at several values, and a closed-loop PID coefficient on the measured end-effector height.
3. **Controls:** the same number of neurons drawn at random from the same layers (several draws),
   clamped at the same values.
4. **Measurement** in closed-loop simulation: seeded Lift episodes (same seeds in every setting,
   so differences are paired), ``terminate_on_success=false`` and a fixed number of steps so that
   every episode covers the same time window. Per episode: mean and max end-effector height (m),
   mean upward velocity and mean speed (m/s), and task success (cube lifted at any step).

Output: ``<out>/episodes.jsonl`` (one row per setting × episode, resumable), ``<out>/table.md``,
``<out>/steering_effect.png``.

    .venv/bin/python benchmarks/bench_steering_effect.py --episodes 30 --out outputs/bench_steering
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from embodied_steer.adapters.token_vla import TokenVLAPolicy  # noqa: E402
from embodied_steer.eval.runner import run_episode  # noqa: E402
from embodied_steer.eval.stats import mean_interval, wilson_interval  # noqa: E402

CONTROL_HZ = 20


# ----------------------------------------------------------------------------------- discovery
def concept_neurons(policy: TokenVLAPolicy, concept: str, k: int) -> tuple[dict[str, list[int]], list[dict[str, Any]]]:
    """Top-``k`` neurons (over all layers) whose value vectors promote ``concept``; see module doc."""
    from embodied_steer.steering.discovery import find_neurons

    tok = policy.tokenizer
    if concept == "up_bins":
        bins = np.arange(256)
        z = tok.from_bins(np.stack([np.full(256, 128)] * 2 + [bins] + [np.full(256, 128)] * 4, axis=1))[:, 2]
        up = [f"<bin_{b:03d}>" for b in bins[z > 0.1]]
        down = [f"<bin_{b:03d}>" for b in bins[z < -0.1]]
        found = find_neurons(policy, up, k=k, against=down)
    else:
        found = find_neurons(policy, [concept], k=k)
    return found.selection(), found.rows()


def random_like(policy: TokenVLAPolicy, selection: dict[str, list[int]], seed: int) -> dict[str, list[int]]:
    """As many neurons per module as ``selection``, drawn at random (excluding the selected ones)."""
    rng = np.random.default_rng(seed)
    width = policy.model.config.intermediate_size
    out = {}
    for module, idx in selection.items():
        pool = np.setdiff1d(np.arange(width), idx)
        out[module] = sorted(rng.choice(pool, size=len(idx), replace=False).tolist())
    return out


# ----------------------------------------------------------------------------------- episodes
class _SuccessProbe:
    """Wraps an env to remember the first step at which ``info['is_success']`` was true."""

    def __init__(self, env) -> None:
        self.env = env
        self.first_success: int | None = None
        self.t = 0

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, **kw):
        self.first_success, self.t = None, 0
        return self.env.reset(**kw)

    def step(self, action):
        out = self.env.step(action)
        self.t += 1
        if out[4].get("is_success") and self.first_success is None:
            self.first_success = self.t
        return out


def episode_metrics(zs: np.ndarray, pos: np.ndarray) -> dict[str, float]:
    vel = np.diff(pos, axis=0) * CONTROL_HZ
    return {
        "mean_z": float(zs.mean()), "max_z": float(zs.max()),
        "mean_up_velocity": float(vel[:, 2].mean()) if len(vel) else 0.0,
        "mean_speed": float(np.linalg.norm(vel, axis=1).mean()) if len(vel) else 0.0,
    }


def run_setting(env, policy, setting: dict[str, Any], seeds: list[int], max_steps: int,
                done: set[tuple[str, int]], sink) -> None:
    from embodied_steer.steering import attach

    name = setting["name"]
    todo = [s for s in seeds if (name, s) not in done]
    if not todo:
        return
    handle = attach(policy, setting["interventions"]) if setting.get("interventions") else None
    try:
        for seed in todo:
            states: list[np.ndarray] = []
            coefs: list[float] = []

            def act(p, obs):
                if handle is not None:
                    coefs.append(float(np.mean(list(handle.begin_call(obs).values()))))
                return p.act(obs)

            t0 = time.perf_counter()
            result = run_episode(env, policy, episode=seed, seed=seed, max_steps=max_steps, act=act,
                                 on_step=lambda o, a: states.append(np.asarray(o["state"][:3], np.float64)))
            pos = np.stack(states)
            row = {"setting": name, "group": setting["group"], "coefficient": setting.get("coefficient"),
                   "seed": seed, "success": bool(result.success), "first_success_step": env.first_success,
                   "steps": result.steps, "mean_coefficient": float(np.mean(coefs)) if coefs else 0.0,
                   "seconds": round(time.perf_counter() - t0, 2), **episode_metrics(pos[:, 2], pos)}
            sink(row)
    finally:
        if handle is not None:
            handle.remove()


# ----------------------------------------------------------------------------------- reporting
def summarise(rows: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    by = {}
    for r in rows:
        by.setdefault(r["setting"], {})[r["seed"]] = r
    base = by.get("baseline", {})
    out = []
    for name in order:
        eps = by.get(name)
        if not eps:
            continue
        seeds = sorted(eps)
        succ = sum(eps[s]["success"] for s in seeds)
        lo, hi = wilson_interval(succ, len(seeds))
        entry = {"setting": name, "group": eps[seeds[0]]["group"], "n": len(seeds), "success": succ / len(seeds),
                 "success_ci": (lo, hi), "coef": float(np.mean([eps[s]["mean_coefficient"] for s in seeds]))}
        for metric in ("mean_z", "max_z", "mean_up_velocity", "mean_speed"):
            entry[metric] = mean_interval([eps[s][metric] for s in seeds])
            paired = [eps[s][metric] - base[s][metric] for s in seeds if s in base]
            entry["d_" + metric] = mean_interval(paired) if name != "baseline" else (0.0, 0.0, 0.0)
        out.append(entry)
    return out


def table(summary: list[dict[str, Any]]) -> str:
    head = ("| setting | n | mean coef | success (95% CI) | mean EE z, m | Δ mean z vs baseline, cm (95% CI) "
            "| Δ max z, cm (95% CI) | Δ mean upward vel., cm/s (95% CI) | Δ mean speed, cm/s (95% CI) |")
    lines = [head, "|" + "---|" * head.count("|")[:-1] if False else "|---|---|---|---|---|---|---|---|---|"]

    def d(e, m, scale=100.0):
        mu, lo, hi = e["d_" + m]
        return f"{mu * scale:+.1f} ({lo * scale:+.1f} … {hi * scale:+.1f})"

    for e in summary:
        lo, hi = e["success_ci"]
        lines.append(f"| {e['setting']} | {e['n']} | {e['coef']:.2f} | {e['success']:.2f} ({lo:.2f}–{hi:.2f}) | "
                     f"{e['mean_z'][0]:.3f} | {d(e, 'mean_z')} | {d(e, 'max_z')} | {d(e, 'mean_up_velocity')} | "
                     f"{d(e, 'mean_speed')} |")
    return "\n".join(lines)


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"baseline": "0.4", "concept": "tab:red", "random": "tab:blue", "pid": "tab:green"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [e["setting"] for e in summary]
    y = np.arange(len(summary))
    for ax, metric, label, scale in ((axes[0], "d_mean_z", "Δ mean end-effector z vs baseline (cm)", 100.0),
                                     (axes[1], None, "task success (95% Wilson CI)", 1.0)):
        for i, e in enumerate(summary):
            c = colors.get(e["group"], "k")
            if metric:
                mu, lo, hi = (v * scale for v in e[metric])
            else:
                mu, (lo, hi) = e["success"], e["success_ci"]
            ax.errorbar(mu, i, xerr=[[mu - lo], [hi - mu]], fmt="o", color=c, capsize=3)
        ax.set_yticks(y, names if ax is axes[0] else [""] * len(names))
        ax.axvline(0.0 if metric else summary[0]["success"], color="0.7", lw=1, ls="--")
        ax.set_xlabel(label)
        ax.invert_yaxis()
    fig.suptitle("Neuron steering of the small token VLA on robosuite Lift (paired seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------- main
def build_settings(policy, args) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from embodied_steer.steering import PID, clamp

    settings: list[dict[str, Any]] = [{"name": "baseline", "group": "baseline"}]
    discovered: dict[str, Any] = {}
    for concept in args.concepts:
        selection, rows = concept_neurons(policy, concept, args.k)
        discovered[concept] = {"neurons": selection, "top": rows[: args.k]}
        for c in args.coefs:
            settings.append({"name": f"clamp {concept} k={args.k} c={c:g}", "group": "concept", "coefficient": c,
                             "interventions": [clamp(None, selection, c)]})
        for draw in range(args.random_draws):
            rand = random_like(policy, selection, seed=draw)
            discovered[f"random_{concept}_{draw}"] = {"neurons": rand}
            for c in args.random_coefs or args.coefs:
                settings.append({"name": f"random#{draw} ({concept}-sized) c={c:g}", "group": "random",
                                 "coefficient": c, "interventions": [clamp(None, rand, c)]})
        if concept in args.pid_concepts:
            pid = PID("state[2]", args.pid_target, kp=args.pid_kp, ki=args.pid_ki, limits=(0.0, max(args.coefs)), sign=1.0)
            settings.append({"name": f"PID {concept} → z={args.pid_target:g} m", "group": "pid", "coefficient": None,
                             "interventions": [clamp(None, selection, pid)]})
    return settings, discovered


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(Path(__file__).resolve().parents[1] / "checkpoints" / "lift_token_vla"))
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--max-steps", type=int, default=80)
    p.add_argument("--k", type=int, default=24)
    p.add_argument("--concepts", nargs="+", default=["up"])
    p.add_argument("--coefs", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--random-draws", type=int, default=3)
    p.add_argument("--random-coefs", type=float, nargs="*", default=None)
    p.add_argument("--pid-concepts", nargs="*", default=["up"])
    p.add_argument("--pid-target", type=float, default=1.0)
    p.add_argument("--pid-kp", type=float, default=20.0)
    p.add_argument("--pid-ki", type=float, default=10.0)
    p.add_argument("--only", nargs="*", default=None, help="run only settings whose name contains one of these")
    p.add_argument("--out", default="outputs/bench_steering")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    from embodied_steer.cli import compose, instantiate_env

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy = TokenVLAPolicy.from_pretrained(args.checkpoint, name="lift_token_vla")
    settings, discovered = build_settings(policy, args)
    (out / "neurons.json").write_text(json.dumps(discovered, indent=1, default=str))
    (out / "args.json").write_text(json.dumps(vars(args), indent=1))
    env = _SuccessProbe(instantiate_env(compose("eval", ["env=lift", "env.terminate_on_success=false"]).env))
    seeds = list(range(args.seed, args.seed + args.episodes))
    rows_path = out / "episodes.jsonl"
    rows = [json.loads(l) for l in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {(r["setting"], r["seed"]) for r in rows}

    def sink(row):
        rows.append(row)
        with rows_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    for setting in settings:
        if args.only and setting["name"] != "baseline" and not any(s in setting["name"] for s in args.only):
            continue
        t0 = time.perf_counter()
        run_setting(env, policy, setting, seeds, args.max_steps, done, sink)
        n = [r for r in rows if r["setting"] == setting["name"]]
        print(f"{setting['name']:<40} {len(n)} episodes, success {np.mean([r['success'] for r in n]):.2f}, "
              f"mean z {np.mean([r['mean_z'] for r in n]):.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    env.close()
    order = [s["name"] for s in settings]
    summary = summarise(rows, order)
    text = table(summary)
    (out / "table.md").write_text(text + "\n")
    plot(summary, out / "steering_effect.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
