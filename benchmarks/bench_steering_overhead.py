"""Overhead of activation steering: forward latency with N active interventions vs none, and the
memory / time cost of activation capture.

Models (random weights, CPU, one torch thread):

* a Llama token policy (``transformers.LlamaForCausalLM``, 8 layers, d_model 256, MLP 1024, vocab
  1024; OpenVLA's module names) — timed as one forward over a 128-token prompt ("prefill") and as a
  full ``act()`` (prefill + 7 KV-cache decoding steps, where per-call hook costs weigh most);
* the tiny PI0 of ``adapters/tiny.py`` with 4 VLM + 4 expert layers — timed as ``act()`` (one VLM
  prefix pass + 10 flow steps through the expert);
* as context, the same classes at the *widths of the released models* with one layer per tower (PI0 with
  Gemma-2B VLM and Gemma-300M expert layers; a Llama at Llama-2-7B / OpenVLA width): the hook cost
  per call does not depend on depth, so its share of a real-width layer is what users see.

Conditions are measured **side by side in one run** as adjacent pairs (one call without, one with
the hooks, ABBA order) and the median of the paired ratios is reported — on the thread's CPU time
(robust to other processes on a shared machine) and on wall time — together with the share of the
call's CPU time spent inside the steering hooks, which does not depend on the load. Hooks are
attached and removed between the timed calls (not timed).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_steering_overhead.py --json outputs/bench_steering.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embodied_steer.adapters.tiny_llama import TinyLlamaPolicy  # noqa: E402
from embodied_steer.core.types import Observation  # noqa: E402
from embodied_steer.steering import Gated, add, attach, clamp, rotate  # noqa: E402
from embodied_steer.steering.capture import capture  # noqa: E402


def neurons(n: int, width: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(width), n))


def clamp_set(policy, pattern: str, layers: int, n: int, *, positions="all"):
    names = sorted({k for k in policy.modules() if k.endswith(".mlp.down_proj") and k.startswith(pattern)},
                   key=lambda k: int(k.split(".")[-3]))
    out = []
    for i, name in enumerate(names[:layers]):
        width = policy.modules()[name].in_features
        out.append(clamp(name, neurons(min(n, width), width, i), 4.0, positions=positions))
    return out


def _timed_hooks(handle, spent: list[float]) -> None:
    """Wrap the handle's hook functions so that the CPU time spent inside them is added to ``spent[0]``
    (the handle registers one hook per module and hook type; each is wrapped once)."""
    tables = {}
    for site in handle.sites:
        table = site.module._forward_pre_hooks if site.pre else site.module._forward_hooks  # noqa: SLF001
        tables[id(table)] = table
    for table in tables.values():
        for key, fn in list(table.items()):
            def timed(*a, _fn=fn):
                c0 = time.thread_time()
                try:
                    return _fn(*a)
                finally:
                    spent[0] += time.thread_time() - c0
            table[key] = timed


def side_by_side(conditions: dict[str, list], run: Callable[[], None], policy, *, reps: int,
                 warmup: int = 3) -> dict[str, dict[str, float]]:
    """Paired, interleaved timing of each condition against no intervention.

    Every repetition visits the conditions in a shuffled order; for each it times one call without
    and one call with the condition's hooks, in ABBA order across repetitions (so a load trend
    cancels), and keeps the ratio of the pair — the two calls are adjacent in time and see the same
    load. Reported: the median of the paired ratios (CPU time of this thread — torch runs
    single-threaded on it here, so other processes competing for the cores matter much less — and
    wall time), and, independently of the load, the share of the call's CPU time spent *inside* the
    steering hooks (measured by wrapping them), which is the cost the intervention adds.
    """
    cpu: dict[str, list[float]] = {name: [] for name in conditions}
    wall: dict[str, list[float]] = {name: [] for name in conditions}
    share: dict[str, list[float]] = {name: [] for name in conditions}
    base_cpu: list[float] = []
    for _ in range(warmup):
        run()
    order = [n for n in conditions if n != "none"]
    rng = random.Random(0)

    def timed_call() -> tuple[float, float]:
        c0, t0 = time.thread_time(), time.perf_counter()
        run()
        return time.thread_time() - c0, time.perf_counter() - t0

    for rep in range(reps):
        rng.shuffle(order)
        for name in order:
            # an untimed call through wrapped hooks: warms the hooked path and measures the CPU
            # time spent inside the hooks (the wrappers' own cost stays out of the timed pair)
            handle = attach(policy, conditions[name])
            spent = [0.0]
            _timed_hooks(handle, spent)
            c0 = time.thread_time()
            run()
            share[name].append(spent[0] / (time.thread_time() - c0))
            handle.remove()
            pair = {}
            for steered in ((False, True) if rep % 2 == 0 else (True, False)):
                if steered:
                    handle = attach(policy, conditions[name])
                    pair[True] = timed_call()
                    handle.remove()
                else:
                    pair[False] = timed_call()
            cpu[name].append(pair[True][0] / pair[False][0])
            wall[name].append(pair[True][1] / pair[False][1])
            base_cpu.append(pair[False][0])
    rows = {"none": {"cpu_ms": 1e3 * statistics.median(base_cpu), "cpu_ratio": 1.0, "wall_ratio": 1.0,
                     "hook_share": 0.0, "pairs": len(base_cpu)}}
    for name in order:
        rows[name] = {"cpu_ratio": statistics.median(cpu[name]), "wall_ratio": statistics.median(wall[name]),
                      "hook_share": statistics.median(share[name]), "pairs": reps,
                      "cpu_ratio_iqr": [float(np.percentile(cpu[name], 25)), float(np.percentile(cpu[name], 75))]}
    return rows


def llama_benchmark(reps: int) -> dict:
    policy = TinyLlamaPolicy(layers=8, width=256, mlp=1024, heads=8, vocab=1024, num_bins=256, seed=0)
    ids = torch.randint(4, 700, (1, 128), generator=torch.Generator().manual_seed(0))
    obs = Observation(state=np.zeros(7, np.float32), instruction="pick up the black bowl and place it on the plate " * 2)
    g = torch.Generator().manual_seed(1)
    conditions = {
        "none": [],
        "clamp 1 neuron x 1 layer": clamp_set(policy, "llm.layers", 1, 1),
        "clamp 16 neurons x 8 layers": clamp_set(policy, "llm.layers", 8, 16),
        "clamp 64 neurons x 8 layers": clamp_set(policy, "llm.layers", 8, 64),
        "clamp 64 x 8, last position": clamp_set(policy, "llm.layers", 8, 64, positions="last"),
        "add vector x 8 layers": [add("llm.layers.*", torch.randn(256, generator=g), 1.0)],
        "rotate x 8 layers": [rotate("llm.layers.*", torch.randn(256, generator=g), torch.randn(256, generator=g), 0.3)],
    }

    def prefill():
        with torch.no_grad():
            policy.model(input_ids=ids)

    def act():
        policy.reset()
        policy.act(obs)

    return {"prefill (128 tokens)": side_by_side(conditions, prefill, policy, reps=2 * reps),
            "act (prefill + 7 decode steps)": side_by_side(conditions, act, policy, reps=reps)}


def pi0_benchmark(reps: int) -> dict:
    from embodied_steer.adapters import tiny

    with tempfile.TemporaryDirectory() as tmp:
        policy = tiny.tiny_pi0(tmp, chunk_size=16, n_action_steps=8, num_steps=10,
                               arch=tiny.TinyArchitecture(depth=4))
        obs = tiny.tiny_observation(seed=0)
        noise = policy.initial_noise(1, torch.Generator().manual_seed(0))
        conditions = {
            "none": [],
            "clamp 64 neurons x 8 layers (4 VLM + 4 expert)":
                clamp_set(policy, "vlm.layers", 4, 64) + clamp_set(policy, "expert.layers", 4, 64),
            "clamp 64 x 4 expert layers, steps 5-9":
                [clamp(c.modules, c.neurons, 4.0, steps=(5, 10)) for c in clamp_set(policy, "expert.layers", 4, 64)],
            # the floor: the same 8 hooks fire but do nothing (a phase gate that never opens) —
            # PyTorch's hook dispatch plus our gate test, and the timing noise of this machine
            "same 8 hooks, gate closed (floor)":
                [clamp(c.modules, c.neurons, Gated(4.0, "state[0] > 1e9"))
                 for c in clamp_set(policy, "vlm.layers", 4, 64) + clamp_set(policy, "expert.layers", 4, 64)],
        }

        def act():
            policy.act(obs, noise=noise)

        return {"act (1 prefix + 10 flow steps)": side_by_side(conditions, act, policy, reps=reps)}


# Real layer widths (context for the tiny-model ratios): the same architecture classes with the
# widths of the released models but one layer per tower, random init (a real-width layer takes tens
# of seconds to initialise on this CPU). The hooks cost the same per call whatever the depth, so
# what matters is the hook cost relative to a layer of real width.
REAL_PI0 = dict(vlm_width=2048, vlm_mlp_dim=16384, expert_width=1024, expert_mlp_dim=4096, depth=1, head_dim=256)


def real_width_benchmark(reps: int) -> dict:
    """PI0 with PaliGemma-2B (Gemma-2B: width 2048, MLP 16384) VLM layers and a Gemma-300M expert
    (width 1024, MLP 4096), and a Llama with Llama-2-7B / OpenVLA widths (4096, MLP 11008, 32
    heads); one layer per tower, random init, 64 clamped neurons in every layer; the tiny vision
    tower and vocabulary (1,024) of the test models, which makes the layers a larger share of the
    forward than in the released models."""
    from embodied_steer.adapters import tiny

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        policy = tiny.tiny_pi0(tmp, chunk_size=50, n_action_steps=50, num_steps=10,
                               arch=tiny.TinyArchitecture(**REAL_PI0))
        obs = tiny.tiny_observation(seed=0)
        noise = policy.initial_noise(1, torch.Generator().manual_seed(0))
        conditions = {
            "none": [],
            "clamp 64 neurons x 2 layers (1 VLM + 1 expert)":
                clamp_set(policy, "vlm.layers", 1, 64) + clamp_set(policy, "expert.layers", 1, 64),
        }

        def act():
            policy.act(obs, noise=noise)

        out["PI0, real widths (Gemma-2B VLM + Gemma-300M expert layer): act (1 prefix + 10 flow steps, chunk 50)"] = \
            side_by_side(conditions, act, policy, reps=reps, warmup=1)
        del policy
    policy = TinyLlamaPolicy(layers=1, width=4096, mlp=11008, heads=32, vocab=1024, num_bins=256, seed=0)
    obs = Observation(state=np.zeros(7, np.float32), instruction="pick up the black bowl and place it on the plate")
    conditions = {"none": [], "clamp 64 neurons x 1 layer": clamp_set(policy, "llm.layers", 1, 64)}

    def llama_act():
        policy.reset()
        policy.act(obs)

    out["Llama, 7B widths (4096, MLP 11008; 1 layer, vocab 1024): act (prefill + 7 decode steps)"] = \
        side_by_side(conditions, llama_act, policy, reps=reps, warmup=1)
    return out


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def capture_benchmark(calls: int) -> dict:
    policy = TinyLlamaPolicy(layers=8, width=256, mlp=1024, heads=8, vocab=1024, seed=0)
    obs = Observation(state=np.zeros(7, np.float32), instruction="pick up the black bowl and place it on the plate " * 2)
    for _ in range(3):
        policy.act(obs)
    t0 = time.perf_counter()
    for _ in range(calls):
        policy.act(obs)
    plain = (time.perf_counter() - t0) / calls
    rows = {}
    for label, modules, dtype in (("8 MLP inputs (d_ff 1024), float32", "llm.layers.*.mlp.down_proj", None),
                                  ("8 layer outputs (d 256), float16", "llm.layers.*", torch.float16)):
        with tempfile.TemporaryDirectory() as tmp:
            rss0 = rss_bytes()
            peak = rss0
            t0 = time.perf_counter()
            with capture(policy, modules, Path(tmp) / "acts", what="input" if "down_proj" in modules else "output",
                         dtype=dtype) as cap:
                for _ in range(calls):
                    cap.begin_call()
                    policy.act(obs)
                    peak = max(peak, rss_bytes())
            seconds = (time.perf_counter() - t0) / calls
            disk = sum(p.stat().st_size for p in (Path(tmp) / "acts").glob("*"))
            rows[label] = {
                "calls": calls, "entries": len(cap.entries), "shards": cap._shard,  # noqa: SLF001
                "written_MB": cap.bytes_written / 2**20, "disk_MB": disk / 2**20,
                "peak_buffer_MB": cap.peak_buffer_bytes / 2**20,
                "rss_growth_MB": (peak - rss0) / 2**20,
                "time_ratio": seconds / plain, "ms_per_call": 1e3 * seconds,
            }
    return rows


def table(title: str, rows: dict[str, dict[str, float]]) -> str:
    base = rows["none"]
    lines = [f"**{title}** (no intervention: {base['cpu_ms']:.1f} ms CPU per call, median of {base['pairs']})", "",
             "| condition | ratio vs none, CPU (median of pairs) | CPU ratio IQR | ratio vs none, wall | time inside hooks |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        if name == "none":
            continue
        lo, hi = r["cpu_ratio_iqr"]
        lines.append(f"| {name} | {r['cpu_ratio']:.3f}× | {lo:.3f}–{hi:.3f} | {r['wall_ratio']:.3f}× | "
                     f"{100 * r['hook_share']:.2f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=40, help="paired repetitions per condition")
    parser.add_argument("--capture-calls", type=int, default=20, help="0: skip the capture measurement")
    parser.add_argument("--real-width-reps", type=int, default=12,
                        help="paired repetitions for the real-width models (0: skip them)")
    parser.add_argument("--models", nargs="+", choices=("llama", "pi0", "real_width"),
                        default=["llama", "pi0", "real_width"], help="which models to time")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "load_avg_start": os.getloadavg()}}
    results["llama"] = llama_benchmark(args.reps) if "llama" in args.models else {}
    results["pi0"] = pi0_benchmark(args.reps) if "pi0" in args.models else {}
    results["real_width"] = (real_width_benchmark(args.real_width_reps)
                             if args.real_width_reps > 0 and "real_width" in args.models else {})
    results["capture"] = capture_benchmark(args.capture_calls) if args.capture_calls > 0 else {}
    results["machine"]["load_avg_end"] = os.getloadavg()
    for model in ("llama", "pi0", "real_width"):
        for title, rows in results[model].items():
            print(table(f"{model}: {title}", rows))
            print()
    if results["capture"]:
        print("| capture | calls | MB written | disk MB | peak buffer MB | RSS growth MB | time ratio |")
        print("|---|---|---|---|---|---|---|")
    for label, r in results["capture"].items():
        print(f"| {label} | {r['calls']} | {r['written_MB']:.1f} | {r['disk_MB']:.1f} | {r['peak_buffer_MB']:.2f} | "
              f"{r['rss_growth_MB']:.1f} | {r['time_ratio']:.2f}× |")
    print(f"\nload average start {results['machine']['load_avg_start']}, end {results['machine']['load_avg_end']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
