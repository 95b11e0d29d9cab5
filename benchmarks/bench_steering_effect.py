"""Measured effect of neuron steering on the shipped small token VLA, in closed-loop robosuite Lift.

Method, end to end (the mechanistic-steering recipe for VLAs; results in ``benchmarks/RESULTS.md``):

1. **Discovery by vocabulary projection** (steer-api's ``search_neurons``): every MLP neuron's value
   vector (a column of ``llm.layers.{i}.mlp.down_proj.weight``) is projected onto the unembedding
   through the final RMSNorm gain; the top ``--k`` neurons over all layers that promote a concept
   form the steered set. Concepts (see :func:`concept_neurons`): ``up`` / ``fast`` (the word against
   the other words of its plan slot, the default), ``up_plain`` (plain z-score of ``up``),
   ``up_bins`` (upward against downward z action bins).
2. **Interventions** (steer-api, at the down-projection input, ``--positions``): a static clamp at
   each of ``--coefs``, and a closed-loop PID coefficient on end-effector height (``up``) or speed
   (``fast``).
3. **Controls:** the same number of neurons per layer drawn at random (``--random-draws`` draws),
   clamped at ``--random-coefs``.
4. **Measurement** in closed-loop simulation: seeded Lift episodes (the same seeds in every setting,
   so differences are paired), ``terminate_on_success=false`` and ``--max-steps`` steps so that
   every episode covers the same time window. Per episode: mean / max end-effector height (m),
   mean upward velocity and speed (m/s), steps to success, the fraction of steps whose plan word
   is ``up``, task success (cube lifted at any step). Plus an open-loop probe per static setting:
   greedy predictions on 64 fixed held-out observations (``tests/data/lift_observations.npz``).

Episodes of one setting run in lockstep (``--env-batch``), one batched policy call per step (two
for a phase gate: the rows it opens and the others); a PID coefficient is per episode, so those
settings run one episode at a time.

Output: ``<out>/episodes.jsonl`` (one row per setting × episode; reruns resume), ``<out>/table.md``,
``<out>/summary.json``, ``<out>/neurons.yaml`` (the clusters, steer-api's file format),
``<out>/hits.json`` and ``<out>/steering_effect.png``.

Variants (names get a suffix, so they can share an output folder and its baseline): ``--layers``
keeps only the discovered neurons of some layers (the random controls follow), ``--positions``
(``prefix_last``: only the position that predicts the first plan word), ``--kind scale``
(multiply instead of overwrite), ``--gate`` (a task-phase gate: the intervention is on only while
conditions on the observation hold, e.g. once the fingers have closed on the cube).

    .venv/bin/python benchmarks/bench_steering_effect.py --episodes 30 --out outputs/bench_steering
    .venv/bin/python benchmarks/bench_steering_effect.py --only "clamp up" --episodes 5   # a subset
    .venv/bin/python benchmarks/bench_steering_effect.py --episodes 30 --out outputs/bench_steering_v2 \
        --concepts up --layers 3 --positions prefix_last --coefs 6 --random-draws 3 --random-coefs 6 \
        --pid-concepts --gate "state[7]<0.032" "norm(env_state[7:10])<0.02"
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

from embodied_steer.adapters.token_vla import TokenVLAPolicy, decode  # noqa: E402
from embodied_steer.eval.stats import mean_interval, wilson_interval  # noqa: E402

CONTROL_HZ = 20


# ----------------------------------------------------------------------------------- discovery
CONTRASTS = {"up": ("up", ("down", "hold")), "fast": ("fast", ("slow",))}


def concept_neurons(policy: TokenVLAPolicy, concept: str, k: int):
    """Top-``k`` neurons (over all layers) whose value vectors promote ``concept`` (steer-api's
    :func:`~embodied_steer.steering.discovery.search_neurons`, logit lens through the final norm).

    ``concept``:

    * ``up`` / ``fast`` — the word *against* its alternatives at the same plan slot (``up`` vs
      ``down``, ``hold``; ``fast`` vs ``slow``): the basis is the one vector
      ``U[word] - mean(U[alternatives])``, so a neuron scores high when it makes ``up`` more likely
      *than the other motion words*, not merely any motion word.
    * ``up_plain`` — the plain z-score of the token ``up`` over the vocabulary (``relative="zscore"``).
      Measured on the shipped model: its top neurons promote all three motion words alike (top
      tokens ``up, hold, down``), which is why the contrast above is the default.
    * ``up_bins`` — action-bin tokens meaning an upward z delta (> +0.1) against those meaning a
      downward one (< -0.1).
    """
    from embodied_steer.steering.discovery import hits_to_cluster, search_neurons

    strings = policy.token_strings()
    u = policy.unembedding.detach()
    if concept in CONTRASTS:
        word, others = CONTRASTS[concept]
        t = policy.tokenizer.token_id
        basis = (u[t(word)] - torch.stack([u[t(o)] for o in others]).mean(0))[None]
    elif concept == "up_bins":
        up, down = policy.upward_bin_ids()
        basis = (u[up].mean(0) - u[down].mean(0))[None]
    elif concept == "up_plain":
        hits = search_neurons(policy, ["up"], "llm.layers.*.mlp", k=k, token_strings=strings,
                              relative="zscore", gain=policy.final_norm_gain)
        return hits_to_cluster(hits), hits
    else:
        raise ValueError(f"unknown concept '{concept}' (up, fast, up_plain, up_bins)")
    hits = search_neurons(policy, [0], "llm.layers.*.mlp", k=k, basis=basis, relative=None,
                          gain=policy.final_norm_gain)
    # what each hit promotes on the real vocabulary, for the report
    tops = top_tokens_of(policy, hits, strings)
    for h in hits:
        h.top_tokens = tops[(h.module, h.neuron)]
    return hits_to_cluster(hits), hits


def top_tokens_of(policy: TokenVLAPolicy, hits, strings: list[str], n: int = 5) -> dict[tuple[str, int], list]:
    from embodied_steer.steering.discovery import top_tokens

    out = {}
    for module in sorted({h.module for h in hits}):
        wanted = sorted({h.neuron for h in hits if h.module == module})
        rows = top_tokens(policy, module, k=n, neurons=wanted, token_strings=strings, gain=policy.final_norm_gain)
        for neuron, row in zip(wanted, next(iter(rows.values()))):
            out[(module, neuron)] = row
    return out


# ----------------------------------------------------------------------------------- episodes
def run_batch(envs, policy: TokenVLAPolicy, seeds: list[int], max_steps: int, handle=None) -> list[dict[str, Any]]:
    """Run ``len(seeds)`` episodes in lockstep, one batched (greedy) policy call per step.

    Same decoding as ``policy.act`` (plan words sampled, action bins greedy) on a batch: with static
    coefficients every row sees the same intervention. A phase gate over a fixed value
    (:func:`row_gates`) is evaluated per row: the rows whose own observation opens the gate are
    decoded in one call with the intervention on, the others in a second call with it off — what
    each episode would see alone. Any other closed-loop coefficient (PID, schedule) is per episode,
    so it needs a batch of one (``handle.begin_call`` gets that episode's observation).
    """
    from embodied_steer.sim.base import to_observation

    gates = row_gates(handle)
    if handle is not None and len(seeds) > 1 and gates is None and not handle_is_static(handle):
        raise ValueError("closed-loop coefficients need one episode per batch")
    dt = 1.0 / CONTROL_HZ
    instruction = envs[0].instruction
    obs = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)]
    pos = [[np.asarray(o["state"][:3], np.float64)] for o in obs]
    success = [False] * len(seeds)
    first = [None] * len(seeds)
    coefs, on, up_words = [], np.zeros(len(seeds)), np.zeros(len(seeds))
    up_id = policy.tokenizer.token_id("up")
    gen = torch.Generator().manual_seed(int(seeds[0]))  # plan words are sampled, as in policy.act
    for t in range(max_steps):
        rows_on = np.ones(len(seeds), bool) if handle is not None else np.zeros(len(seeds), bool)
        if gates is not None:
            views = [to_observation(o, instruction, t * dt) for o in obs]
            rows_on = np.array([all(c(v) for g in gates for c in g.conditions) for v in views])
            coefs.append(float(np.mean([g.inner.value for g in gates])))
        elif handle is not None:
            values = handle.begin_call(to_observation(obs[0], instruction, t * dt))
            coefs.append(float(np.mean(list(values.values()))))
            rows_on[:] = any(c.active for c in handle.coefficients())
        on += rows_on
        x = torch.as_tensor(np.stack([np.concatenate([o["state"], o["env_state"]]) for o in obs]).astype(np.float32))
        bins = torch.zeros(len(seeds), policy.model.config.action_dim, dtype=torch.long)
        groups = [rows_on, ~rows_on] if gates is not None else [np.ones(len(seeds), bool)]
        for active, rows in zip((True, False), groups):
            if not rows.any():
                continue
            for g in gates or ():
                g.active = active
            out = decode(policy.model, policy.tokenizer, x[torch.as_tensor(rows)], instruction, temperature=0.0,
                         plan_temperature=policy.plan_temperature, generator=gen)
            up_words[rows] += (out["plan"][:, 0] == up_id).numpy()
            bins[torch.as_tensor(rows)] = out["bins"]
        actions = policy.tokenizer.from_bins(bins.numpy())
        for i, env in enumerate(envs[: len(seeds)]):
            obs[i], _, _, _, info = env.step(actions[i])
            pos[i].append(np.asarray(obs[i]["state"][:3], np.float64))
            if info.get("is_success") and not success[i]:
                success[i], first[i] = True, t + 1
    rows = []
    for i, seed in enumerate(seeds):
        p = np.stack(pos[i])
        rows.append({"seed": seed, "success": success[i], "first_success_step": first[i], "steps": max_steps,
                     "mean_coefficient": float(np.mean(coefs)) if coefs else 0.0,
                     "active_fraction": float(on[i] / max_steps),
                     "up_word_fraction": float(up_words[i] / max_steps), **episode_metrics(p[:, 2], p)})
    return rows


def handle_is_static(handle) -> bool:
    from embodied_steer.steering.coefficients import Fixed

    return all(isinstance(c, Fixed) for c in handle.coefficients())


def row_gates(handle) -> list | None:
    """The handle's coefficients when every one is a memoryless phase gate over a fixed value
    (``Gated(Fixed, conditions)`` without latch): such a gate can be evaluated per row of a batch.
    ``None`` otherwise."""
    from embodied_steer.steering.coefficients import Fixed, Gated, StateNorm, StateValue

    if handle is None:
        return None
    coefficients = handle.coefficients()
    if coefficients and all(isinstance(c, Gated) and isinstance(c.inner, Fixed) and not c.latch
                            and all(isinstance(d.measure, (StateValue, StateNorm)) for d in c.conditions)
                            for c in coefficients):
        return coefficients
    return None


def episode_metrics(zs: np.ndarray, pos: np.ndarray) -> dict[str, float]:
    vel = np.diff(pos, axis=0) * CONTROL_HZ
    return {
        "mean_z": float(zs.mean()), "max_z": float(zs.max()),
        "mean_up_velocity": float(vel[:, 2].mean()) if len(vel) else 0.0,
        "mean_speed": float(np.linalg.norm(vel, axis=1).mean()) if len(vel) else 0.0,
    }


def run_setting(envs, policy, setting: dict[str, Any], seeds: list[int], max_steps: int,
                done: set[tuple[str, int]], sink) -> None:
    from embodied_steer.steering import attach

    name = setting["name"]
    todo = [s for s in seeds if (name, s) not in done]
    if not todo:
        return
    handle = attach(policy, setting["interventions"]) if setting.get("interventions") else None
    try:
        per_episode = handle is not None and not handle_is_static(handle) and row_gates(handle) is None
        batch = 1 if per_episode else len(envs)
        for b in range(0, len(todo), batch):
            t0 = time.perf_counter()
            rows = run_batch(envs[:batch], policy, todo[b : b + batch], max_steps, handle)
            for row in rows:
                sink({"setting": name, "group": setting["group"], "coefficient": setting.get("coefficient"),
                      "seconds": round((time.perf_counter() - t0) / len(rows), 2), **row})
    finally:
        if handle is not None:
            handle.remove()


def open_loop(policy: TokenVLAPolicy, setting: dict[str, Any]) -> dict[str, float] | None:
    """Greedy predictions on 64 fixed held-out observations (``tests/data/lift_observations.npz``):
    mean predicted z action (env units), mean P(up) and P(fast) at the plan slots. ``None`` for
    closed-loop coefficients (they have no value without an episode)."""
    from embodied_steer.steering import attach

    path = Path(__file__).resolve().parents[1] / "tests" / "data" / "lift_observations.npz"
    if not path.is_file():
        return None
    data = np.load(path)
    x = torch.as_tensor(np.concatenate([data["state"], data["env_state"]], axis=1))
    handle = attach(policy, setting["interventions"]) if setting.get("interventions") else None
    try:
        if handle is not None and not handle_is_static(handle):
            return None
        out = decode(policy.model, policy.tokenizer, x, "lift the red cube", return_logits=True)
    finally:
        if handle is not None:
            handle.remove()
    z = policy.tokenizer.from_bins(out["bins"].numpy())[:, 2]
    return {"pred_z": float(z.mean()), "p_up": float(torch.softmax(out["logits"][0], -1)[:, 0].mean()),
            "p_fast": float(torch.softmax(out["logits"][1], -1)[:, 0].mean())}


# ----------------------------------------------------------------------------------- reporting
def summarise(rows: list[dict[str, Any]], order: list[str], probes: dict[str, Any] | None = None) -> list[dict[str, Any]]:
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
        entry["up_word"] = float(np.mean([eps[s].get("up_word_fraction", np.nan) for s in seeds]))
        entry["steered"] = float(np.mean([eps[s].get("active_fraction", 1.0 if eps[s]["group"] != "baseline" else 0.0)
                                          for s in seeds]))
        firsts = [eps[s]["first_success_step"] for s in seeds if eps[s]["first_success_step"]]
        entry["first_success_step"] = float(np.mean(firsts)) if firsts else float("nan")
        entry["open_loop"] = (probes or {}).get(name)
        for metric in ("mean_z", "max_z", "mean_up_velocity", "mean_speed"):
            entry[metric] = mean_interval([eps[s][metric] for s in seeds])
            paired = [eps[s][metric] - base[s][metric] for s in seeds if s in base]
            entry["d_" + metric] = mean_interval(paired) if name != "baseline" else (0.0, 0.0, 0.0)
        out.append(entry)
    return out


def table(summary: list[dict[str, Any]]) -> str:
    head = ("| setting | n | mean coef | open loop: pred. z / P(up) / P(fast) | success (95% CI) | steps to success "
            "| steps saying 'up' | steps steered | mean EE z, m | Δ mean z vs baseline, cm (95% CI) | Δ max z, cm (95% CI) "
            "| Δ mean upward vel., cm/s (95% CI) | Δ mean speed, cm/s (95% CI) |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]

    def d(e, m, scale=100.0):
        mu, lo, hi = e["d_" + m]
        return f"{mu * scale:+.1f} ({lo * scale:+.1f} … {hi * scale:+.1f})"

    for e in summary:
        lo, hi = e["success_ci"]
        o = e.get("open_loop")
        ol = f"{o['pred_z']:+.2f} / {o['p_up']:.2f} / {o['p_fast']:.2f}" if o else "–"
        lines.append(f"| {e['setting']} | {e['n']} | {e['coef']:.2f} | {ol} | {e['success']:.2f} ({lo:.2f}–{hi:.2f}) | "
                     f"{e['first_success_step']:.1f} | {e['up_word']:.2f} | {e['steered']:.2f} | "
                     f"{e['mean_z'][0]:.3f} | {d(e, 'mean_z')} | {d(e, 'max_z')} | {d(e, 'mean_up_velocity')} | "
                     f"{d(e, 'mean_speed')} |")
    return "\n".join(lines)


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"baseline": "0.4", "repeat": "0.6", "concept": "tab:red", "random": "tab:blue", "pid": "tab:green"}
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
def variant_suffix(args) -> str:
    """Name suffix for a non-default variant (other positions, a phase gate), so that variants can
    share one output folder and one baseline."""
    parts = []
    if args.layers is not None:
        parts.append("L" + ",".join(str(i) for i in args.layers))
    if args.positions != "all":
        parts.append(f"pos={args.positions}")
    if args.gate:
        parts.append("gated")
    return f" [{', '.join(parts)}]" if parts else ""


def build_settings(policy, args) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from embodied_steer.steering import PID, Gated, Intervention
    from embodied_steer.steering.addressing import layer_index
    from embodied_steer.steering.discovery import random_neurons

    where = {"positions": args.positions}
    kind = args.kind
    suffix = variant_suffix(args)
    coef_label = "x" if kind == "scale" else "c="

    def coefficient(c):
        return Gated(c, args.gate) if args.gate else c  # a fresh source per setting

    settings: list[dict[str, Any]] = [{"name": "baseline", "group": "baseline"}]
    clusters: dict[str, Any] = {}
    report: dict[str, Any] = {}
    for concept in args.concepts:
        selection, hits = concept_neurons(policy, concept, args.k)
        if args.layers is not None:  # keep the discovered neurons of these layers only
            selection = {m: n for m, n in selection.items() if layer_index(m) in set(args.layers)}
            if not selection:
                raise SystemExit(f"none of the top-{args.k} '{concept}' neurons is in layers {args.layers}")
        clusters[concept] = selection
        report[concept] = [{"module": h.module, "neuron": h.neuron, "score": round(h.score, 3),
                            "top_tokens": [t for t, _ in h.top_tokens]} for h in hits]
        for c in args.coefs:
            settings.append({"name": f"{kind} {concept} {coef_label}{c:g}{suffix}", "group": "concept", "coefficient": c,
                             "interventions": [Intervention(kind, None, neurons=selection, coefficient=coefficient(c),
                                                            **where)]})
        for draw in range(args.random_draws):
            rand = random_neurons(policy, selection, seed=draw)
            clusters[f"random_{concept}_{draw}"] = rand
            label = "" if kind == "clamp" else f"{kind} "  # the clamp controls keep their original names
            for c in args.random_coefs if args.random_coefs is not None else args.coefs:
                settings.append({"name": f"random#{draw} ({concept}-sized) {label}{coef_label}{c:g}{suffix}",
                                 "group": "random", "coefficient": c,
                                 "interventions": [Intervention(kind, None, neurons=rand, coefficient=coefficient(c),
                                                                **where)]})
        if concept in args.pid_concepts:
            # closed loop: height for the "up" neurons, speed for the "fast" ones
            speed = concept == "fast"
            target = args.pid_speed_target if speed else args.pid_target
            pid = PID("speed(state[0:3])" if speed else "state[2]", target, kp=args.pid_kp, ki=args.pid_ki,
                      limits=(0.0, args.pid_max if args.pid_max is not None else max(args.coefs)), sign=1.0)
            label = f"speed*={target:g}m/s" if speed else f"z*={target:g}m"
            settings.append({"name": f"PID {concept} {label}{suffix}", "group": "pid", "coefficient": None,
                             "interventions": [Intervention(kind, None, neurons=selection,
                                                            coefficient=coefficient(pid), **where)]})
    return settings, {"clusters": clusters, "hits": report}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(Path(__file__).resolve().parents[1] / "checkpoints" / "lift_token_vla"))
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--env-batch", type=int, default=30, help="episodes run in lockstep (one batched policy call)")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--concepts", nargs="+", default=["up", "fast"])
    p.add_argument("--positions", default="all", help="token positions the clamp acts on: all | prefix | last | prefix_last")
    p.add_argument("--layers", type=int, nargs="*", default=None,
                   help="keep only the discovered neurons in these layers (the random controls follow)")
    p.add_argument("--kind", choices=("clamp", "scale"), default="clamp",
                   help="neuron intervention: clamp (overwrite with c) or scale (multiply by c)")
    p.add_argument("--gate", nargs="*", default=None,
                   help="apply the interventions only while these conditions on the observation hold, e.g. "
                        "'state[7]<0.032' 'norm(env_state[7:10])<0.02' (fingers closed on the cube; "
                        "open 0.039 m, closed 0.022-0.030 m depending on the cube size); "
                        "evaluated per episode (per row of the lockstep batch)")
    p.add_argument("--coefs", type=float, nargs="+", default=[1.0, 2.0, 2.5, 3.0])
    p.add_argument("--random-draws", type=int, default=3)
    p.add_argument("--random-coefs", type=float, nargs="*", default=[2.0, 3.0])
    p.add_argument("--pid-concepts", nargs="*", default=["up", "fast"])
    p.add_argument("--pid-target", type=float, default=0.95, help="EE height set point (m) for the 'up' PID")
    p.add_argument("--pid-speed-target", type=float, default=0.3, help="EE speed set point (m/s) for the 'fast' PID")
    p.add_argument("--pid-kp", type=float, default=10.0)
    p.add_argument("--pid-ki", type=float, default=20.0)
    p.add_argument("--pid-max", type=float, default=None)
    p.add_argument("--only", nargs="*", default=None, help="run only settings whose name contains one of these")
    p.add_argument("--out", default="outputs/bench_steering")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    from embodied_steer.cli import compose, instantiate_env
    from embodied_steer.steering.discovery import save_clusters

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy = TokenVLAPolicy.from_pretrained(args.checkpoint, name="lift_token_vla")
    settings, discovered = build_settings(policy, args)
    save_clusters(out / "neurons.yaml", discovered["clusters"], merge=False)
    (out / "hits.json").write_text(json.dumps(discovered["hits"], indent=1))
    (out / "args.json").write_text(json.dumps(vars(args), indent=1))
    env_cfg = compose("eval", ["env=lift", "env.terminate_on_success=false"]).env
    envs = [instantiate_env(env_cfg) for _ in range(min(args.env_batch, args.episodes))]
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
        run_setting(envs, policy, setting, seeds, args.max_steps, done, sink)
        n = [r for r in rows if r["setting"] == setting["name"]]
        print(f"{setting['name']:<34} {len(n)} episodes, success {np.mean([r['success'] for r in n]):.2f}, "
              f"mean z {np.mean([r['mean_z'] for r in n]):.3f}, 'up' said {np.mean([r['up_word_fraction'] for r in n]):.2f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    for env in envs:
        env.close()
    order = [s["name"] for s in settings]
    order += sorted({r["setting"] for r in rows} - set(order))  # e.g. a repeat of the baseline
    ran = {r["setting"] for r in rows}
    probes = {s["name"]: open_loop(policy, s) for s in settings if s["name"] in ran}
    summary = summarise(rows, order, probes)
    text = table(summary)
    (out / "table.md").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(summary, out / "steering_effect.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
