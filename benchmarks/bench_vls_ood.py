"""VLS reward-guided sampling on out-of-distribution task variants: success and time per chunk.

For each configuration (the base policy, and guided sampling with gradient only / + diversity /
+ Feynman–Kac resampling at several particle counts K) the shipped diffusion policy is rolled out
for ``--episodes`` seeded episodes (episode i: seed ``--seed + i``, the same seeds for every
configuration) through the evaluation runner, with the same guide settings as
``embodied-steer eval ... guide=<name>``. Episodes are appended to
``<out>/<env>/<config>/episodes.jsonl`` as they finish, and a rerun resumes, so partial results
survive an interruption; ``--report`` prints the table from whatever has finished.

Time per action chunk is measured two ways, both as a ratio to the unguided policy *in the same run*:

* ``ms/chunk (episodes)``: mean inference time per chunk over the evaluation episodes;
* ``ratio (interleaved)``: a side-by-side timing pass (``--timing-obs`` observations from a base
  rollout, every configuration timed on each observation in turn, so machine load hits all alike).

Usage::

    python benchmarks/bench_vls_ood.py --env lift_ood --episodes 50
    python benchmarks/bench_vls_ood.py --env lift_ood --report
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embodied_steer.eval.stats import wilson_interval  # noqa: E402

POLICY_FOR_ENV = {"lift_ood": "lift_diffusion", "lift": "lift_diffusion", "lift_obstacle": "lift_diffusion",
                  "pickplace_can_ood": "can_diffusion", "pickplace_can": "can_diffusion"}
#: the plain Lift program (no obstacle term), for the ablation on lift_obstacle.
LIFT_PROGRAM = REPO / "embodied_steer" / "vls" / "programs" / "lift.py"

#: name → (guide config group option or None for the base policy, overrides).
CONFIGS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "base": (None, {}),
    "grad_k1": ("grad", {"num_particles": 1}),
    "grad_k4": ("grad", {"num_particles": 4}),
    "grad_k8": ("grad", {"num_particles": 8}),
    "grad_k16": ("grad", {"num_particles": 16}),
    "div_k8": ("grad", {"num_particles": 8, "diversity": 0.5}),
    "fk_k8": ("vls", {"num_particles": 8}),
    "div_k4": ("grad", {"num_particles": 4, "diversity": 0.5}),
    "fk_k4": ("vls", {"num_particles": 4}),
    "fk_k16": ("vls", {"num_particles": 16}),
    # lift_obstacle ablation: gradient guidance with the plain Lift program, blind to the obstacle.
    "grad_k8_noavoid": ("grad", {"num_particles": 8, "program": str(LIFT_PROGRAM)}),
}
DEFAULT_CONFIGS = "base,grad_k8,fk_k8,grad_k1,grad_k4,div_k8,grad_k16"


class CountingAct:
    """The base policy's act function, counting chunks per episode like the guided sampler does."""

    def __init__(self) -> None:
        self.chunks = 0

    def __call__(self, policy, obs):
        if obs.timestamp == 0.0:
            self.chunks = 0
        self.chunks += 1
        return policy.act(obs)

    def episode_info(self) -> dict[str, Any]:
        return {"chunks": self.chunks}


def build(env_name: str, config: str):
    from omegaconf import OmegaConf

    from embodied_steer.cli import compose, instantiate_env, instantiate_policy
    from embodied_steer.eval.interventions import make_act_fn

    group, overrides = CONFIGS[config]
    hydra = [f"env={env_name}", f"policy={POLICY_FOR_ENV[env_name]}"]
    if group is not None:
        hydra.append(f"guide={group}")
        hydra += [f"guide.{k}={v}" for k, v in overrides.items()]
    cfg = compose("eval", hydra)
    env = instantiate_env(cfg.env)
    policy = instantiate_policy(cfg.policy, env)
    guide = None if group is None else OmegaConf.to_container(cfg.guide, resolve=True)
    act = CountingAct() if guide is None else make_act_fn(cfg.intervention, policy, guide=guide, env=env)
    return env, policy, act, guide


