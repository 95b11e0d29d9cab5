"""The ROS 2 loop, measured: latency, watchdog reaction, success through ROS vs in-process, fuzzing.

Runs everything on loopback (Fast DDS UDP profile restricted to ``lo``) in its own ROS domain:

1. **In-process baseline**: the shipped ``lift_diffusion`` policy on robosuite Lift for
   ``--episodes`` episodes (seeds ``--seed`` …), the same loop as ``embodied-steer eval``.
2. **Through ROS**: ``launch/sim_loop.launch.xml`` read statically, its nodes (simulated arm in
   lockstep, policy server) started as processes from the installed ament layout, same seeds; a probe
   measures observation-message -> command-message latency meanwhile.
3. **Safety**: a fresh loop; ``--watchdog-trials`` times the simulated arm is frozen (SIGSTOP) and the
   time from its last observation to the policy server's first hold command is measured; then
   ``--fuzz`` hostile messages are sent and every command is checked against the limits.

Writes ``--json`` (raw numbers) and ``--figure`` (latency histogram, success comparison) and prints a
markdown summary::

    .venv/bin/python benchmarks/bench_ros_loop.py --episodes 20 --json outputs/bench_ros_loop.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from embodied_steer.ros.probe import limit_args  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIMITS = limit_args(str(ROOT / "launch" / "config" / "policy_server_sim.yaml"))


def in_process(episodes: int, seed: int) -> list[dict]:
    import torch

    from embodied_steer.cli import compose, instantiate_env, instantiate_policy
    from embodied_steer.eval.runner import run_episode

    torch.set_num_threads(1)
    cfg = compose("eval", ["env=lift", "policy=lift_diffusion"])
    env = instantiate_env(cfg.env)
    policy = instantiate_policy(cfg.policy, env)
    out = []
    for i in range(episodes):
        r = run_episode(env, policy, episode=i, seed=seed + i)
        out.append({"episode": i, "seed": seed + i, "success": r.success, "steps": r.steps, "seconds": r.seconds})
        print(f"in-process episode {i}: success={r.success} steps={r.steps}", flush=True)
    env.close()
    return out


def start_loop(tmp: Path, domain: int, episodes: int, seed: int, server_params: dict | None = None):
    from embodied_steer.ros.layout import install, plan_launch
    from embodied_steer.ros.netenv import loopback_env
    from embodied_steer.ros.processes import NodeProcess

    env = loopback_env(tmp, domain)
    prefix = install(tmp / "install")
    planned = plan_launch(ROOT / "launch" / "sim_loop.launch.xml", [prefix],
                          {"episodes": str(episodes), "seed": str(seed), "record": "false"})
    nodes = {n.name: NodeProcess(n.name, n.argv(server_params if n.name == "policy_server" else None), env,
                                 cwd=str(tmp)) for n in planned}
    for n in nodes.values():
        n.wait_for("READY", timeout=300)
    return env, nodes


def probe(env, *args: str, timeout: float = 600.0):
    from embodied_steer.ros.processes import NodeProcess

    return NodeProcess("probe", [sys.executable, "-m", "embodied_steer.ros.probe", *args, "--timeout",
                                 str(timeout)], env)


def result_of(proc, timeout: float) -> dict:
    line = proc.wait_for("RESULT", timeout=timeout)
    proc.stop()
    return json.loads(line[len("RESULT "):])


def through_ros(tmp: Path, episodes: int, seed: int, latency_count: int,
                server_params: dict | None = None) -> tuple[list[dict], dict, str]:
    env, nodes = start_loop(tmp, 61, episodes, seed, server_params)
    try:
        lat_proc = probe(env, "--mode", "latency", "--count", str(latency_count), *LIMITS)
        nodes["sim_arm"].wait_for("DONE", timeout=3600)
        lat = result_of(lat_proc, 60)
        eps = [json.loads(line[len("EPISODE "):]) for line in nodes["sim_arm"].find("EPISODE")]
    finally:
        for n in nodes.values():
            n.stop()
    stats = nodes["policy_server"].find("STATS")
    return eps, lat, stats[0] if stats else ""


def safety(tmp: Path, trials: int, fuzz: int) -> tuple[list[float], dict, str]:
    env, nodes = start_loop(tmp, 62, 0, 5000)
    reactions = []
    try:
        for _ in range(trials):
            p = probe(env, "--mode", "watchdog", "--count", "20")
            p.wait_for("WATCHING", timeout=120)
            nodes["sim_arm"].signal(signal.SIGSTOP)
            try:
                r = result_of(p, 60)
            finally:
                nodes["sim_arm"].signal(signal.SIGCONT)
            reactions.append(r["reaction_s"])
            print(f"watchdog reaction {r['reaction_s']:.3f} s", flush=True)
        fz = result_of(probe(env, "--mode", "fuzz", "--count", str(fuzz), "--rate", "500", *LIMITS), 600)
        alive = all(n.alive() for n in nodes.values())
        fz["nodes_alive_after"] = alive
    finally:
        for n in nodes.values():
            n.stop()
    stats = nodes["policy_server"].find("STATS")
    return reactions, fz, stats[0] if stats else ""


def figure(path: Path, lat_ms: list[float], inproc: list[dict], ros: list[dict], reactions: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    lat = np.asarray(lat_ms)
    axes[0].hist(lat, bins=np.logspace(np.log10(max(lat.min(), 0.1)), np.log10(lat.max() + 1), 40))
    axes[0].set_xscale("log")
    for q, ls in ((50, "--"), (99, ":")):
        axes[0].axvline(np.percentile(lat, q), color="k", ls=ls, label=f"p{q} {np.percentile(lat, q):.1f} ms")
    axes[0].set_xlabel("observation msg -> command msg (ms)")
    axes[0].set_ylabel("commands")
    axes[0].legend()
    rates = [np.mean([e["success"] for e in inproc]), np.mean([e["success"] for e in ros])]
    axes[1].bar(["in-process", "through ROS"], rates, color=["tab:gray", "tab:blue"])
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel(f"success rate ({len(ros)} episodes)")
    axes[2].plot(range(1, len(reactions) + 1), reactions, "o")
    axes[2].axhline(0.5, color="k", ls="--", label="obs_timeout_s")
    axes[2].set_xlabel("trial")
    axes[2].set_ylabel("watchdog reaction (s)")
    axes[2].legend()
    fig.suptitle("embodied_steer ROS 2 loop (lift_diffusion on robosuite Lift, loopback)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--latency-count", type=int, default=1000)
    ap.add_argument("--watchdog-trials", type=int, default=10)
    ap.add_argument("--fuzz", type=int, default=1000)
    ap.add_argument("--json", default="outputs/bench_ros_loop.json")
    ap.add_argument("--figure", default="benchmarks/figures/ros_loop.png")
    ap.add_argument("--skip-in-process", action="store_true")
    ap.add_argument("--in-process-from", help="reuse the in-process episodes of an earlier --json file")
    ap.add_argument("--skip-safety", action="store_true")
    ap.add_argument("--server-param", action="append", default=[], metavar="NAME:=VALUE",
                    help="extra policy-server parameter for the ROS episodes (e.g. workspace_low:=[-1,-1,0.0])")
    args = ap.parse_args()

    partial = Path(args.json).with_suffix(".partial.json")
    partial.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.in_process_from:
        inproc = json.loads(Path(args.in_process_from).read_text())["in_process"][: args.episodes]
    else:
        inproc = [] if args.skip_in_process else in_process(args.episodes, args.seed)
    server_params = dict(p.split(":=", 1) for p in args.server_param)
    partial.write_text(json.dumps({"in_process": inproc}))
    t1 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_ros_") as tmp:
        ros, lat, ros_stats = through_ros(Path(tmp) / "loop", args.episodes, args.seed, args.latency_count,
                                          server_params)
        partial.write_text(json.dumps({"in_process": inproc, "ros": ros, "latency": lat, "ros_server_stats": ros_stats}))
        t2 = time.time()
        if args.skip_safety:
            reactions, fz, safety_stats = [], {}, ""
        else:
            reactions, fz, safety_stats = safety(Path(tmp) / "safety", args.watchdog_trials, args.fuzz)
    t3 = time.time()
    same = sum(a["success"] == b["success"] for a, b in zip(inproc, ros))
    identical = sum((a["success"], a["steps"]) == (b["success"], b["steps"]) for a, b in zip(inproc, ros))
    out = {"args": vars(args), "in_process": inproc, "ros": ros, "latency": lat, "ros_server_stats": ros_stats,
           "watchdog_reaction_s": reactions, "fuzz": fz, "safety_server_stats": safety_stats,
           "agreeing_episodes": same, "identical_episodes": identical, "seconds": {"in_process": t1 - t0, "ros": t2 - t1, "safety": t3 - t2}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    if inproc and reactions:
        figure(Path(args.figure), lat["latencies_ms"], inproc, ros, reactions)
    r = np.asarray(reactions)
    print("\n| measure | value |\n|---|---|")
    print(f"| latency obs msg -> command msg, p50 / p99 / max (n={lat['n']}) | "
          f"{lat['p50_ms']:.1f} / {lat['p99_ms']:.1f} / {lat['max_ms']:.1f} ms |")
    print(f"| success in-process | {sum(e['success'] for e in inproc)}/{len(inproc)} |")
    print(f"| success through ROS | {sum(e['success'] for e in ros)}/{len(ros)} |")
    print(f"| episodes with the same outcome | {same}/{min(len(inproc), len(ros))} |")
    print(f"| episodes with the same outcome and length (steps) | {identical}/{min(len(inproc), len(ros))} |")
    if not reactions:
        print(f"| episodes | {len(ros)} |\n\nserver stats (ROS episodes): {ros_stats}")
        return 0
    print(f"| watchdog reaction (obs_timeout_s = 0.5), mean / max over {r.size} | {r.mean():.3f} / {r.max():.3f} s |")
    print(f"| hostile messages sent / unsafe commands / non-finite commands | {fz['sent']} / {fz['unsafe']} / "
          f"{fz['nonfinite']} |")
    print(f"| commands checked during fuzzing / unverifiable | {fz['commands_checked']} / {fz['unmatched_motion']} |")
    print(f"| nodes alive after fuzzing, loop still commanding | {fz['nodes_alive_after']}, {fz['loop_alive_after']} |")
    print(f"\nserver stats (ROS episodes): {ros_stats}\nserver stats (safety run): {safety_stats}")
    print(f"wall time: in-process {t1 - t0:.0f} s, ROS {t2 - t1:.0f} s, safety {t3 - t2:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
