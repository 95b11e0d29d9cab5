"""A compiled reward program: one differentiable reward function per task stage.

Build one with :func:`embodied_steer.vls.sandbox.compile_reward_program`; never construct it
directly from untrusted text.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch

from embodied_steer.vls.errors import RewardProgramError, SandboxLimitExceeded
from embodied_steer.vls.limits import SandboxLimits
from embodied_steer.vls.runtime import Guard

#: file name the sandbox compiles programs under (used to find line numbers in tracebacks).
PROGRAM_FILENAME = "<reward-program>"


@dataclass(frozen=True)
class RewardProgram:
    """A reward program accepted by the sandbox.

    Attributes:
        source: the program text as given.
        stage_names: ``("stage_1", "stage_2", ...)`` in order.

    Call it as ``program(stage, keypoints, trajectory)`` where ``stage`` is the **0-based** index
    into :attr:`stage_names` (``0`` runs ``stage_1``).
    """

    source: str
    stage_names: tuple[str, ...]
    limits: SandboxLimits = field(default_factory=SandboxLimits, repr=False, compare=False)
    _functions: tuple[Callable[[torch.Tensor, torch.Tensor], object], ...] = field(
        default=(), repr=False, compare=False)
    _guard: Guard | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self._functions) != len(self.stage_names) or self._guard is None:
            raise RewardProgramError(
                "RewardProgram is built by embodied_steer.vls.sandbox.compile_reward_program, not directly")

    def __reduce__(self):  # pickling (e.g. to ray workers) re-compiles the source there
        return (_rebuild, (self.source, self.limits))

    def num_stages(self) -> int:
        """How many stages (``stage_k`` functions) the program has."""
        return len(self.stage_names)

    def __call__(self, stage: int, keypoints: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
        """Reward of each trajectory in a batch for one stage.

        Args:
            stage: 0-based stage index (``0`` → ``stage_1``).
            keypoints: ``(K, 3)`` keypoint positions, metres, world frame.
            trajectory: ``(B, T, 3)`` end-effector positions, metres, world frame.

        Returns:
            ``(B,)`` rewards (higher is better), differentiable with respect to ``trajectory``.

        Raises:
            RewardProgramError: naming the stage and the problem when the inputs are malformed, the
                program raises, returns something other than a finite ``(B,)`` floating tensor, or
                goes over a sandbox limit (:class:`SandboxLimitExceeded`).
        """
        if isinstance(stage, bool) or not isinstance(stage, int):
            raise RewardProgramError(f"stage must be an int index, got {type(stage).__name__}")
        if not 0 <= stage < len(self.stage_names):
            raise RewardProgramError(
                f"stage index {stage} out of range: the program has {len(self.stage_names)} stage(s), "
                f"indices 0..{len(self.stage_names) - 1} for {', '.join(self.stage_names)}")
        name = self.stage_names[stage]
        _check_inputs(name, keypoints, trajectory)
        guard = self._guard
        assert guard is not None
        try:
            with guard.session(device=trajectory.device, dtype=trajectory.dtype):
                out = self._functions[stage](keypoints, trajectory)
        except SandboxLimitExceeded as exc:
            raise SandboxLimitExceeded(exc.detail, stage=name, line=_program_line(exc)) from None
        except RewardProgramError as exc:
            raise RewardProgramError(exc.detail, stage=name, line=exc.line or _program_line(exc)) from None
        except (MemoryError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "allocate memory" not in str(exc):
                raise RewardProgramError(f"{type(exc).__name__}: {exc}", stage=name, line=_program_line(exc)) from None
            raise SandboxLimitExceeded(f"out of memory: {exc}", stage=name, line=_program_line(exc)) from None
        except Exception as exc:  # noqa: BLE001 - any failure of untrusted code becomes one clear error
            raise RewardProgramError(f"{type(exc).__name__}: {exc}", stage=name, line=_program_line(exc)) from None
        batch = trajectory.shape[0]
        if not isinstance(out, torch.Tensor):
            raise RewardProgramError(f"returned {type(out).__name__}, expected a tensor of shape ({batch},)", stage=name)
        if tuple(out.shape) != (batch,):
            raise RewardProgramError(
                f"returned shape {tuple(out.shape)}, expected ({batch},) — one reward per trajectory", stage=name)
        if not out.is_floating_point():
            raise RewardProgramError(f"returned dtype {out.dtype}, expected a floating-point tensor", stage=name)
        if not bool(torch.isfinite(out.detach()).all()):
            bad = int((~torch.isfinite(out.detach())).sum())
            raise RewardProgramError(f"returned {bad} non-finite value(s) (NaN or inf) of {batch}", stage=name)
        return out


def _check_inputs(stage: str, keypoints: torch.Tensor, trajectory: torch.Tensor) -> None:
    for what, value, ndim, shape in (("keypoints", keypoints, 2, "(K, 3)"), ("trajectory", trajectory, 3, "(B, T, 3)")):
        if not isinstance(value, torch.Tensor):
            raise RewardProgramError(f"{what} must be a torch.Tensor {shape}, got {type(value).__name__}", stage=stage)
        if value.ndim != ndim or value.shape[-1] != 3:
            raise RewardProgramError(f"{what} must have shape {shape}, got {tuple(value.shape)}", stage=stage)
        if not value.is_floating_point():
            raise RewardProgramError(f"{what} must be floating point, got {value.dtype}", stage=stage)
        if not bool(torch.isfinite(value.detach()).all()):
            raise RewardProgramError(f"{what} contains NaN or inf", stage=stage)
    if keypoints.shape[0] == 0 or trajectory.shape[0] == 0 or trajectory.shape[1] == 0:
        raise RewardProgramError(
            f"empty input: keypoints {tuple(keypoints.shape)}, trajectory {tuple(trajectory.shape)}", stage=stage)
    if keypoints.device != trajectory.device:
        raise RewardProgramError(
            f"keypoints are on {keypoints.device} but the trajectory is on {trajectory.device}", stage=stage)


def _program_line(exc: BaseException) -> int | None:
    """The innermost line of the reward program in ``exc``'s traceback."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == PROGRAM_FILENAME:
            line = frame.lineno
    return line


def _rebuild(source: str, limits: SandboxLimits) -> RewardProgram:
    """Unpickle: compile ``source`` again (static check and guards; the probe already passed)."""
    from dataclasses import replace

    from embodied_steer.vls.sandbox import compile_reward_program

    return compile_reward_program(source, limits=replace(limits, probe=False))
