"""Overhead of activation steering: forward latency with N active interventions vs none, and the
memory / time cost of activation capture.

Models (random weights, CPU, one torch thread):

* a Llama token policy (``transformers.LlamaForCausalLM``, 8 layers, d_model 256, MLP 1024, vocab
  1024; OpenVLA's module names) — timed as one forward over a 128-token prompt ("prefill") and as a
  full ``act()`` (prefill + 7 KV-cache decoding steps, where per-call hook costs weigh most);
* the tiny PI0 of ``adapters/tiny.py`` with 4 VLM + 4 expert layers — timed as ``act()`` (one VLM
  prefix pass + 10 flow steps through the expert).

Conditions are measured **side by side in one run**: every repetition runs every condition once, in
a shuffled order, so that load changes on the machine hit all conditions alike; the ratio is
median(condition) / median(no intervention), on the thread's CPU time (robust to other processes on
a shared machine) and on wall-clock time. Hooks are attached before and removed after each
timed block (not timed).

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
from embodied_steer.steering import add, attach, clamp, rotate  # noqa: E402
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


def side_by_side(conditions: dict[str, list], run: Callable[[], None], policy, *, reps: int, inner: int,
                 warmup: int = 3) -> dict[str, dict[str, float]]:
    """Median time per ``run()`` for each condition, interleaved in shuffled order per repetition.

    Two clocks: the thread's CPU time (``time.thread_time``; torch runs single-threaded on the
    calling thread here, so this is the compute actually spent and is far less sensitive to other
    processes competing for the cores) and wall-clock time.
    """
    cpu: dict[str, list[float]] = {name: [] for name in conditions}
    wall: dict[str, list[float]] = {name: [] for name in conditions}
    for _ in range(warmup):
        run()
    order = list(conditions)
    rng = random.Random(0)
    for _ in range(reps):
        rng.shuffle(order)
        for name in order:
            handle = attach(policy, conditions[name]) if conditions[name] else None
            try:
                run()  # one untimed call with the hooks in place
                c0, t0 = time.thread_time(), time.perf_counter()
                for _ in range(inner):
                    run()
                cpu[name].append((time.thread_time() - c0) / inner)
                wall[name].append((time.perf_counter() - t0) / inner)
            finally:
                if handle is not None:
                    handle.remove()
    base_cpu, base_wall = statistics.median(cpu["none"]), statistics.median(wall["none"])
    return {name: {"cpu_ms": 1e3 * statistics.median(cpu[name]), "cpu_ratio": statistics.median(cpu[name]) / base_cpu,
                   "wall_ms": 1e3 * statistics.median(wall[name]),
                   "wall_ratio": statistics.median(wall[name]) / base_wall, "reps": reps}
            for name in conditions}


def llama_benchmark(reps: int) -> dict:
    policy = TinyLlamaPolicy(layers=8, width=256, mlp=1024, heads=8, vocab=1024, num_bins=256, seed=0)
    ids = torch.randint(4, 700, (1, 128), generator=torch.Generator().manual_seed(0))
    obs = Observation(state=np.zeros(7, np.float32), instruction="pick up the black bowl and place it on the plate " * 2)
    g = torch.Generator().manual_seed(1)
    conditions = {
        "none": [],
        "clamp 1 neuron x 1 layer": clamp_set(policy, "llm.layers", 1, 1),
        "clamp 64 neurons x 1 layer": clamp_set(policy, "llm.layers", 1, 64),
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

    return {"prefill (128 tokens)": side_by_side(conditions, prefill, policy, reps=2 * reps, inner=3),
            "act (prefill + 7 decode steps)": side_by_side(conditions, act, policy, reps=reps, inner=2)}


def pi0_benchmark(reps: int) -> dict:
    from embodied_steer.adapters import tiny

    with tempfile.TemporaryDirectory() as tmp:
        policy = tiny.tiny_pi0(tmp, chunk_size=16, n_action_steps=8, num_steps=10,
                               arch=tiny.TinyArchitecture(depth=4))
        obs = tiny.tiny_observation(seed=0)
        noise = policy.initial_noise(1, torch.Generator().manual_seed(0))
        conditions = {
            "none": [],
            "clamp 64 neurons x 4 VLM layers": clamp_set(policy, "vlm.layers", 4, 64),
            "clamp 64 neurons x 4 expert layers": clamp_set(policy, "expert.layers", 4, 64),
            "clamp 64 neurons x 8 layers (4 VLM + 4 expert)":
                clamp_set(policy, "vlm.layers", 4, 64) + clamp_set(policy, "expert.layers", 4, 64),
            "clamp 64 x 4 expert layers, steps 5-9":
                [clamp(c.modules, c.neurons, 4.0, steps=(5, 10)) for c in clamp_set(policy, "expert.layers", 4, 64)],
        }

        def act():
            policy.act(obs, noise=noise)

        return {"act (1 prefix + 10 flow steps)": side_by_side(conditions, act, policy, reps=reps, inner=2)}


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
    lines = [f"**{title}**", "", "| condition | CPU ms (median) | ratio vs none (CPU) | wall ms (median) | ratio vs none (wall) |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['cpu_ms']:.2f} | {r['cpu_ratio']:.3f}× | {r['wall_ms']:.2f} | {r['wall_ratio']:.3f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=21, help="interleaved repetitions per condition")
    parser.add_argument("--capture-calls", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "load_avg_start": os.getloadavg()}}
    results["llama"] = llama_benchmark(args.reps)
    results["pi0"] = pi0_benchmark(max(5, args.reps // 2))
    results["capture"] = capture_benchmark(args.capture_calls)
    results["machine"]["load_avg_end"] = os.getloadavg()
    for model in ("llama", "pi0"):
        for title, rows in results[model].items():
            print(table(f"{model}: {title}", rows))
            print()
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
