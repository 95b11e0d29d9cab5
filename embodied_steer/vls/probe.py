"""The probe process: run a reward program once under OS resource limits.

Started by :func:`embodied_steer.vls.sandbox.compile_reward_program` as a short-lived subprocess.
Reads ``{"source": ..., "limits": {...}}`` as JSON on stdin, sets ``RLIMIT_CPU`` and ``RLIMIT_AS``
(after importing torch, on top of what the interpreter already maps), compiles the program with the
probe switched off, runs every stage forward and backward on random inputs of the declared shapes
and prints one JSON line: ``{"ok": true}`` or ``{"ok": false, "kind": "limit"|"error", "error": ...}``.
"""

from __future__ import annotations

import json
import resource
import sys


def _mapped_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    request = json.loads(sys.stdin.read())
    import torch

    from embodied_steer.vls.errors import RewardProgramError, SandboxLimitExceeded
    from embodied_steer.vls.limits import SandboxLimits
    from embodied_steer.vls.sandbox import compile_reward_program

    torch.set_num_threads(1)
    limits = SandboxLimits(**{**request["limits"], "probe": False})
    cpu = int(limits.probe_cpu_s)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    extra = int(limits.probe_memory_mb) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (_mapped_bytes() + extra,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no file may grow

    def report(**fields: object) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    try:
        program = compile_reward_program(request["source"], limits=limits)
        gen = torch.Generator().manual_seed(0)
        keypoints = torch.rand(limits.probe_num_keypoints, 3, generator=gen, dtype=torch.float64) - 0.5
        trajectory = (torch.rand(limits.probe_batch, limits.probe_horizon, 3, generator=gen, dtype=torch.float64)
                      - 0.5).requires_grad_(True)
        for stage in range(program.num_stages()):
            out = program(stage, keypoints, trajectory)
            if out.requires_grad:
                out.sum().backward()
    except SandboxLimitExceeded as exc:
        report(ok=False, kind="limit", error=str(exc))
    except RewardProgramError as exc:
        report(ok=False, kind="error", error=str(exc))
    except MemoryError:
        report(ok=False, kind="limit", error=f"memory limit of {limits.probe_memory_mb} MB exceeded")
    except Exception as exc:  # noqa: BLE001 - report anything else as a failure of the program
        report(ok=False, kind="error", error=f"{type(exc).__name__}: {exc}")
    else:
        report(ok=True)


if __name__ == "__main__":
    main()
