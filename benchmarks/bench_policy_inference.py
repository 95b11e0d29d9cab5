"""Inference speed of the policy adapters: milliseconds per action chunk on this machine.

Times ``policy.generate(n)`` (one chunk for each of ``n`` particles/samples for the same
observation) after warm-up, for the tiny random-init PI0 / PI05 / SmolVLA adapters and, when its
checkpoint exists, the shipped diffusion policy. Prints a markdown table; ``--json`` also writes
the raw numbers.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_policy_inference.py --json outputs/bench_policy.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embodied_steer.adapters.lerobot_batch import OBS_ENV_STATE, OBS_IMAGES_PREFIX, OBS_STATE  # noqa: E402
from embodied_steer.core.policy import SteerablePolicy  # noqa: E402
from embodied_steer.core.types import Observation  # noqa: E402

DIFFUSION_CHECKPOINT = REPO / "checkpoints" / "lift_diffusion"


def observation_for(policy: Any, seed: int = 0) -> Observation:
    """A random observation with the cameras / state a LeRobot-backed adapter declares."""
    rng = np.random.default_rng(seed)
    camera_map = getattr(policy, "camera_map", {})
    images, state, env_state = {}, None, None
    for key, feature in policy.policy.config.input_features.items():
        shape = tuple(feature.shape)
        if key.startswith(OBS_IMAGES_PREFIX) and "empty_camera_" not in key:
            camera = camera_map.get(key, key.removeprefix(OBS_IMAGES_PREFIX))
            images[camera] = rng.integers(0, 256, (shape[1], shape[2], shape[0]), dtype=np.uint8)
        elif key == OBS_STATE:
            state = rng.uniform(-1, 1, shape).astype(np.float32)
        elif key == OBS_ENV_STATE:
            env_state = rng.uniform(-1, 1, shape).astype(np.float32)
    return Observation(images=images, state=state, env_state=env_state, instruction="pick up the black bowl")


def time_chunks(policy: SteerablePolicy, obs: Observation, n: int, repeats: int, warmup: int) -> list[float]:
    """Seconds per ``generate(n)`` call, ``repeats`` times after ``warmup`` untimed calls."""
    policy.reset()
    policy.observe(obs)
    for _ in range(warmup):
        policy.generate(n)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        policy.generate(n)
        times.append(time.perf_counter() - start)
    return times


def build_policies(workdir: Path, chunk_size: int) -> tuple[dict[str, Callable[[], SteerablePolicy]], list[str]]:
    from embodied_steer.adapters import tiny

    builders: dict[str, Callable[[], SteerablePolicy]] = {
        f"tiny {kind}": (lambda kind=kind: tiny.TINY_BUILDERS[kind](workdir / kind, chunk_size=chunk_size))
        for kind in ("pi0", "pi05", "smolvla")
    }
    notes = []
    try:
        from embodied_steer.adapters.lerobot_diffusion import LeRobotDiffusionPolicy
    except ImportError as err:
        notes.append(f"diffusion policy skipped: adapter not importable ({err})")
    else:
        if DIFFUSION_CHECKPOINT.is_dir():
            builders["diffusion (lift)"] = lambda: LeRobotDiffusionPolicy.from_pretrained(DIFFUSION_CHECKPOINT)
        else:
            notes.append(f"diffusion policy skipped: no checkpoint at {DIFFUSION_CHECKPOINT.relative_to(REPO)}")
    return builders, notes


def describe(policy: SteerablePolicy) -> str:
    extra = policy.info.extra
    steps = extra.get("num_steps", extra.get("num_inference_steps", "?"))
    return f"chunk {policy.info.chunk_size}, {steps} steps"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per setting")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="particles/samples per call")
    parser.add_argument("--chunk-size", type=int, default=50, help="chunk size of the tiny VLAs (released: 50)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="also write results to this JSON file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        builders, notes = build_policies(Path(tmp), args.chunk_size)
        for label, build in builders.items():
            policy = build()
            params = sum(p.numel() for p in policy.policy.parameters())
            obs = observation_for(policy)
            for n in args.batch:
                ms = np.asarray(time_chunks(policy, obs, n, args.repeats, args.warmup)) * 1e3
                rows.append({
                    "policy": label, "setup": describe(policy), "params": int(params), "batch": n,
                    "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
                    "repeats": args.repeats,
                })

    lines = [
        f"CPU: {platform.machine()} with {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} thread(s), {args.repeats} repeats after {args.warmup} warm-up calls.",
        "",
        "| policy | setup | params | batch (samples per call) | median ms per call | p90 ms per call | median ms per sample |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['setup']} | {r['params'] / 1e6:.2f} M | {r['batch']} | {r['median_ms']:.1f} "
            f"| {r['p90_ms']:.1f} | {r['median_ms'] / r['batch']:.2f} |"
        )
    lines += [f"\n{note}" for note in notes]
    print("\n".join(lines))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows, "notes": notes}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
