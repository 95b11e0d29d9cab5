"""Evaluate one DSRL-NA run's last checkpoint with different ways of turning its actor into a latent.

Modes (each on the same evaluation seeds as ``embodied-steer adapt``: ``eval_seed + i``):

* ``mean``: ``b·tanh(μ(s))``, what ``adapt`` evaluates by default;
* ``sample``: one sample of the actor per chunk (what the training episodes execute);
* ``select<N>``: the best by the noise critic ``min_i Q_W,i`` of the mean and ``N − 1`` actor
  samples (``na_select=N``);
* ``qa_select<N>``: the same candidates, each decoded through the base policy and scored by the
  action critic ``min_i Q_A,i(s, a)`` instead (a control: ``Q_A`` is fitted on executed chunks only);
* ``zero``: the zero latent (the base policy's mean path) and ``base``: the base policy's own noise,
  ``N(0, I)`` clipped to the box — references that do not use the checkpoint.

With a 112-dim latent the mean has norm ≈ 0.3 and a sample ≈ 7–10, so ``mean`` and ``sample`` can
behave very differently; this script measures by how much.

Usage::

    python benchmarks/bench_dsrl_act_modes.py outputs/adapt/can_na_mc --env pickplace_can --policy can_diffusion \
        --episodes 20 --modes mean sample select32
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
from embodied_steer.dsrl.na import DSRLNA, NASettings, make_decoder  # noqa: E402
from embodied_steer.dsrl.networks import choose_latent  # noqa: E402
from embodied_steer.dsrl.wrapper import LatentNoiseEnv  # noqa: E402


def make_act(mode: str, agent: DSRLNA, env: LatentNoiseEnv, rng: np.random.Generator):
    dim = int(env.latent.latent_dim)
    if mode == "zero":
        return lambda x: torch.zeros(1, dim)
    if mode == "base":
        return lambda x: torch.as_tensor(env.action_space.draw(rng))[None]
    if mode == "mean":
        return lambda x: choose_latent(agent.actor, x)
    if mode == "sample":
        return lambda x: choose_latent(agent.actor, x, explore=True)
    if mode.startswith("select"):
        n = int(mode[len("select"):])
        return lambda x: choose_latent(agent.actor, x, agent.q_w, n)
    if mode.startswith("qa_select"):
        n = int(mode[len("qa_select"):])

        def by_action_critic(x: torch.Tensor) -> torch.Tensor:
            candidates = torch.cat([agent.actor.deterministic(x), agent.actor(x.repeat(n - 1, 1))[0]])
            obs = x.repeat(n, 1)
            q = agent.q_a(obs, agent.decode(obs, agent.latent.to_noise(candidates))).min(0).values
            return candidates[q.argmax()][None]

        return by_action_critic
    raise SystemExit(f"unknown mode {mode!r} (mean, sample, select<N>, qa_select<N>, zero, base)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a DSRL-NA run folder (outputs/adapt/<run>)")
    ap.add_argument("--env", default="lift")
    ap.add_argument("--policy", default="lift_diffusion")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--modes", nargs="+", default=["mean", "sample", "select32"])
    ap.add_argument("--seed", type=int, default=0, help="torch seed of the actor samples")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("act_modes")

    cfg = json.loads((args.run / "adapt_config.json").read_text())
    if cfg["algo"] != "dsrl_na":
        raise SystemExit(f"{args.run} is a {cfg['algo']} run; this script reads DSRL-NA checkpoints")
    c = compose("eval", [f"env={args.env}", f"policy={args.policy}"])
    base = instantiate_env(c.env, fast_render=True)
    policy = instantiate_policy(c.policy, base)
    env = LatentNoiseEnv(base, policy, bound=cfg["bound"], latent_mode=cfg["latent_mode"], latent_dim=cfg["latent_dim"],
                         gamma=cfg["gamma"], use_env_state=cfg["use_env_state"], projection_seed=cfg["seed"],
                         check_determinism=False)
    k = env.execute_steps
    chunk_dim = k * int(np.prod(env.env.action_space.shape))
    settings = NASettings(hidden=cfg["hidden"], n_critics=cfg["n_critics"], layernorm=cfg["na_layernorm"])
    agent = DSRLNA(env.features.dim, chunk_dim, env.latent, make_decoder(policy, env.features, k, env.instruction),
                   settings)
    agent.load(args.run / "checkpoint")
    results = {}
    for mode in args.modes:
        act = make_act(mode, agent, env, np.random.default_rng(args.seed))
        torch.manual_seed(args.seed)
        t0, wins = time.perf_counter(), []
        for i in range(args.episodes):
            obs, _ = env.reset(seed=cfg["eval_seed"] + i)
            done, ok = False, False
            while not done:
                with torch.no_grad():
                    w = act(torch.as_tensor(obs)[None])[0].numpy()
                obs, _, terminated, truncated, info = env.step(w)
                ok = ok or bool(info.get("is_success", False))
                done = terminated or truncated
            wins.append(ok)
        results[mode] = {"success": float(np.mean(wins)), "episodes": len(wins), "wall_s": time.perf_counter() - t0}
        log.info("%s: %d/%d (%.0f s)", mode, sum(wins), len(wins), results[mode]["wall_s"])
    env.close()
    print(f"| run | {' | '.join(args.modes)} |")
    print(f"|---|{'---:|' * len(args.modes)}")
    print(f"| {args.run.name} | " + " | ".join(f"{results[m]['success']:.2f}" for m in args.modes) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"run": str(args.run), "env": args.env, "results": results}, indent=2))


if __name__ == "__main__":
    main()
