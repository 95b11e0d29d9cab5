"""Cost of the reward-program sandbox at run time: guarded program vs the same code in plain torch.

For the shipped Lift and PickPlaceCan programs, times one reward evaluation with its backward pass
(what a guided sampler does at each denoising step) for a batch of B particles and T = 16 waypoints,
through the sandbox and as the equivalent plain-torch function, side by side in one process on one
thread. Also times compiling a program (static check + rewrite) and the probe subprocess.

    PYTHONPATH=. python benchmarks/bench_reward_program.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embodied_steer.vls.defaults import default_program, default_program_source  # noqa: E402
from embodied_steer.vls.limits import SandboxLimits  # noqa: E402
from embodied_steer.vls.sandbox import compile_reward_program  # noqa: E402


def plain_lift(stage: int, kp: torch.Tensor, tr: torch.Tensor) -> torch.Tensor:
    cube = kp[0]
    if stage == 0:
        return -(torch.linalg.norm(tr[:, -1] - cube, dim=-1) + 0.1 * torch.linalg.norm(tr - cube, dim=-1).mean(1))
    end = tr[:, -1]
    return -(torch.linalg.norm(end[:, :2] - cube[:2], dim=-1) + torch.clamp(kp[1, 2] + 0.15 - end[:, 2], min=0.0))


def plain_can(stage: int, kp: torch.Tensor, tr: torch.Tensor) -> torch.Tensor:
    can, target = kp[0], kp[1]
    end = tr[:, -1]
    if stage == 0:
        return -(torch.linalg.norm(end - can, dim=-1) + 0.1 * torch.linalg.norm(tr - can, dim=-1).mean(1))
    if stage == 1:
        return -(torch.linalg.norm(end[:, :2] - can[:2], dim=-1) + torch.clamp(target[2] + 0.15 - end[:, 2], min=0.0))
    h = torch.linalg.norm(end[:, :2] - target[:2], dim=-1)
    goal = target[2] + 0.06 + 0.09 * torch.clamp(h / 0.1, max=1.0)
    low = torch.clamp(target[2] + 0.15 - tr[:, :, 2], min=0.0).mean(1)
    return -(h + (end[:, 2] - goal).abs() + 0.1 * low * (h > 0.05).float())


def time_per_call(fn, stages: int, kp: torch.Tensor, tr: torch.Tensor, repeats: int) -> float:
    def once() -> None:
        for s in range(stages):
            x = tr.detach().requires_grad_(True)
            torch.autograd.grad(fn(s, kp, x).sum(), x)

    for _ in range(5):
        once()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - start) / (repeats * stages)


def main() -> None:
    torch.set_num_threads(1)
    kp = torch.tensor([[0.05, -0.02, 0.83], [0.1, 0.3, 0.8]])
    print("| program | B | plain torch (ms) | sandboxed (ms) | ratio |")
    print("|---|---|---|---|---|")
    for task, plain in (("Lift", plain_lift), ("PickPlaceCan", plain_can)):
        program = default_program(task)
        for b in (1, 8, 64):
            tr = torch.rand(b, 16, 3, generator=torch.Generator().manual_seed(b)) + torch.tensor([0.0, 0.0, 0.8])
            for s in range(program.num_stages()):  # same values, so the timing compares like with like
                torch.testing.assert_close(program(s, kp, tr), plain(s, kp, tr))
            base = time_per_call(plain, program.num_stages(), kp, tr, 200)
            guarded = time_per_call(program, program.num_stages(), kp, tr, 200)
            print(f"| {task} | {b} | {base * 1e3:.3f} | {guarded * 1e3:.3f} | {guarded / base:.2f}x |")
    source = default_program_source("PickPlaceCan")
    start = time.perf_counter()
    for _ in range(20):
        compile_reward_program(source, limits=SandboxLimits(probe=False))
    static = (time.perf_counter() - start) / 20
    start = time.perf_counter()
    compile_reward_program(source)
    probed = time.perf_counter() - start
    print(f"\ncompile (check + rewrite + load): {static * 1e3:.1f} ms; with the probe subprocess: {probed:.2f} s")


if __name__ == "__main__":
    main()