def run_config(args: argparse.Namespace, config: str) -> None:
    from embodied_steer.eval.runner import evaluate

    env, policy, act, guide = build(args.env, config)
    out = Path(args.out) / args.env / config
    t0 = time.perf_counter()
    summary = evaluate(env, policy, episodes=args.episodes, seed=args.seed, output_dir=out, act=act, resume=True,
                       extra={"guide": guide, "config": config})
    print(f"{config}: {summary.successes}/{summary.episodes} in {time.perf_counter() - t0:.0f} s", flush=True)
    env.close()


def timing_pass(args: argparse.Namespace, configs: list[str]) -> dict[str, float]:
    """Median seconds per chunk of each config on the same observations, interleaved."""
    from embodied_steer.sim.base import to_observation

    built = {c: build(args.env, c) for c in configs}
    env, policy, _, _ = built["base"]
    observations = []
    obs_dict, _ = env.reset(seed=args.seed)
    policy.reset(seed=args.seed)
    queue: list = []
    step = 0
    while len(observations) < args.timing_obs and step < env.spec_info.max_episode_steps:
        obs = to_observation(obs_dict, env.instruction, step / env.spec_info.control_hz)
        if not queue:
            observations.append((env.unwrapped_robosuite.sim.get_state().flatten(), obs))
            queue = list(policy.act(obs).actions)
        obs_dict, _, terminated, truncated, _ = env.step(queue.pop(0))
        step += 1
        if terminated or truncated:
            break
    times: dict[str, list[float]] = {c: [] for c in configs}
    for state, obs in observations:
        for c in configs:
            c_env, c_policy, c_act, _ = built[c]
            c_env.reset(seed=args.seed)
            _set_sim_state(c_env, state)  # keypoints read the simulator: the state obs was taken in
            c_policy.reset(seed=args.seed)
            c_policy.observe(obs)
            t0 = time.perf_counter()
            c_act(c_policy, obs)
            times[c].append(time.perf_counter() - t0)
    return {c: statistics.median(v) for c, v in times.items()}


def _set_sim_state(env, state) -> None:
    sim = env.unwrapped_robosuite.sim
    sim.set_state_from_flattened(state)
    sim.forward()


