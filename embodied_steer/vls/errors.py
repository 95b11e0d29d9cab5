"""Errors of the reward-program sandbox and the VLM client; all derive from ``SteerError``."""

from __future__ import annotations

from embodied_steer.core.errors import SteerError


class RewardProgramError(SteerError, ValueError):
    """A reward program is invalid, or failed when run (wrong shape, NaN / inf, an exception).

    Attributes:
        stage: the stage function concerned (``"stage_2"``), when known.
        line: the source line concerned, when known.
    """

    def __init__(self, message: str, *, stage: str | None = None, line: int | None = None) -> None:
        prefix = ""
        if stage is not None:
            prefix += stage
        if line is not None:
            prefix += f"{' ' if prefix else ''}(line {line})"
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.stage = stage
        self.line = line
        self.detail = message


class SandboxViolation(RewardProgramError):
    """The program uses a construct the sandbox does not allow (found before anything runs).

    Attributes:
        construct: what was found (``"import"``, ``"attribute '__class__'"``, ``"call to 'eval'"``).
        reason: why it is refused.
    """

    def __init__(self, construct: str, reason: str, *, line: int | None = None, col: int | None = None,
                 stage: str | None = None) -> None:
        where = f"line {line}" if line is not None else "program"
        if line is not None and col is not None:
            where += f", column {col + 1}"
        message = f"sandbox violation at {where}: {construct} — {reason}"
        super().__init__(message, stage=stage)
        self.line = line
        self.col = col
        self.construct = construct
        self.reason = reason


class SandboxLimitExceeded(RewardProgramError):
    """A run of the program went over a time, memory or work limit and was stopped."""


class VLMError(SteerError, RuntimeError):
    """The VLM endpoint could not be reached, timed out, answered with an HTTP error or malformed JSON."""


class NoProgramInResponse(RewardProgramError):
    """A VLM response held no reward program that the sandbox accepts (the previous one is kept)."""
