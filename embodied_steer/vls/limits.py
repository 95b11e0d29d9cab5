"""Resource limits of the reward-program sandbox (static and run-time)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxLimits:
    """Bounds applied to every reward program.

    Static (checked on the source before anything runs):
        max_source_chars: longest accepted program text.
        max_ast_nodes: largest accepted syntax tree.
        max_ast_depth: deepest accepted nesting of syntax nodes (the checker and CPython's compiler
            recurse over the tree; ``a + a + ... + a`` with thousands of terms would exhaust the stack).
        max_stages: most ``stage_k`` functions.
        max_loop_iterations: most iterations of one ``for i in range(...)`` loop.
        max_total_iterations: most iterations of nested loops together (product along a nest).
        max_literal_exponent: largest ``|e|`` of a literal exponent in ``x ** e``.
        max_string_chars: longest string literal (strings are only keyword-like arguments, e.g.
            ``p="fro"``).

    Run time, per call of one stage (in-process, enforced by the guarded operations):
        max_tensor_numel: most elements of any one tensor the program makes (checked *before*
            allocating where the size is known in advance: creation, broadcasting, matmul).
        max_total_numel: most elements of all tensors the program makes in one call.
        max_work: element-operations budget of one call (inputs + outputs of every operation,
            ``n·k·m`` for products).
        call_timeout_s: wall-clock budget of one call; checked at every operation.
        max_int_bits: largest Python integer an arithmetic operation may produce.

    Probe (a first run in a short-lived subprocess at compile time, on dummy inputs):
        probe: run the probe at all (default programs shipped with the package skip it).
        probe_timeout_s: wall-clock limit of the probe process (includes importing torch).
        probe_cpu_s: ``RLIMIT_CPU`` of the probe process.
        probe_memory_mb: address space the probe may add on top of what it has after
            importing torch (``RLIMIT_AS``).
        probe_num_keypoints, probe_batch, probe_horizon: the dummy input shapes
            (keypoints ``(K, 3)``, trajectory ``(B, T, 3)``).
    """

    max_source_chars: int = 20_000
    max_ast_nodes: int = 5_000
    max_ast_depth: int = 64
    max_stages: int = 8
    max_loop_iterations: int = 64
    max_total_iterations: int = 1_024
    max_literal_exponent: float = 16.0
    max_string_chars: int = 32

    max_tensor_numel: int = 1 << 22
    max_total_numel: int = 1 << 25
    max_work: int = 1 << 28
    call_timeout_s: float = 5.0
    max_int_bits: int = 256

    probe: bool = True
    probe_timeout_s: float = 60.0
    probe_cpu_s: int = 20
    probe_memory_mb: int = 1024
    probe_num_keypoints: int = 16
    probe_batch: int = 4
    probe_horizon: int = 16

    def __post_init__(self) -> None:
        for name in ("max_source_chars", "max_ast_nodes", "max_ast_depth", "max_stages", "max_loop_iterations",
                     "max_total_iterations", "max_string_chars", "max_tensor_numel", "max_total_numel",
                     "max_work", "max_int_bits", "probe_cpu_s", "probe_memory_mb",
                     "probe_num_keypoints", "probe_batch", "probe_horizon"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)}")
        if self.call_timeout_s <= 0 or self.probe_timeout_s <= 0:
            raise ValueError("SandboxLimits time limits must be positive")