def report(args: argparse.Namespace) -> str:
    root = Path(args.out) / args.env
    rows = []
    timing = {}
    if (root / "timing.json").is_file():
        timing = json.loads((root / "timing.json").read_text())
    base_ms = None
    for config in CONFIGS:
        path = root / config / "episodes.jsonl"
        if not path.is_file():
            continue
        recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        recs = [r for r in recs if r["episode"] < args.episodes]
        if not recs:
            continue
        n = len(recs)
        wins = sum(bool(r["success"]) for r in recs)
        chunks = sum((r.get("info") or {}).get("chunks", 0) for r in recs)
        infer = sum(r["inference_seconds"] for r in recs)
        fallbacks = sum((r.get("info") or {}).get("fallbacks", 0) for r in recs)
        collisions = None
        if any("obstacle_collision" in (r.get("info") or {}) for r in recs):
            collisions = sum(bool((r.get("info") or {}).get("obstacle_collision")) for r in recs)
        ms = 1000 * infer / chunks if chunks else float("nan")
        if config == "base":
            base_ms = ms
        lo, hi = wilson_interval(wins, n)
        rows.append((config, n, wins, lo, hi, ms, fallbacks, collisions))
    base_rate = next((w / n for c, n, w, *_ in rows if c == "base"), None)
    obstacle = any(r[-1] is not None for r in rows)
    lines = ["| config | K | episodes | successes | success rate | 95% CI (Wilson) | vs base (points) | "
             "ms/chunk (episodes) | ratio (episodes) | ratio (interleaved) | fallbacks |"
             + (" obstacle collisions (episodes) |" if obstacle else ""),
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|" + ("---:|" if obstacle else "")]
    for config, n, wins, lo, hi, ms, fallbacks, collisions in rows:
        k = CONFIGS[config][1].get("num_particles", 1)
        delta = "" if base_rate is None or config == "base" else f"{100 * (wins / n - base_rate):+.0f}"
        ratio = "" if base_ms is None else f"{ms / base_ms:.2f}"
        inter = ""
        if config in timing and "base" in timing:
            inter = f"{timing[config] / timing['base']:.2f}"
        hit = f" {collisions}/{n} ({collisions / n:.2f}) |" if collisions is not None else (" |" if obstacle else "")
        lines.append(f"| {config} | {k} | {n} | {wins} | {wins / n:.2f} | {lo:.2f}–{hi:.2f} | {delta} | "
                     f"{ms:.0f} | {ratio} | {inter} | {fallbacks} |" + hit)
    return "\n".join(lines)


def plot(args: argparse.Namespace, path: str) -> None:
    """Bar chart of success rate (Wilson 95% CI) per configuration, and obstacle collisions if any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(args.out) / args.env
    names, rates, errs, hits = [], [], [], []
    for config in CONFIGS:
        path_c = root / config / "episodes.jsonl"
        if not path_c.is_file():
            continue
        recs = [json.loads(line) for line in path_c.read_text().splitlines() if line.strip()]
        recs = [r for r in recs if r["episode"] < args.episodes]
        if not recs:
            continue
        n, wins = len(recs), sum(bool(r["success"]) for r in recs)
        lo, hi = wilson_interval(wins, n)
        names.append(f"{config}\n(n={n})")
        rates.append(wins / n)
        errs.append((wins / n - lo, hi - wins / n))
        infos = [r.get("info") or {} for r in recs]
        hits.append(sum(bool(i.get("obstacle_collision")) for i in infos) / n
                    if any("obstacle_collision" in i for i in infos) else None)
    if not names:
        raise SystemExit(f"nothing to plot under {root}")
    x = list(range(len(names)))
    width = 0.38 if any(h is not None for h in hits) else 0.6
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 3.6))
    ax.bar([i - (width / 2 if width < 0.6 else 0) for i in x], rates, width,
           yerr=list(zip(*errs)), capsize=3, label="success (95% CI)", color="tab:blue")
    if width < 0.6:
        ax.bar([i + width / 2 for i in x], [h or 0.0 for h in hits], width, label="episodes touching the obstacle",
               color="tab:red")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1.3)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("fraction of episodes")
    ax.set_title(f"{args.env}: seeds {args.seed}–{args.seed + args.episodes - 1}")
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="lift_ood", choices=sorted(POLICY_FOR_ENV))
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated, from {list(CONFIGS)}")
    parser.add_argument("--out", default=str(REPO / "outputs" / "bench_vls_ood"))
    parser.add_argument("--timing-obs", type=int, default=0, help="observations in the interleaved timing pass (0: skip)")
    parser.add_argument("--timing-configs", default=None, help="configs of the timing pass (default: --configs)")
    parser.add_argument("--report", action="store_true", help="only print the table from finished episodes")
    parser.add_argument("--plot", default=None, help="with --report: also save a bar chart to this path")
    args = parser.parse_args()
    torch.set_num_threads(1)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; known: {list(CONFIGS)}")
    if args.report:
        print(report(args))
        if args.plot:
            plot(args, args.plot)
        return 0
    if args.timing_obs:
        timed = [c.strip() for c in (args.timing_configs or args.configs).split(",") if c.strip()]
        timing = timing_pass(args, ["base"] + [c for c in timed if c != "base" and c in CONFIGS])
        root = Path(args.out) / args.env
        root.mkdir(parents=True, exist_ok=True)
        (root / "timing.json").write_text(json.dumps(timing, indent=2))
        print("interleaved s/chunk:", json.dumps(timing), flush=True)
    for config in configs:
        run_config(args, config)
        print(report(args), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
